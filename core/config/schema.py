"""Typed schemas behind ``conf/``: a misspelt key or a wrong type fails at composition.

The YAML files in ``conf/<group>/`` merge into these dataclasses; each algorithm's
config dataclass (from its plugin's :class:`alignkit.AlgorithmSpec`) is stored as
``algo/<name>_schema`` and gains a ``name`` field holding the algorithm's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

__all__ = ["check", "RolloutConfig", "ConfigValueError", "TinyModelConfig", "LoraConfig", "ModelConfig", "DataSource", "DataConfig",
           "DistributedConfig", "TrainerConfig", "LoggerConfig", "PluginsConfig", "OpsConfig", "EvalGenerationConfig",
           "EvalJudgeConfig", "EvalLmEvalConfig", "EvalConfig", "RunConfig"]


class ConfigValueError(ValueError):
    """A config value out of its range; :func:`alignkit.config.compose.compose_config` adds the key's path."""

    def __init__(self, name: str, value: Any, rule: str):
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name}={value!r}: must be {rule}")


def _holds(value: Any, rule: str) -> bool:
    """Whether ``value`` satisfies ``rule``: ``"> 0"``, ``">= 1"``, ``"< 1"``, ``"<= 1"``,
    ``"in [0, 1)"`` (brackets as in interval notation) or ``"one of a|b|c"``."""
    if rule.startswith("one of "):
        return str(value) in rule[len("one of "):].split("|")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    if rule.startswith("in "):
        lo_b, body, hi_b = rule[3], rule[4:-1], rule[-1]
        lo, hi = (float(x) for x in body.split(","))
        return (value >= lo if lo_b == "[" else value > lo) and (value <= hi if hi_b == "]" else value < hi)
    op, num = rule.split()
    bound = float(num)
    return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]


def check(obj: Any, **rules: str) -> None:
    """Range-check fields of a config dataclass (call it from ``__post_init__``)::

        def __post_init__(self):
            check(self, beta="> 0", label_smoothing="in [0, 0.5)", loss_type="one of sigmoid|ipo")

    ``None`` passes (optional fields: off). Composition reports a failure as one line naming
    the full key, e.g. ``algo.beta=-1.0: must be > 0``."""
    for name, rule in rules.items():
        value = getattr(obj, name)
        if value is not None and not _holds(value, rule):
            raise ConfigValueError(name, value, rule)


@dataclass
class TinyModelConfig:
    hidden_size: int = 96
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 1024

    def __post_init__(self) -> None:
        check(self, hidden_size=">= 1", num_layers=">= 1", num_heads=">= 1", intermediate_size=">= 1",
              max_position_embeddings=">= 2")


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        check(self, r=">= 1", alpha="> 0", dropout="in [0, 1)")


@dataclass
class ModelConfig:
    name: str = MISSING  # preset name shown in logs
    source: str = "hf"  # tiny | smollm2 | hf
    path: Optional[str] = None  # hub name or local folder (source=hf)
    dtype: str = "float32"  # float32 | bfloat16 | float16: weights' dtype
    attn_implementation: str = "sdpa"  # eager | sdpa
    gradient_checkpointing: bool = False
    lean_activations: bool = True  # RMSNorm / SwiGLU keep fewer tensors for backward (alignkit.models.lean)
    trust_remote_code: bool = False
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    fused_logprobs: bool = True  # lm_head fused with the log-prob gather (no [B, T, V] logits)
    shared_prompt: bool = True  # preference pairs: one packed forward per pair, the prompt once (alignkit.pairs)

    def __post_init__(self) -> None:
        check(self, source="one of tiny|smollm2|hf", dtype="one of float32|bfloat16|float16",
              attn_implementation="one of eager|sdpa|flash_attention_2")


@dataclass
class DataSource:
    path: str = MISSING  # local json/jsonl/parquet (.gz ok), pkg://alignkit/<file>, or a hub data set name
    format: str = "auto"  # auto | hh | preference | sft | messages | ranked | prompt (or a plugin's format)
    split: str = "train"  # split name for hub data sets
    weight: float = 1.0  # mixing weight relative to the other sources
    fields: Dict[str, str] = field(default_factory=dict)  # normalised field -> column name in the file
    max_examples: Optional[int] = None  # keep the first N examples (after a seeded shuffle)
    eval_size: float = 0.1  # held-out part of this source: a fraction (< 1) or a count (>= 1)
    eval_only: bool = False  # hold out the whole source (never trained on; eval_size and weight unused)

    def __post_init__(self) -> None:
        check(self, weight="> 0", max_examples=">= 1", eval_size=">= 0")


@dataclass
class DataConfig:
    name: str = MISSING
    sources: List[DataSource] = field(default_factory=list)
    max_length: int = 512  # prompt + response tokens
    max_prompt_length: int = 256  # prompt tokens kept when truncating (from the left)
    truncation: str = "truncate"  # truncate (prompt from the left, then response from the right) | drop
    shuffle_seed: int = 0  # seed of the shuffle before the held-out split

    def __post_init__(self) -> None:
        check(self, max_length=">= 2", max_prompt_length=">= 1", truncation="one of truncate|drop")


@dataclass
class DistributedConfig:
    """How several processes (``torchrun`` / ``accelerate launch``) share the work; one process ignores it."""

    strategy: str = "ddp"  # ddp (DistributedDataParallel) | fsdp (FSDP2: parameters, gradients, optimiser state sharded)
    backend: Optional[str] = None  # process-group backend (null: nccl on GPUs, gloo on CPU)
    fsdp_reshard_after_forward: bool = True  # FSDP: free gathered parameters after forward (ZeRO-3 style)

    def __post_init__(self) -> None:
        check(self, strategy="one of ddp|fsdp", backend="one of gloo|nccl|mpi")


@dataclass
class TrainerConfig:
    max_steps: int = 100  # optimiser steps (for online methods: rollout iterations)
    batch_size: int = 8  # examples per optimiser micro-batch, over all processes together (global)
    grad_accum: int = 1  # micro-batches per optimiser step
    eval_batch_size: int = 16  # held-out examples per evaluation batch, over all processes together
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
    save_total_limit: Optional[int] = None  # keep only the newest N checkpoints (null: all)
    resume: Optional[str] = None  # auto (newest complete checkpoint of run_dir) | a checkpoint folder | null
    log_steps: int = 1
    output_dir: str = "outputs"  # run folders go under this
    run_dir: Optional[str] = None  # exact run folder (set by the CLI / tests); default: output_dir/<time>_<algo>
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch intra-op threads (0: torch's default)
    deterministic: bool = True
    progress: bool = True  # tqdm progress bar
    #: preference algorithms: the reference's log-probs of every pair computed once before step 1 (cached on
    #: disk), so no reference model is in memory while training
    precompute_reference: bool = False
    #: glibc: host allocations of at least this many bytes are mmapped and returned to the OS when freed
    #: (alignkit.trainer.memory): less resident memory for more page faults; 0 leaves glibc's adaptive
    #: threshold (faster)
    malloc_mmap_threshold: int = 0
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        check(self, max_steps=">= 1", batch_size=">= 1", grad_accum=">= 1", eval_batch_size=">= 1", lr="> 0",
              weight_decay=">= 0", optimizer="one of adamw|sgd", warmup_steps=">= 0", max_grad_norm=">= 0",
              mixed_precision="one of no|bf16|fp16", seed=">= 0", eval_steps=">= 0", max_eval_examples=">= 1",
              save_steps=">= 0", save_total_limit=">= 1", log_steps=">= 1", device="one of auto|cpu|cuda",
              num_threads=">= 0", malloc_mmap_threshold=">= 0")
        if len(self.adam_betas) != 2 or not all(_holds(b, "in [0, 1)") for b in self.adam_betas):
            raise ConfigValueError("adam_betas", list(self.adam_betas), "two numbers in [0, 1)")


#: experiment trackers of the logger group: config key -> (accelerate's availability check, package, extra)
TRACKERS = {"mlflow": ("is_mlflow_available", "MLflow", "mlflow"),
            "wandb": ("is_wandb_available", "Weights & Biases", "wandb")}


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    jsonl: bool = True
    plot: bool = True  # curves.png at the end of the run
    mlflow: bool = False  # an MLflow run (accelerate's MLflowTracker): the config as params, every logged metric
    wandb: bool = False  # a Weights & Biases run (accelerate's WandBTracker): the config, every logged metric
    project: str = "alignkit"  # MLflow experiment / W&B project
    run_name: Optional[str] = None  # tracker run name; None: the run folder's name
    mlflow_tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else a file store in <run>/mlruns
    wandb_mode: Optional[str] = None  # online | offline | disabled; None: WANDB_MODE, else W&B's default (online)

    def __post_init__(self) -> None:
        check(self, wandb_mode="one of online|offline|disabled")
        for key, (available, package, extra) in TRACKERS.items():
            if getattr(self, key) and not _tracker_available(available):
                from alignkit.errors import UserError

                raise UserError(f"logger.{key}=true needs {package}, which is not installed",
                                f"pip install 'alignkit[{extra}]' (or set logger.{key}=false)")


def _tracker_available(check_name: str) -> bool:
    """accelerate's own check (``accelerate.utils.imports.is_mlflow_available``, ...), so a package
    accepted here is one accelerate's tracker accepts."""
    from accelerate.utils import imports

    return bool(getattr(imports, check_name)())


@dataclass
class PluginsConfig:
    disable: List[str] = field(default_factory=list)  # entry-point names of plugins to switch off


@dataclass
class OpsConfig:
    backend: str = "auto"  # auto | kernel | reference

    def __post_init__(self) -> None:
        check(self, backend="one of auto|kernel|reference")


@dataclass
class EvalGenerationConfig:
    """``eval.generation``: responses sampled on held-out prompts by the policy and the reference."""

    num_prompts: int = 16  # held-out prompts to generate for (the first N of the held-out pairs; 0: no generation)
    max_new_tokens: int = 64  # response length cap
    temperature: float = 1.0  # sampling temperature; 0 = greedy (1 keeps the sequence-KL estimate unbiased)
    top_k: int = 0  # keep the k most likely tokens (0 = off)
    top_p: float = 1.0  # nucleus sampling mass (1 = off)
    seed: Optional[int] = None  # sampling seed (each prompt's noise keyed by it); null: the run's trainer.seed
    batch_size: int = 8  # prompts per generate call

    def __post_init__(self) -> None:
        check(self, num_prompts=">= 0", max_new_tokens=">= 1", temperature=">= 0", top_k=">= 0", top_p="in (0, 1]",
              seed=">= 0", batch_size=">= 1")


@dataclass
class EvalJudgeConfig:
    """``eval.judge``: pairwise LLM judge of policy vs reference responses (alignkit.evaluation.judge)."""

    model_path: Optional[str] = None  # a local causal LM folder (or hub name) used as the judge; null: no judge
    batch_size: int = 4  # judge prompts per forward pass
    template: Optional[str] = None  # judge prompt: null (built-in 'pairwise'), a format string, or file:<path>

    def __post_init__(self) -> None:
        check(self, batch_size=">= 1")


@dataclass
class EvalLmEvalConfig:
    """``eval.lm_eval``: lm-evaluation-harness tasks on the evaluated model (pip install 'alignkit[eval]')."""

    tasks: List[str] = field(default_factory=list)  # task names; empty: no benchmarks
    include_path: Optional[str] = None  # folder of task YAML files of your own
    limit: Optional[int] = None  # at most this many examples per task (null: all)
    batch_size: int = 8

    def __post_init__(self) -> None:
        check(self, limit=">= 1", batch_size=">= 1")


@dataclass
class EvalConfig:
    """``eval.*``: what ``alignkit eval <run folder | model path>`` measures and where it writes."""

    reference: Optional[str] = None  # reference model folder; null: a run's starting model (none for a bare model)
    reward_model: Optional[str] = None  # an algo=rm run's final/ folder: accuracy by reward, win rate, mean reward
    reward_function: Optional[str] = None  # a registered reward function for the generations (alignkit list)
    reward_kwargs: Dict[str, Any] = field(default_factory=dict)  # its arguments: +eval.reward_kwargs.<name>=<value>
    max_examples: Optional[int] = None  # held-out pairs scored; null: the run's trainer.max_eval_examples (all if null)
    batch_size: Optional[int] = None  # pairs per log-prob batch; null: trainer.eval_batch_size
    by_length: bool = True  # batch the pairs longest first (less padding); false: the trainer's eval batches
    output_dir: Optional[str] = None  # null: <run>/eval, or trainer.output_dir/eval/<time>_<model> for a model path
    overwrite: bool = False  # replace an existing output folder
    samples_shown: int = 8  # generations shown side by side in eval.md
    progress: bool = True  # tqdm progress bars
    generation: EvalGenerationConfig = field(default_factory=EvalGenerationConfig)
    judge: EvalJudgeConfig = field(default_factory=EvalJudgeConfig)
    lm_eval: EvalLmEvalConfig = field(default_factory=EvalLmEvalConfig)

    def __post_init__(self) -> None:
        check(self, max_examples=">= 1", batch_size=">= 1", samples_shown=">= 0")


@dataclass
class RolloutConfig:
    """``rollout``: the engine that generates an online run's responses (docs/rollout.md)."""

    engine: str = "hf"  # hf (Hugging Face generate on the policy) | vllm | a plugin's engine
    mode: str = "colocated"  # vllm: colocated (engine in the trainer's process) | server (rollout.server_url)
    server_url: Optional[str] = None  # server mode: http://host:port of `alignkit rollout-server` or `vllm serve`
    sync_dir: Optional[str] = None  # server mode: folder both sides see, for weight files (null: a temp folder)
    dtype: str = "auto"  # engine weights: auto (the policy's) | float32 | bfloat16 | float16
    enforce_eager: bool = True  # vllm: no graph compilation (starts in ~30 s on CPU instead of minutes)
    max_model_len: Optional[int] = None  # vllm: context length (null: data.max_length + generation cap)
    max_num_seqs: int = 256  # vllm: sequences decoded together
    kv_cache_gb: float = 2.0  # vllm on CPU: KV-cache memory (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.3  # vllm on GPU: share of GPU memory for the engine (colocated)
    sleep_mode: bool = True  # vllm on GPU, colocated: free the engine's memory while the trainer steps
    timeout_s: float = 600.0  # server mode: seconds to wait for a request (and for the server to come up)
    host: str = "127.0.0.1"  # alignkit rollout-server: address to listen on
    port: int = 8000  # alignkit rollout-server: port

    def __post_init__(self) -> None:
        check(self, mode="one of colocated|server", dtype="one of auto|float32|bfloat16|float16",
              max_model_len=">= 1", max_num_seqs=">= 1", kv_cache_gb="> 0", gpu_memory_utilization="in (0, 1]",
              timeout_s="> 0", port=">= 1")


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
    eval: EvalConfig = field(default_factory=EvalConfig)  # alignkit eval (docs/evaluation.md)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # online runs' rollout engine (docs/rollout.md)
