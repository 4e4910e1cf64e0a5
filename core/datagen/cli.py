"""``alignkit data <step> [overrides ...]``: run one data step from the command line."""
from __future__ import annotations

import shlex
import sys

__all__ = ["main"]

USAGE = """\
usage: alignkit data <step> [key=value ...]     (--cfg: print the composed config; --help: the step's keys)

Make and curate alignment data with local models. Each step reads and writes .jsonl/.parquet,
writes <output stem>.provenance.json next to its output, and resumes an interrupted run when
started again with the same settings (its progress is kept in <output stem>.partial/).

steps:
{steps}

examples:
  alignkit data self-instruct input=seeds.jsonl output=tasks.jsonl target=50 model=smollm2-135m
  alignkit data score input=tasks.jsonl output=scored.jsonl model=smollm2-135m
  alignkit data select input=scored.jsonl output=selected.jsonl threshold=4
  alignkit data pairs input=tasks.jsonl output=pairs.jsonl scorer=reward reward.model_path=runs/rm/final
  alignkit data self-chat input=seeds.jsonl output=chats.jsonl max_turns=3 model=smollm2-135m
  alignkit data sdf input=chats.jsonl output=best.jsonl preference_output=pairs.jsonl model=smollm2-135m
  alignkit data translate mode=post-answering input=tasks.jsonl output=tasks_de.jsonl target_languages=[de]
  alignkit data dedup inputs=[a.jsonl,b.jsonl] output=unique.jsonl
  alignkit data mix sources='[{{path: a.jsonl, weight: 2}}, {{path: b.jsonl}}]' output=mix.jsonl
  alignkit data arithmetic output=arith/train.jsonl test_output=arith/test.jsonl train=2000 test=300 seed=0
"""


def _usage(steps: dict) -> str:
    lines = [f"  {name:<14} {spec.description}" + (f"  (plugin: {plugin})" if plugin != "datagen" else "")
             for name, (spec, plugin) in sorted(steps.items())]
    return USAGE.format(steps="\n".join(lines))


def _summary(step) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(step.counts.items()))
    files = "\n".join(f"  {name}: {path}" + (f" ({n} rows)" if n is not None else "")
                      for name, (path, n) in step.files.items())
    return f"{step.name}: done in {step.seconds:.1f} s\n  counts: {counts}\n{files}"


def _quiet_datasets() -> None:
    """No per-file "Generating train split" bars from ``datasets``: the step has its own."""
    import datasets

    datasets.disable_progress_bars()


def run(argv: list[str]) -> int:
    from omegaconf import OmegaConf

    from alignkit.datagen.compose import compose_step, data_step, data_steps
    from alignkit.datagen.run import execute
    from alignkit.registry import default_registry

    _quiet_datasets()
    registry = default_registry()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(data_steps(registry)))
        return 0 if argv else 2
    spec = data_step(registry, argv[0])
    flags = [a for a in argv[1:] if a.startswith("-")]
    overrides = [a for a in argv[1:] if not a.startswith("-")]
    if "--help" in flags or "-h" in flags:
        print(f"alignkit data {spec.name}: {spec.description}\n\nkeys (defaults; ??? = required):")
        print(OmegaConf.to_yaml(compose_step(spec, overrides, complete=False)))
        return 0
    cfg = compose_step(spec, overrides)
    if "--cfg" in flags:
        print(OmegaConf.to_yaml(cfg))
        return 0
    step = execute(spec, cfg, registry, command=shlex.join(["alignkit", "data", *argv]))
    print(_summary(step), flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Run ``alignkit data``; user errors print one line and exit 2, an interrupt exits 130."""
    from alignkit.errors import UserError, debug_enabled, format_user_error

    try:
        return run(argv)
    except UserError as exc:
        if debug_enabled():
            raise
        print(format_user_error(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignkit: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
