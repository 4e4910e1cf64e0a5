"""A plugin claiming a built-in data step's name."""
from alignkit import hookimpl
from alignkit.datagen import DataStepSpec, StepConfig


@hookimpl
def alignkit_register_data_steps():
    return [DataStepSpec("dedup", StepConfig, lambda cfg, step: None, "a second dedup")]
