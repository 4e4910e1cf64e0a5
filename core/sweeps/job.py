"""One job of a multirun, whichever launcher runs it (in this process, a Ray worker or a Slurm node).

:func:`run_sweep_job` keeps alignkit's guarantees per job: the job trains in its own run folder (Hydra's
job folder, ``<sweep dir>/<job number>``) with ``trainer.resume=auto``, so a job that Slurm requeues or
Ray retries continues from its newest checkpoint; a failure is written to the job's ``job.json`` as one
line (the traceback goes to the job's log) and does not stop the other jobs; during a search the job
reports its intermediate evaluations to the study, which may prune it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from alignkit.sweeps.summary import JOB_FILE, final_metrics

log = logging.getLogger(__name__)


def one_line_error(exc: BaseException) -> str:
    """``alignkit: <what>; <fix>`` for a user error, ``<Type>: <message>`` for anything else, on one line."""
    from alignkit.errors import UserError, format_user_error
    from alignkit.registry import PluginError, UnknownNameError

    err: BaseException | None = exc
    while err is not None and not isinstance(err, (UserError, PluginError, UnknownNameError)):
        err = err.__cause__
    if err is not None:
        return format_user_error(err)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_pruned(exc: BaseException) -> bool:
    return type(exc).__name__ == "TrialPruned"


def write_job_file(run_dir: Path, record: dict[str, Any]) -> None:
    path = Path(run_dir) / JOB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


#: why a job of this process was interrupted (a signal): the later jobs of the sweep are not started
_interrupted: str | None = None


def run_sweep_job(cfg, overrides: list[str], train_fn: Callable[[Any, Any], Any]) -> dict[str, Any]:
    """Run ``train_fn(cfg, registry)`` as job ``hydra.job.num`` of a multirun and return its record
    (``{"job", "status", "seconds", "error", "overrides", "metrics"}``, also written to ``job.json``).
    An interruption (Ctrl-C, SIGTERM: the job saves a checkpoint) fails the job, and the later jobs of
    this process are reported as not started; a second Ctrl-C stops at once."""
    global _interrupted
    from hydra.core.hydra_config import HydraConfig

    from alignkit.config.compose import validate
    from alignkit.trainer.loop import TrainingInterrupted

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    _export_torch_distributed()
    main = int(os.environ.get("RANK", "0")) == 0
    record: dict[str, Any] = {"job": int(hc.job.num), "status": "ok", "seconds": 0.0, "error": "",
                              "overrides": list(overrides)}
    t0 = time.time()
    if _interrupted is not None:  # Ctrl-C / SIGTERM stopped an earlier job of this process
        record.update(status="failed", error=f"not started: the sweep was interrupted ({_interrupted})")
        return _finish(record, t0, run_dir, main)
    try:
        validate(cfg)
        if not cfg.trainer.run_dir:
            cfg.trainer.run_dir = str(run_dir)
            if not cfg.stages and not cfg.trainer.resume:
                cfg.trainer.resume = "auto"  # a requeued / retried job continues from its newest checkpoint
        registry = _registry(cfg)
        with _pruning(cfg, hc, registry):
            train_fn(cfg, registry)
    except BaseException as exc:  # noqa: BLE001 - a job's failure is reported, the sweep goes on
        record["status"] = "pruned" if _is_pruned(exc) else "failed"
        record["error"] = "" if _is_pruned(exc) else one_line_error(exc)
        if record["status"] == "failed":  # a user error is its one line; a bug keeps its traceback in the log
            bug = not record["error"].startswith("alignkit: ")
            log.error("job %d failed: %s", record["job"], record["error"], exc_info=exc if bug else None)
        if isinstance(exc, TrainingInterrupted):  # the job saved a checkpoint; the jobs after it do not start
            _interrupted = record["error"].removeprefix("alignkit: ").split(";")[0]
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            _finish(record, t0, run_dir, main)
            raise
    return _finish(record, t0, run_dir, main)


def _finish(record: dict[str, Any], t0: float, run_dir: Path, main: bool) -> dict[str, Any]:
    record["seconds"] = time.time() - t0
    if main:
        write_job_file(run_dir, record)
    record["metrics"] = final_metrics(run_dir)
    return record


def _export_torch_distributed() -> None:
    """A submitit job of several tasks (``tasks_per_node`` > 1 or ``nodes`` > 1) runs one process per
    task: export the variables torchrun would set (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...), so
    the tasks train one data-parallel run, as under ``torchrun``."""
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _registry(cfg):
    from alignkit.registry import registry_for

    return registry_for(disabled=cfg.plugins.disable)


@contextlib.contextmanager
def _pruning(cfg, hydra_cfg, registry):
    """During an Optuna search (``hydra/sweeper=optuna``), report each evaluation of the objective to the
    study and stop the job when its pruner says so; otherwise nothing."""
    from alignkit.sweeps.optuna_sweeper import TrialReporter, is_optuna_sweeper

    sweeper = hydra_cfg.sweeper
    if not is_optuna_sweeper(sweeper) or not sweeper.get("pruner"):
        yield
        return
    reporter = TrialReporter.for_job(sweeper, str(hydra_cfg.sweep.dir), int(hydra_cfg.job.num), cfg.trainer.max_steps)
    registry.pm.register(reporter)
    try:
        yield
    finally:
        registry.pm.unregister(reporter)
