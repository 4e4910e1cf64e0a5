"""Multi-stage pipelines: one command runs several training jobs in order.

A run config with a non-empty ``stages`` list (set by an experiment such as
``experiment=instructgpt``) is a pipeline; the CLI hands it to :func:`run_pipeline`.
Each stage is a mapping::

    - name: rm                      # folder <run>/<i>-<name>/ (i from 1)
      overrides: [algo=rm, trainer.max_steps=200]   # Hydra overrides of this stage
      inputs:                       # override key -> earlier stage whose final/ it gets
        model.path: sft

A stage's config is composed (:func:`alignkit.config.compose.compose_config`) from the stage's
overrides, then the command line's (except ``experiment=``), then its ``inputs``; a later
override of the same key replaces an earlier one. So the command line applies to every
stage: ``alignkit train experiment=instructgpt model=tiny trainer.max_steps=5`` shortens
all three. An ``inputs`` entry ``model.path: sft`` becomes
``model.source=hf model.path=<run>/1-sft/final`` (the model is loaded from that folder);
any other key (e.g. ``algo.reward.model_path: rm``) is set to the folder as is.

A stage whose ``final/`` already exists is skipped, so a failed pipeline resumes where
it stopped when re-run with the same ``trainer.run_dir``. ``pipeline.json`` in the run
folder lists each stage's folder and last metrics.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("alignkit")

__all__ = ["run_pipeline", "stage_overrides"]


def _cli_overrides() -> list[str]:
    """The overrides given on the command line, when running under ``hydra.main``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not under Hydra
        pass
    return []


def _shared(overrides: Sequence[str]) -> list[str]:
    """Command-line overrides that apply to every stage (all but the experiment, the
    stage list and the run folder, which the pipeline sets per stage)."""
    out = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in ("experiment", "stages", "trainer.run_dir") or key.startswith(("stages.", "hydra")):
            continue
        out.append(o)
    return out


def stage_overrides(stage: Any, shared: Sequence[str], finals: dict[str, Path], run_dir: Path) -> list[str]:
    """Hydra overrides of one stage (see the module docstring)."""
    name = str(stage["name"])
    merged: dict[str, str] = {}  # key -> override; a later one of the same key wins

    def put(o: str) -> None:
        key = o.split("=", 1)[0].lstrip("+~")
        merged.pop(key, None)
        merged[key] = o

    for o in [*(stage.get("overrides") or []), *shared]:
        put(str(o))
    for key, src in (stage.get("inputs") or {}).items():
        if src not in finals:
            raise ValueError(f"pipeline stage {name!r}: input {key}={src!r} names no earlier stage "
                             f"(earlier: {', '.join(finals) or 'none'})")
        if key == "model.path":
            put("model.source=hf")
        put(f"{key}={finals[src]}")
    put(f"trainer.run_dir={run_dir}")
    return list(merged.values())


def run_pipeline(cfg: DictConfig, run_dir: str | Path | None = None, overrides: Sequence[str] | None = None,
                 registry: Any = None) -> dict:
    """Run ``cfg.stages`` in order under ``run_dir`` (default ``cfg.trainer.run_dir`` or
    ``<trainer.output_dir>/pipeline``). ``overrides``: the overrides shared by every stage
    (default: the command line's). Returns ``{stage name: {"dir", "metrics"}}``."""
    from alignkit.config.compose import compose_config
    from alignkit.registry import registry_for
    from alignkit.trainer import train

    stages = list(OmegaConf.to_container(cfg.stages, resolve=True))
    if not stages:
        raise ValueError("run_pipeline needs a config with a non-empty 'stages' list")
    names = [str(s.get("name", "")) for s in stages]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"pipeline stages need distinct non-empty names, got {names}")
    root = Path(run_dir or cfg.trainer.run_dir or Path(cfg.trainer.output_dir) / "pipeline")
    root.mkdir(parents=True, exist_ok=True)
    shared = _shared(overrides if overrides is not None else _cli_overrides())
    registry = registry or registry_for(disabled=cfg.plugins.disable)
    finals: dict[str, Path] = {}
    summary: dict[str, dict] = {}
    for i, stage in enumerate(stages, 1):
        name = str(stage["name"])
        stage_dir = (root / f"{i}-{name}").resolve()
        final = stage_dir / "final"
        if final.is_dir():
            log.info("pipeline: stage %d/%d %s already done (%s), skipping", i, len(stages), name, final)
            metrics: dict = {}
        else:
            ov = stage_overrides(stage, shared, finals, stage_dir)
            log.info("pipeline: stage %d/%d %s: %s", i, len(stages), name, " ".join(ov))
            stage_cfg = compose_config(ov, registry)
            metrics = train(stage_cfg, registry=registry).metrics
        finals[name] = final
        summary[name] = {"dir": str(stage_dir), "metrics": metrics}
        (root / "pipeline.json").write_text(json.dumps(summary, indent=2))
    print(f"\npipeline folder: {root}\n" + "\n".join(
        f"  {n}: {s['dir']}/final" for n, s in summary.items()), flush=True)
    return summary
