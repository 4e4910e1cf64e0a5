"""A third-party data step for the tests: upper-cases every prompt (registered like any plugin)."""
from dataclasses import dataclass

from omegaconf import MISSING

from alignkit import hookimpl
from alignkit.datagen import DataStepSpec, StepConfig


@dataclass
class UpperConfig(StepConfig):
    input: str = MISSING


def upper(cfg, step):
    rows = step.read(cfg.input)
    step.counts["rows"] = len(rows)
    step.write([{**r, "prompt": r["prompt"].upper()} for r in rows.rows])


@hookimpl
def alignkit_register_data_steps():
    return [DataStepSpec("upper", UpperConfig, upper, "upper-case every prompt")]
