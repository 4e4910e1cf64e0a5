"""What a data step declares: :class:`DataStepSpec` and the config fields every step shares.

A step's config dataclass derives from :class:`StepConfig` (output, overwrite, progress
bar) or, when the step loads a model, from :class:`ModelStepConfig`, which also selects
``model=`` (any preset of ``conf/model``: ``tiny``, ``smollm2-135m``, ``hf``), the seed,
resumption (``resume``) and the tokenisation lengths. Overrides on the command line are type-checked against it and
range-checked by its ``__post_init__`` (:func:`alignkit.config.schema.check`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List

from omegaconf import MISSING

from alignkit.config.schema import ModelConfig, check

__all__ = ["DataStepSpec", "StepConfig", "ModelStepConfig", "TranslatorSpec"]


@dataclass
class DataStepSpec:
    """One ``alignkit data <name>`` step, as registered through ``alignkit_register_data_steps``."""

    name: str  #: the command: ``alignkit data <name>``
    config_class: type  #: a dataclass deriving from :class:`StepConfig`
    run: Callable[..., None]  #: ``run(cfg, step: StepRun)``: reads, counts and writes through ``step``
    description: str  #: one line, shown by ``alignkit data``


@dataclass
class TranslatorSpec:
    """A translation backend of ``alignkit data translate``, as registered through ``alignkit_register_translators``."""

    name: str  #: ``translator=<name>``
    build: Callable[..., Any]  #: ``build(cfg, step, policy)`` -> an object with ``translate(texts, source, target)``
    description: str  #: one line
    needs_model: bool = False  #: the backend translates with the step's model (``policy`` is handed to it)


@dataclass
class StepConfig:
    output: str = MISSING  #: the step's main output: a .jsonl or .parquet file
    overwrite: bool = False  #: replace an existing output (otherwise that is an error)
    progress: bool = True  #: tqdm progress bar on stderr


@dataclass
class ModelStepConfig(StepConfig):
    # `_self_` first: the model preset (conf/model/<name>.yaml) merges over the typed `model` node
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"model": "tiny"}])
    resume: bool = True  #: continue an interrupted run from ``<output stem>.partial/`` (false: start over)
    seed: int = 0  #: seeds the model's init (tiny) and sampling; a resumed run draws what a whole run would
    model: ModelConfig = MISSING  #: model=tiny | smollm2-135m | hf (model.path=...)
    device: str = "auto"  #: auto | cpu | cuda
    num_threads: int = 0  #: torch intra-op threads (0: torch's default; 1 is fastest for small models on a busy CPU)
    batch_size: int = 8  #: prompts per generate call
    max_prompt_length: int = 768  #: prompt tokens kept (the last ones) when a prompt is longer
    max_length: int = 1024  #: prompt + response tokens when a reward model scores a response

    def __post_init__(self) -> None:
        check(self, device="one of auto|cpu|cuda", num_threads=">= 0", batch_size=">= 1", max_prompt_length=">= 1",
              max_length=">= 2")
