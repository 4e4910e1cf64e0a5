"""``hydra/sweeper=optuna``: a search over a run's own metric, driven by Optuna's ask-and-tell API.

Hydra's own ``hydra-optuna-sweeper`` pins ``optuna<3``; this sweeper is the same idea on current Optuna
(>= 4) through Hydra's Sweeper plugin API: the search space is Hydra's sweep grammar (``choice``,
``range``, ``interval``, ``tag(log, interval(...))``, ``tag(int, interval(...))``) given in ``hydra.sweeper.params`` or on the
command line, each batch of ``n_jobs`` trials goes to the configured launcher (basic, Ray, Slurm), and
the objective is the last logged value of any metric in the job's ``metrics.jsonl``. The study lives
in ``storage`` (default: ``<sweep dir>/optuna.db``, SQLite), so the jobs, wherever they run, report
their intermediate evaluations to it and the pruner can stop the unpromising ones early.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from alignkit import hookimpl
from alignkit.errors import UserError

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")


class SearchSpaceError(UserError):
    """A search space, objective or sweeper setting that cannot be searched."""


def is_optuna_sweeper(sweeper_cfg) -> bool:
    target = (sweeper_cfg or {}).get("_target_", "") if hasattr(sweeper_cfg, "get") else ""
    return str(target).endswith("OptunaSweeper")


def storage_url(storage: str | None, sweep_dir: str) -> str:
    return storage or f"sqlite:///{Path(sweep_dir).absolute() / 'optuna.db'}"


def make_pruner(name: str | None, startup_trials: int, warmup_steps: int):
    import optuna

    if not name or name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)


def distribution(override: Override):
    """The Optuna distribution of one swept override: ``choice`` and ``range`` are categorical, ``interval``
a float in [low, high] (an integer with ``tag(int, ...)``, log-scaled with ``tag(log, ...)``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=lambda v: v)))
    if isinstance(value, RangeSweep):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=lambda v: v)))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SearchSpaceError(f"{key}={override.input_line.split('=', 1)[1] if override.input_line else value}: "
                           "not a search space", "use choice(...), range(...), interval(a, b), "
                           "tag(log, interval(a, b)) or tag(int, interval(a, b))")


def search_space(arguments: Sequence[str], params: dict | None) -> tuple[list[str], dict[str, Any]]:
    """``(fixed overrides, {key: distribution})`` from ``hydra.sweeper.params`` and the command line
    (the command line wins for a key given in both)."""
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    fixed: dict[str, str] = {}
    space: dict[str, Any] = {}
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        fixed.pop(key, None)
        space.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    if not space:
        raise SearchSpaceError("the search has no parameter to search",
                               "give hydra.sweeper.params or a swept override, e.g. 'algo.beta=interval(0.01, 1)'")
    return list(fixed.values()), space


def check_settings(objective: Any = "eval/x", direction: Any = "maximize", sampler: Any = "tpe", n_trials: Any = 1,
                   n_jobs: Any = 1, pruner: Any = "median") -> None:
    """Raise :class:`SearchSpaceError` for a sweeper setting that cannot work."""
    if "/" not in str(objective):
        raise SearchSpaceError(f"hydra.sweeper.objective={objective}: not a metric name",
                               "give a metric as logged in metrics.jsonl, e.g. eval/preference_accuracy")
    if direction not in ("minimize", "maximize"):
        raise SearchSpaceError(f"hydra.sweeper.direction={direction} is not minimize or maximize",
                               "set hydra.sweeper.direction=maximize (or minimize)")
    if sampler not in SAMPLERS:
        raise SearchSpaceError(f"hydra.sweeper.sampler={sampler} is unknown", f"choose one of {', '.join(SAMPLERS)}")
    if pruner not in (*PRUNERS, None):
        raise SearchSpaceError(f"hydra.sweeper.pruner={pruner} is unknown", f"choose one of {', '.join(PRUNERS)}")
    for key, n in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if not str(n).isdigit() or int(n) < 1:
            raise SearchSpaceError(f"hydra.sweeper.{key}={n} is not a positive integer", f"set hydra.sweeper.{key} >= 1")


def check_command_line(argv: Sequence[str]) -> None:
    """The settings ``hydra.sweeper.<key>=<value>`` of an ``hydra/sweeper=optuna`` command line, checked
    before Hydra starts (so a typo is one line, and no sweep folder is made)."""
    if "hydra/sweeper=optuna" not in argv:
        return
    names = ("objective", "direction", "sampler", "n_trials", "n_jobs", "pruner")
    given = {a.split("=", 1)[0][len("hydra.sweeper."):]: a.split("=", 1)[1] for a in argv
             if a.startswith("hydra.sweeper.") and "=" in a}
    check_settings(**{k: (None if v == "null" else v) for k, v in given.items() if k in names})


def _format(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class OptunaSweeper(Sweeper):
    """Hydra Sweeper: ``n_trials`` trials, ``n_jobs`` at a time, each one job of the launcher."""

    def __init__(self, objective: str, direction: str = "maximize", n_trials: int = 6, n_jobs: int = 1,
                 seed: int = 0, sampler: str = "tpe", n_startup_trials: int = 3, pruner: str | None = "median",
                 pruner_startup_trials: int = 2, pruner_warmup_steps: int = 0, study_name: str = "alignkit",
                 storage: str | None = None, params: dict | None = None) -> None:
        check_settings(objective=objective, direction=direction, sampler=sampler, n_trials=n_trials, n_jobs=n_jobs,
                       pruner=pruner)
        self.objective, self.direction = str(objective), direction
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.sampler, self.n_startup_trials = sampler, n_startup_trials
        self.pruner = None if pruner in (None, "none") else pruner
        self.pruner_startup_trials, self.pruner_warmup_steps = pruner_startup_trials, pruner_warmup_steps
        self.study_name, self.storage = study_name, storage
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _sampler(self):
        import optuna

        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.n_startup_trials)

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None
        fixed, space = search_space(arguments, self.params)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = optuna.create_study(
            study_name=self.study_name, storage=storage_url(self.storage, str(sweep_dir)), direction=self.direction,
            sampler=self._sampler(), pruner=make_pruner(self.pruner, self.pruner_startup_trials,
                                                        self.pruner_warmup_steps), load_if_exists=True)
        done = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [tuple(fixed + [f"{k}={_format(t.params[k])}" for k in space]) for t in trials]
            self.validate_batch_is_legal(batch)
            # job numbers are trial numbers: a job finds its trial in the study by its hydra.job.num
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns):
                self._tell(study, trial, ret.return_value)
            done += len(trials)
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if finished:
            log.info("best trial %d: %s = %s with %s", study.best_trial.number, self.objective,
                     study.best_value, study.best_params)
        return study

    def _tell(self, study, trial, record: dict | None) -> None:
        import optuna

        state = optuna.trial.TrialState
        status = (record or {}).get("status", "failed")
        if status == "pruned":
            study.tell(trial, state=state.PRUNED)
            return
        value = (record or {}).get("metrics", {}).get(self.objective)
        if status != "ok" or not isinstance(value, (int, float)) or not math.isfinite(value):
            if status == "ok":
                log.warning("trial %d logged no finite %s; counted as failed", trial.number, self.objective)
            study.tell(trial, state=state.FAIL)
            return
        study.tell(trial, value)


class TrialReporter:
    """An alignkit plugin, registered inside a search's job: each evaluation reports the objective to the
    job's trial; when the pruner says so, the job stops with ``optuna.TrialPruned``."""

    def __init__(self, trial, objective: str, max_steps: int):
        self.trial, self.objective, self.max_steps = trial, objective, max_steps

    @classmethod
    def for_job(cls, sweeper_cfg, sweep_dir: str, job_num: int, max_steps: int) -> "TrialReporter":
        import optuna

        storage = optuna.storages.RDBStorage(storage_url(sweeper_cfg.get("storage"), sweep_dir))
        name = sweeper_cfg.get("study_name", "alignkit")
        study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(
            sweeper_cfg.get("pruner"), sweeper_cfg.get("pruner_startup_trials", 2),
            sweeper_cfg.get("pruner_warmup_steps", 0)))
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), job_num)
        return cls(optuna.trial.Trial(study, trial_id), str(sweeper_cfg.objective), max_steps)

    @hookimpl
    def alignkit_on_evaluate(self, run, step: int, metrics: dict[str, float]) -> None:
        import optuna

        value = metrics.get(self.objective)
        if value is None or not (0 < step < self.max_steps) or run.accelerator.num_processes > 1:
            return  # the final evaluation is the trial's value; multi-process jobs are not pruned
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: {self.objective} = {value:.4g}")
