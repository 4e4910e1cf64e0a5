"""Experiment trackers of the ``logger`` group: MLflow and Weights & Biases, through accelerate.

``logger.mlflow=true`` / ``logger.wandb=true`` (or ``logger=mlflow`` / ``logger=wandb``) open
accelerate's :class:`~accelerate.tracking.MLflowTracker` / :class:`~accelerate.tracking.WandBTracker`
next to ``metrics.jsonl``. They are driven by :class:`~alignkit.trainer.logger.MetricsLogger`, which
exists on process 0 only, so the trackers are created directly rather than through
``Accelerator(log_with=...)`` (which every process would build). Each tracker run gets the resolved
run config (MLflow: flattened ``trainer.lr``-style params; W&B: the nested config) and every
finite metric the run logs, at the same step as ``metrics.jsonl``.

* MLflow: ``logger.mlflow_tracking_uri`` (a server URL, ``sqlite:///...`` with the full ``mlflow``
  package, ...); unset, ``$MLFLOW_TRACKING_URI``; unset too, a file store in ``<run>/mlruns``
  (MLflow 3 keeps file stores in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE=true``, which
  is set for this local default). The experiment is ``logger.project``.
* W&B: project ``logger.project``, mode ``logger.wandb_mode`` (else ``$WANDB_MODE``, else online);
  local files under ``$WANDB_DIR`` when set, else in the run folder (``<run>/wandb/``).

The tracker runs' ids are kept in ``<run>/trackers.json``; a resumed run continues the same
tracker runs.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from alignkit.errors import UserError

log = logging.getLogger("alignkit")

__all__ = ["open_trackers", "flatten_config", "IDS_FILE"]

#: tracker run ids of a run folder, so a resumed run continues them
IDS_FILE = "trackers.json"


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1e-3}, "data": {"sources": [{"path": "a"}]}}`` ->
    ``{"trainer.lr": 1e-3, "data.sources.0.path": "a"}`` (None becomes ``"null"``)."""
    out: dict[str, Any] = {}
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        return {prefix: "null" if node is None else node}
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)) and value:
            out.update(flatten_config(value, name))
        else:
            out[name] = "null" if value is None else value if not isinstance(value, (dict, list)) else str(value)
    return out


class _Trackers:
    """The open trackers of one run: ``log(step, metrics)`` and ``close()``."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def log(self, step: int, metrics: dict[str, float]) -> None:
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        if finite:
            for t in self.trackers:
                t.log(finite, step=step)

    def close(self) -> None:
        for t in self.trackers:
            try:
                t.finish()
            except Exception as exc:  # noqa: BLE001 - the run's own outputs are written; say so and go on
                log.warning("could not close the %s run: %s", t.name, exc)
        self.trackers = []


def _start_failed(name: str, exc: Exception, fix: str) -> UserError:
    return UserError(f"could not start the {name} run ({' '.join(str(exc).split())[:300]})", fix)


def _mlflow(run_dir: Path, cfg: Any, config: dict, run_name: str, run_id: str | None):
    import mlflow
    from accelerate.tracking import MLflowTracker

    uri = cfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (run_dir / "mlruns").resolve().as_uri()
    mlflow.set_tracking_uri(uri)
    tracker = MLflowTracker(experiment_name=cfg.project, run_id=run_id, run_name=run_name,
                            nested_run=mlflow.active_run() is not None)
    try:
        tracker.start()
        if run_id is None:  # a resumed run already holds its params (MLflow params cannot change)
            tracker.store_init_configuration(flatten_config(config))
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad URI, ...
        if mlflow.active_run() is not None:
            mlflow.end_run("FAILED")
        raise _start_failed("MLflow", exc, f"check logger.mlflow_tracking_uri ({uri})") from exc
    return tracker, tracker.active_run.info.run_id


def _wandb(run_dir: Path, cfg: Any, config: dict, run_name: str, run_id: str | None):
    from accelerate.tracking import WandBTracker

    kwargs: dict[str, Any] = {"name": run_name}
    if cfg.wandb_mode:
        kwargs["mode"] = cfg.wandb_mode
    if not os.environ.get("WANDB_DIR"):
        kwargs["dir"] = str(run_dir)
    if run_id is not None:
        kwargs.update(id=run_id, resume="allow")
    tracker = WandBTracker(cfg.project, **kwargs)
    try:
        tracker.start()
        tracker.store_init_configuration(config)
    except Exception as exc:  # noqa: BLE001 - not logged in, no network, ...
        if getattr(tracker, "run", None) is not None:
            tracker.run.finish(exit_code=1)
        raise _start_failed("W&B", exc, "run `wandb login`, or set logger.wandb_mode=offline") from exc
    return tracker, tracker.run.id


def open_trackers(run_dir: Path, cfg: Any, run_config: dict | None) -> _Trackers | None:
    """The trackers ``cfg`` (``logger``) asks for, started, with ``run_config`` (a plain dict) stored;
    None when none is enabled."""
    wanted = [name for name in ("mlflow", "wandb") if getattr(cfg, name, False)]
    if not wanted:
        return None
    ids_path = Path(run_dir) / IDS_FILE
    ids = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
    run_name = cfg.run_name or Path(run_dir).resolve().name
    opened = []
    try:
        for name in wanted:
            tracker, ids[name] = {"mlflow": _mlflow, "wandb": _wandb}[name](
                Path(run_dir), cfg, run_config or {}, run_name, ids.get(name))
            opened.append(tracker)
    except BaseException:
        _Trackers(opened).close()
        raise
    ids_path.write_text(json.dumps(ids, indent=2) + "\n")
    return _Trackers(opened)
