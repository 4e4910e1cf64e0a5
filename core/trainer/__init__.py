"""The training loop, its state, logging and checkpoints."""
from alignkit.trainer.loop import RunResult, Trainer, train  # noqa: F401
