"""``hydra/launcher=ray``: each job of a multirun is a Ray task, on a local Ray cluster or a running one.

Hydra's ``hydra-ray-launcher`` pins ``cloudpickle<3`` (a downgrade of the cloudpickle that Ray,
joblib and MLflow use) and always installs ``boto3`` and ``ray[default]`` for its AWS launcher; this
launcher is the same mechanism (Hydra's Launcher plugin API, ``run_job`` inside a ``ray.remote`` task)
on plain ``ray``. A task is retried ``max_retries`` times when its worker dies; the retried job
continues from its newest checkpoint (sweep jobs run with ``trainer.resume=auto``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def _run_job_remote(hydra_context, task_function, sweep_config: DictConfig, singleton_state: dict) -> JobReturn:
    """The Ray task: one Hydra job in the worker's process (Hydra's singletons restored first)."""
    setup_globals()
    Singleton.set_state(singleton_state)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):
    """``address``: a running cluster (``ray://host:10001`` or ``auto``), or null for a local cluster
    started here with ``init`` (e.g. ``num_cpus``); ``remote``: each task's ``ray.remote`` options
    (``num_cpus``, ``num_gpus``, ``max_retries``)."""

    def __init__(self, address: str | None = None, init: dict | None = None, remote: dict | None = None) -> None:
        self.address = address
        self.init = dict(init or {})
        self.remote = dict(remote or {})
        self.config: DictConfig | None = None
        self.hydra_context = None
        self.task_function = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            init = OmegaConf.to_container(OmegaConf.create(self.init), resolve=True)
            ray.init(address=self.address, **init)
        remote = ray.remote(**(OmegaConf.to_container(OmegaConf.create(self.remote), resolve=True) or {}))(
            _run_job_remote) if self.remote else ray.remote(_run_job_remote)
        log.info("Launching %d jobs on Ray (%s)", len(job_overrides), self.address or "local cluster")
        refs, configs = [], []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):  # an absolute sweep folder: the same folder whatever the worker's cwd
                sweep_config.hydra.sweep.dir = str(Path(str(sweep_config.hydra.sweep.dir)).absolute())
                sweep_config.hydra.job.id = f"ray_{idx}"
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
            refs.append(remote.remote(self.hydra_context, self.task_function, sweep_config, Singleton.get_state()))
        return [self._result(ray, ref, cfg) for ref, cfg in zip(refs, configs)]

    @staticmethod
    def _result(ray, ref, sweep_config: DictConfig) -> JobReturn:
        """The job's JobReturn; a task whose worker died (after its retries) becomes a failed job, recorded
        in its folder's ``job.json`` so the sweep summary reports it, and the other jobs go on."""
        try:
            return ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
            from alignkit.sweeps.job import one_line_error, write_job_file
            from alignkit.sweeps.summary import JOB_FILE

            job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
            record = {"job": int(sweep_config.hydra.job.num), "status": "failed", "seconds": 0.0,
                      "error": one_line_error(exc), "overrides": list(sweep_config.hydra.overrides.task)}
            if not (job_dir / JOB_FILE).is_file():
                write_job_file(job_dir, record)
            ret = JobReturn(overrides=list(sweep_config.hydra.overrides.task), cfg=sweep_config,
                            hydra_cfg=sweep_config, working_dir=str(job_dir), task_name="")
            ret.return_value = {**record, "metrics": {}}  # a completed Hydra job: the sweep goes on
            return ret
