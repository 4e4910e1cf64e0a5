"""Helpers of the data-step tests: JSON-lines files and a simulated interrupt."""
import json

SEEDS = "pkg://alignkit/assets/seed_tasks/seed_tasks.jsonl"


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
