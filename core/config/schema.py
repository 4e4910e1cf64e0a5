"""Typed schemas behind ``conf/``: a misspelt key or a wrong type fails at composition.

The YAML files in ``conf/<group>/`` merge into these dataclasses; each algorithm's
config dataclass (from its plugin's :class:`alignkit.AlgorithmSpec`) is stored as
``algo/<name>_schema`` and gains a ``name`` field holding the algorithm's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass
class TinyModelConfig:
    hidden_size: int = 96
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 1024


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    name: str = MISSING  # preset name shown in logs
    source: str = "hf"  # tiny | smollm2 | hf
    path: Optional[str] = None  # hub name or local folder (source=hf)
    dtype: str = "float32"  # float32 | bfloat16 | float16: weights' dtype
    attn_implementation: str = "sdpa"  # eager | sdpa
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    fused_logprobs: bool = True  # lm_head fused with the log-prob gather (no [B, T, V] logits)


@dataclass
class DataSource:
    path: str = MISSING  # local json/jsonl/parquet (.gz ok), pkg://alignkit/<file>, or a hub data set name
    format: str = "auto"  # auto | hh | preference | sft | messages | ranked | prompt (or a plugin's format)
    split: str = "train"  # split name for hub data sets
    weight: float = 1.0  # mixing weight relative to the other sources
    fields: Dict[str, str] = field(default_factory=dict)  # normalised field -> column name in the file
    max_examples: Optional[int] = None  # keep the first N examples (after a seeded shuffle)
    eval_size: float = 0.1  # held-out part of this source: a fraction (< 1) or a count (>= 1)


@dataclass
class DataConfig:
    name: str = MISSING
    sources: List[DataSource] = field(default_factory=list)
    max_length: int = 512  # prompt + response tokens
    max_prompt_length: int = 256  # prompt tokens kept when truncating (from the left)
    truncation: str = "truncate"  # truncate (prompt from the left, then response from the right) | drop
    shuffle_seed: int = 0  # seed of the shuffle before the held-out split


@dataclass
class TrainerConfig:
    max_steps: int = 100  # optimiser steps (for online methods: rollout iterations)
    batch_size: int = 8  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    eval_batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.0
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    optimizer: str = "adamw"  # adamw | sgd
    lr_scheduler: str = "cosine"  # any transformers.get_scheduler name: constant, linear, cosine, ...
    warmup_steps: int = 0
    max_grad_norm: float = 1.0  # 0 disables clipping
    mixed_precision: str = "no"  # no | bf16 | fp16 (autocast; fp16 only on CUDA)
    seed: int = 42
    eval_steps: int = 50  # evaluate every N steps (0: only at start and end)
    eval_at_start: bool = True
    max_eval_examples: Optional[int] = None
    save_steps: int = 0  # checkpoint every N steps (0: only the final model)
    log_steps: int = 1
    output_dir: str = "outputs"  # run folders go under this
    run_dir: Optional[str] = None  # exact run folder (set by the CLI / tests); default: output_dir/<time>_<algo>
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch intra-op threads (0: torch's default)
    deterministic: bool = True
    progress: bool = True  # tqdm progress bar


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    jsonl: bool = True
    plot: bool = True  # curves.png at the end of the run


@dataclass
class PluginsConfig:
    disable: List[str] = field(default_factory=list)  # entry-point names of plugins to switch off


@dataclass
class OpsConfig:
    backend: str = "auto"  # auto | kernel | reference


@dataclass
class RunConfig:
    algo: Any = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    stages: List[Any] = field(default_factory=list)  # multi-stage pipelines (experiment=instructgpt)
