"""The ``alignkit`` command line."""
from __future__ import annotations

import argparse
import sys

HELP = """\
alignkit: align language models with human preferences.

commands:
  train [overrides ...]   run a training job composed by Hydra from conf/ (the default: DPO with a tiny model
                          on the bundled HH-RLHF sample, a few minutes on a laptop CPU)
  list                    algorithms (and the plugin providing each), model presets, data presets
  data <step> [overrides] make and curate data with local models: self-instruct, score, select, pairs, dedup,
                          mix (`alignkit data` lists the steps)
  bench [op ...]          time alignkit's ops against eager PyTorch (and TRL / Liger when installed)
  profile [overrides ...] a few training steps under torch.profiler: Chrome trace + top ops

examples:
  alignkit train
  alignkit train algo=sft trainer.max_steps=200
  alignkit train algo=dpo algo.loss_type=ipo algo.beta=0.5
  alignkit train algo=dpo model=smollm2-135m data=hh-rlhf trainer.lr=5e-7
  alignkit train -m algo.beta=0.05,0.1,0.5        # sweep: one run folder each
  alignkit train --cfg job                        # print the composed config and exit
  alignkit train --help                           # config groups and every option

Every run folder holds config.yaml, metrics.jsonl, TensorBoard events, curves.png and final/ (a Hugging Face
model). Docs: README.md.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignkit", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="alignkit {train,list,data,bench,profile} [args ...]")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("command", nargs="?", choices=["train", "list", "data", "bench", "profile"], help=argparse.SUPPRESS)
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


def cmd_train(argv: list[str]) -> int:
    """Compose with Hydra (multirun with -m) and train."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from alignkit.config.compose import ConfigError, compose_config, register_configs
    from alignkit.registry import default_registry

    registry = default_registry()
    register_configs(registry)
    flags = {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"}
    if not any(a in flags or a.startswith(("--cfg", "hydra.", "--config")) for a in argv):
        try:  # validate first: errors name the valid keys, and no run folder is made for a typo
            compose_config(argv, registry)
        except ConfigError as exc:
            print(f"alignkit train: bad configuration: {exc}", file=sys.stderr)
            return 2

    @hydra.main(config_path="pkg://alignkit.conf", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig):
        from alignkit.trainer import train

        run_dir = cfg.trainer.run_dir or HydraConfig.get().runtime.output_dir
        if cfg.stages:
            from alignkit.pipeline import run_pipeline

            return run_pipeline(cfg, run_dir)
        result = train(cfg, run_dir=run_dir)
        shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("eval/")}
        print(f"\nrun folder: {result.output_dir}\nfinal metrics: {shown}", flush=True)
        return result.metrics.get("eval/loss")

    old = sys.argv
    sys.argv = ["alignkit train", *argv]
    try:
        _main()
    finally:
        sys.argv = old
    return 0


def cmd_list(argv: list[str]) -> int:
    from alignkit.config.compose import yaml_options
    from alignkit.registry import build_registry

    reg = build_registry()
    print("algorithms (algo=...):")
    for name in sorted(reg.algorithms):
        spec, plugin = reg.algorithms[name]
        paper = f"  [{spec.paper}]" if spec.paper else ""
        print(f"  {name:<10} {spec.description}  (plugin: {plugin}){paper}")
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
    from alignkit.datagen.compose import data_steps

    print("\ndata steps (alignkit data <step>):")
    for name, (spec, plugin) in sorted(data_steps(reg).items()):
        print(f"  {name:<14} {spec.description}  (plugin: {plugin})")
    print("\ndata formats (data.sources[].format):")
    for name in sorted(reg.data_formats):
        spec, plugin = reg.data_formats[name]
        print(f"  {name:<11} {spec.kind:<10} {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv[:1]) if argv and argv[0].startswith("-") else None
    if args is not None and args.version:
        from alignkit import __version__

        print(f"alignkit {__version__}")
        return 0
    if not argv or argv[0] not in ("train", "list", "data", "bench", "profile"):
        _parser().print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    _setup_logging()
    if cmd == "train":
        return cmd_train(rest)
    if cmd == "list":
        return cmd_list(rest)
    if cmd == "data":
        from alignkit.datagen.cli import main as data_main

        return data_main(rest)
    if cmd == "bench":
        from alignkit.bench import main as bench_main

        return bench_main(rest)
    from alignkit.profile import main as profile_main

    return profile_main(rest)


def compose_config(overrides, registry=None):
    """Same as :func:`alignkit.config.compose.compose_config` (kept here for scripts)."""
    from alignkit.config.compose import compose_config as _compose

    return _compose(overrides, registry)


if __name__ == "__main__":
    raise SystemExit(main())
