"""Running data steps in-process on the tiny model, quickly."""
import json

import pytest
import torch

SEEDS = "pkg://alignkit/assets/seed_tasks/seed_tasks.jsonl"


@pytest.fixture(scope="session")
def registry():
    from alignkit.registry import build_registry

    return build_registry()


@pytest.fixture
def run_step(registry):
    """``run_step(name, *overrides)`` composes and runs a data step like ``alignkit data`` does
    (no progress bar; one torch thread: fastest for the tiny model on a busy CPU)."""
    from alignkit.datagen.compose import compose_step, data_step
    from alignkit.datagen.run import execute
    from alignkit.datagen.spec import ModelStepConfig

    threads = torch.get_num_threads()

    def _run(name, *overrides):
        spec = data_step(registry, name)
        quick = ["progress=false"] + (["num_threads=1"] if issubclass(spec.config_class, ModelStepConfig) else [])
        cfg = compose_step(spec, [*quick, *overrides])
        return execute(spec, cfg, registry, command=f"alignkit data {name}")

    yield _run
    torch.set_num_threads(threads)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


class Interrupt:
    """Raises KeyboardInterrupt right after the ``after``-th checkpoint is committed (as Ctrl-C
    between two batches would), counting checkpoints of every step run."""

    def __init__(self, monkeypatch, after):
        from alignkit.datagen.run import StepRun

        self.after, self.calls = after, 0
        real = StepRun.checkpoint

        def checkpoint(step, done, **extra):
            real(step, done, **extra)
            self.calls += 1
            if self.calls == self.after:
                raise KeyboardInterrupt

        monkeypatch.setattr(StepRun, "checkpoint", checkpoint)
