"""The training loop.

``train(cfg)`` builds a run from a composed config: plugins -> algorithm, tokenizer and
model(s), data, optimiser and schedule; then steps the algorithm, evaluates, checkpoints and
saves the final model in Hugging Face format. The loop never knows which algorithm it runs:
it asks the registry.

Several processes (``torchrun`` / ``accelerate launch``) run the same loop under
``accelerate``: each takes its shard of every global batch (:class:`BatchStream`) and of the
held-out set, gradients are averaged by torch's ``DistributedDataParallel``, metrics are
averaged over processes, and process 0 alone writes logs, checkpoints and ``final/``.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from alignkit.algorithm import RunContext
from alignkit.environment import environment
from alignkit.errors import DiskFullError, NonFiniteError, RunFolderError, UserError
from alignkit.trainer.logger import MetricsLogger
from alignkit.trainer.memory import preallocate_adam_state, set_malloc_mmap_threshold
from alignkit.trainer.state import (STATE_FILE, WEIGHTS_FILE, BatchStream, TrainState, complete_checkpoints,
                                    load_state_file, rng_state)

log = logging.getLogger("alignkit")

#: what a run folder holds once a run has started in it
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints", "final")


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict  #: last value of every logged metric
    history: dict  #: metric -> [(step, value), ...]


class TrainingInterrupted(UserError):
    """SIGINT / SIGTERM: a checkpoint was saved and the run stopped; ``exit_code`` is 128 + signal."""

    def __init__(self, what: str, fix: str, signum: int):
        super().__init__(what, fix)
        self.exit_code = 128 + int(signum)


def _algo_config(cfg: DictConfig):
    """The algorithm's dataclass instance (typed), from the composed node."""
    return OmegaConf.to_object(cfg.algo) if OmegaConf.get_type(cfg.algo) not in (dict, None) else cfg.algo


def _holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def plan_run_dir(cfg: DictConfig) -> tuple[Path, Path | None, bool]:
    """``(run folder, checkpoint to resume or None, whether the folder is new)`` for a run config.

    ``trainer.resume=auto`` resumes the newest complete checkpoint of ``trainer.run_dir`` (and
    starts at step 0 when it has none); a checkpoint path resumes that checkpoint (its run folder
    unless ``trainer.run_dir`` is set). Without ``resume``, a folder that already holds a run is
    refused, so nothing is overwritten or appended to by accident."""
    tcfg = cfg.trainer
    resume = tcfg.resume
    if resume and resume != "auto":
        ckpt = Path(resume)
        if not (ckpt / STATE_FILE).is_file():
            raise RunFolderError(f"trainer.resume={resume}: not a complete checkpoint (no {STATE_FILE})",
                                 "give a checkpoints/step-N folder of a run, or trainer.resume=auto")
        path = Path(tcfg.run_dir) if tcfg.run_dir else ckpt.parent.parent
        return path, ckpt, False
    if resume == "auto":
        if not tcfg.run_dir:
            raise RunFolderError("trainer.resume=auto needs the run folder to resume",
                                 "set trainer.run_dir to the folder of the run")
        path = Path(tcfg.run_dir)
        found = complete_checkpoints(path)
        return path, (found[-1] if found else None), not path.exists()
    if tcfg.run_dir:
        path = Path(tcfg.run_dir)
        if _holds_run(path):
            raise RunFolderError(f"run folder {path} already holds a run",
                                 "continue it with trainer.resume=auto, or choose another trainer.run_dir")
        return path, None, not path.exists()
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path = Path(tcfg.output_dir) / f"{stamp}_{cfg.algo.name}"
    n = 1
    while path.exists():
        n += 1
        path = Path(tcfg.output_dir) / f"{stamp}_{cfg.algo.name}_{n}"
    return path, None, True


def make_run_dir(cfg: DictConfig) -> Path:
    """Create (and return) the run folder :func:`plan_run_dir` chooses."""
    path = plan_run_dir(cfg)[0]
    path.mkdir(parents=True, exist_ok=True)
    return path


class _TrainedModules(torch.nn.Module):
    """The policy and the algorithm's extra modules as one module, for data parallelism.

    Its forward runs a function (``RunContext.forward(fn, ...)``): algorithms call the policy and
    their modules directly (generation, fused log-probs on the backbone), and running that code
    inside this module's forward lets ``DistributedDataParallel`` average the gradients of every
    parameter it holds, and FSDP gather the weights sharded at this level."""

    def __init__(self, modules: list[torch.nn.Module]):
        super().__init__()
        self.held = torch.nn.ModuleList(modules)

    def forward(self, fn: Callable | None = None, *args, **kwargs):
        return fn(*args, **kwargs) if fn is not None else None


def _fully_shard(container: _TrainedModules, policy: torch.nn.Module, reshard_after_forward: bool):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``): each transformer block of the policy (the
    classes in its ``_no_split_modules``) is a unit, the rest shards with the container."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(policy, "_no_split_modules", None) or [])
    for m in policy.modules():
        if type(m).__name__ in blocks:
            fully_shard(m, reshard_after_forward=reshard_after_forward)
    return fully_shard(container, reshard_after_forward=reshard_after_forward)


def _reduce_metrics(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over processes (a metric missing on a process is averaged over the others)."""
    if accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    sums: dict[str, list[float]] = {}
    for part in gather_object([metrics]):
        for k, v in part.items():
            sums.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _is_disk_full(exc: BaseException) -> bool:
    text = str(exc)
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in text or (
        isinstance(exc, RuntimeError) and ("unexpected pos" in text or "PytorchStreamWriter failed" in text))


class Trainer:
    """Owns the :class:`TrainState` and the mechanics every algorithm shares: backward with mixed
    precision, clipping, optimiser and schedule steps, evaluation, logging, checkpoints, resume,
    signals and data parallelism."""

    def __init__(self, cfg: DictConfig, run_dir: Path | None = None, registry=None,
                 step_callback: Callable[[int], None] | None = None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, broadcast_object_list
        from transformers import set_seed

        from alignkit import ops
        from alignkit.registry import registry_for

        self.cfg = cfg
        tcfg = cfg.trainer
        if registry is None:
            registry = registry_for(disabled=cfg.plugins.disable)
        self.registry = registry
        self.spec = self.registry.algorithm(cfg.algo.name)
        ops.set_backend(cfg.ops.backend)
        if tcfg.num_threads:
            torch.set_num_threads(tcfg.num_threads)
        set_malloc_mmap_threshold(tcfg.malloc_mmap_threshold)
        set_seed(tcfg.seed, deterministic=False)
        if tcfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        cpu = tcfg.device == "cpu" or (tcfg.device == "auto" and not torch.cuda.is_available())
        if tcfg.device == "cuda" and not torch.cuda.is_available():
            raise UserError("trainer.device=cuda but no CUDA device is available", "use trainer.device=cpu or auto")
        if tcfg.mixed_precision == "fp16" and cpu:
            raise UserError("trainer.mixed_precision=fp16 needs a CUDA device", "use bf16 (or no) on CPU")
        handlers = [DistributedDataParallelKwargs(broadcast_buffers=False)]
        if tcfg.distributed.backend:
            handlers.append(InitProcessGroupKwargs(backend=tcfg.distributed.backend))
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=tcfg.mixed_precision, kwargs_handlers=handlers)
        acc = self.accelerator
        if tcfg.batch_size % acc.num_processes:
            raise UserError(f"trainer.batch_size={tcfg.batch_size} is global and must split evenly over "
                            f"{acc.num_processes} processes", f"use a multiple of {acc.num_processes}")
        if run_dir is not None:  # an explicit folder (API callers, pipelines' stages)
            plan = [Path(run_dir), None, not Path(run_dir).exists()]
            if cfg.trainer.resume:
                plan = list(plan_run_dir(OmegaConf.merge(cfg, {"trainer": {"run_dir": str(run_dir)}})))
        else:
            plan = list(plan_run_dir(cfg)) if acc.is_main_process else [None, None, None]
            if acc.num_processes > 1:
                broadcast_object_list(plan)  # every process writes nothing, but all agree on the folder
        self.run_dir, self.resume_from = Path(plan[0]), plan[1]
        self.created_root = _topmost_missing(self.run_dir) if plan[2] else None
        self.step_callback = step_callback
        self.run = RunContext(cfg=cfg, output_dir=self.run_dir, accelerator=acc, _registry=self.registry, _trainer=self)
        self.logger: MetricsLogger | None = None
        self._log_buffer: dict[int, dict] = {}
        self._signal: int | None = None
        self._forwarded = False  # a forward with gradients ran through the wrapper since the last backward
        self.wrapped = None

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # -- building ---------------------------------------------------------------
    def setup(self) -> None:
        """Build models, data, optimiser and state (and load the checkpoint to resume). A failure
        here removes a run folder this run created, so a bad input leaves nothing behind."""
        try:
            self._setup()
        except BaseException:
            if self.created_root is not None and self.is_main:
                shutil.rmtree(self.created_root, ignore_errors=True)
            raise

    def _setup(self) -> None:
        from transformers import get_scheduler

        from alignkit.models import ReferenceModel, build_model, build_tokenizer

        cfg, tcfg, acc = self.cfg, self.cfg.trainer, self.accelerator
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._remove_stale_partials()
        algo_cls = self.spec.algorithm_class
        self.run.tokenizer = build_tokenizer(cfg.model)
        policy = build_model(cfg.model, kind=algo_cls.model_kind, tokenizer=self.run.tokenizer)
        policy.to(acc.device)  # before data: prepare_examples may sample with it
        self.run.policy = policy
        self.algorithm = algo_cls(_algo_config(cfg), self.run)
        precompute = algo_cls.needs_reference and tcfg.precompute_reference
        if algo_cls.needs_reference and not precompute:
            self.run.reference = ReferenceModel(policy).to(acc.device)  # per process, never wrapped
        train_feats, self.eval_features = self._load_data()
        if precompute:
            self.run.reference = ReferenceModel(None, self._reference_table(train_feats))
        self.algorithm.setup()  # models and data exist; extra modules may be built here
        modules = [policy] + list(self.algorithm.extra_modules())
        for extra in modules[1:]:
            extra.to(acc.device)
        self.modules = modules
        self.container = _TrainedModules(modules)
        self.strategy = tcfg.distributed.strategy if acc.num_processes > 1 else None
        if self.strategy == "fsdp":
            if cfg.model.lora.enabled:
                raise UserError("model.lora with trainer/distributed=fsdp is not supported",
                                "use trainer/distributed=ddp for LoRA runs")
            self.wrapped = _fully_shard(self.container, policy, tcfg.distributed.fsdp_reshard_after_forward)
        elif self.strategy == "ddp":
            self.wrapped = acc.prepare_model(self.container)
        else:
            self.wrapped = None
        params = [p for p in self.container.parameters() if p.requires_grad]
        if tcfg.optimizer == "adamw":
            # the fused kernel updates every parameter in one pass (on CPU ~10x faster than the default
            # multi-tensor path for a 135M-parameter model); FSDP's sharded parameters keep the default
            fused = self.strategy != "fsdp" and all(p.is_floating_point() for p in params)
            opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=tuple(tcfg.adam_betas),
                                    fused=fused or None)
        else:
            opt = torch.optim.SGD(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        sched = get_scheduler(tcfg.lr_scheduler, opt, num_warmup_steps=tcfg.warmup_steps,
                              num_training_steps=tcfg.max_steps * self.algorithm.optimizer_steps_per_step())
        # the moments now, below the activations, rather than in the first step's freed activation space
        preallocate_adam_state(opt)
        opt = acc.prepare_optimizer(opt)
        self.params = params
        stream = BatchStream(train_feats, tcfg.batch_size, self.algorithm.collate, tcfg.seed,
                             rank=acc.process_index, world=acc.num_processes)
        self.state = TrainState(policy, opt, sched, stream, self.algorithm)
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        if self.is_main:
            OmegaConf.save(cfg, self.run_dir / "config.yaml", resolve=True)
            (self.run_dir / "data_stats.json").write_text(json.dumps(self.data_stats, indent=2))
            (self.run_dir / "environment.json").write_text(json.dumps(environment(), indent=2))
            self.logger = MetricsLogger(self.run_dir, cfg.logger, resume_step=self.state.step)
            if self.state.metrics or self.state.step:
                self.logger.restore_history()
        acc.wait_for_everyone()

    def _reference_table(self, train_feats) -> dict:
        """The precomputed reference log-probs (``trainer.precompute_reference``): the run folder's copy
        when resuming, else computed from the starting policy (or read from the disk cache) and copied
        into the run folder."""
        from safetensors.torch import load_file, save_file

        from alignkit.models.reference import REFERENCE_FILE, precompute_pair_logprobs

        kinds = {self.spec.algorithm_class.data_kind, self.eval_kind}
        if kinds != {"preference"}:
            raise UserError(f"trainer.precompute_reference needs preference pairs, and algo={self.cfg.algo.name} "
                            f"reads {'/'.join(sorted(kinds))} batches", "set trainer.precompute_reference=false")
        saved = self.run_dir / REFERENCE_FILE
        if self.resume_from is not None:
            if not saved.is_file():
                raise UserError(f"the run to resume has no {REFERENCE_FILE}, and its policy is no longer the reference",
                                "resume with trainer.precompute_reference=false, as the run was started")
            return load_file(str(saved))
        extra = {"shared_prompt": self.cfg.model.shared_prompt, "fused": self.cfg.model.fused_logprobs,
                 "attn": self.cfg.model.attn_implementation, "mixed_precision": self.cfg.trainer.mixed_precision,
                 "world": self.accelerator.num_processes}
        with self.accelerator.autocast():
            table = precompute_pair_logprobs(self.run, {"train": train_feats, "eval": self.eval_features},
                                             self.algorithm.collate, self.cfg.trainer.eval_batch_size, extra)
        if self.is_main:
            save_file(table, str(saved))
        return table

    def _remove_stale_partials(self) -> None:
        """Leftovers of an interrupted save (``*.partial`` / ``*.tmp`` folders) are never valid."""
        for pattern in ("checkpoints/*.partial", "checkpoints/*/model.tmp", "*.tmp", "*.partial"):
            for p in self.run_dir.glob(pattern):
                log.info("removing the unfinished %s", p)
                shutil.rmtree(p, ignore_errors=True)

    def _standard_tokenisation(self, kind: str) -> bool:
        """Whether ``kind`` features come from the standard tokenisation (cacheable on disk)."""
        from alignkit.algorithm import Algorithm
        from alignkit.data.cache import CACHED_KINDS

        algo_type = type(self.algorithm)
        return (kind in CACHED_KINDS and algo_type.prepare_examples is Algorithm.prepare_examples
                and (kind != algo_type.data_kind or algo_type.tokenize is Algorithm.tokenize))

    def _tokenize_all(self, examples: list[dict], split: str, kind: str):
        """Tokenised features of one split: a cached ``datasets`` table for algorithms that use the
        standard tokenisation (:mod:`alignkit.data.cache`), else a list built in memory."""
        from alignkit.data.cache import tokenize_cached
        from alignkit.data.tokenize import reset_stats, tokenize_example

        algo_type = type(self.algorithm)
        if self._standard_tokenisation(kind):
            with self.accelerator.main_process_first():  # process 0 fills the cache, the others read it
                feats, stats = tokenize_cached(examples, kind, self.run.tokenizer, self.cfg.data,
                                               num_proc=max(1, min(8, (os.cpu_count() or 1))))
            n_in = len(examples)
        else:
            reset_stats()
            examples = self.algorithm.prepare_examples(examples, split)
            if kind == algo_type.data_kind:
                made = [self.algorithm.tokenize(ex) for ex in examples]
            else:
                made = [tokenize_example(ex, kind, self.run.tokenizer, self.cfg.data) for ex in examples]
            feats = [f for f in made if f is not None]
            stats, n_in = reset_stats(), len(examples)
        if stats and self.is_main:
            log.warning("%s data: %s (of %d examples; data.max_length=%d, truncation=%s)", split,
                        ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(stats.items())), n_in,
                        self.cfg.data.max_length, self.cfg.data.truncation)
        self.data_stats[split] = {k: int(v) for k, v in stats.items()} | {"examples": len(feats)}
        return feats

    def _load_data(self):
        """Train and held-out features. When both come from the standard tokenisation and the
        sources are local files, a run with the same data config, file contents and tokenizer reads
        them straight from the disk cache without reading or converting any record."""
        from alignkit.data.cache import load_run_data, run_data_key, save_run_data
        from alignkit.data.load import load_data

        formats = {name: spec for name, (spec, _) in self.registry.data_formats.items()}
        algo_cls = self.spec.algorithm_class
        eval_kind = algo_cls.eval_data_kind or algo_cls.data_kind
        self.data_stats: dict = {}
        self.eval_kind = eval_kind
        key = None
        if self._standard_tokenisation(algo_cls.data_kind) and self._standard_tokenisation(eval_kind):
            key = run_data_key(self.cfg.data, {"train": algo_cls.data_kind, "eval": eval_kind}, self.run.tokenizer,
                               {"max_eval_examples": self.cfg.trainer.max_eval_examples,
                                "formats": sorted((n, p) for n, (_, p) in self.registry.data_formats.items())})
            cached = load_run_data(key) if key else None
            if cached is not None:
                parts, self.data_stats = cached
                log.info("data: %d train / %d held-out examples from the feature cache", len(parts["train"]),
                         len(parts["eval"]))
                return parts["train"], parts["eval"]
        data = load_data(self.cfg.data, formats, algo_cls.data_kind)
        if data.skipped:  # records the sources' formats left out (deleted messages, unanswered prompts, ...)
            self.data_stats["skipped_records"] = data.skipped
        if data.languages:  # records per value of the sources' `language` column (translate writes one)
            self.data_stats["languages"] = data.languages
        eval_examples = data.eval if eval_kind == algo_cls.data_kind else load_data(self.cfg.data, formats, eval_kind).eval
        if self.cfg.trainer.max_eval_examples is not None:
            eval_examples = eval_examples[: self.cfg.trainer.max_eval_examples]
        train = self._tokenize_all(data.train, "train", algo_cls.data_kind)
        evals = self._tokenize_all(eval_examples, "eval", eval_kind)
        if key and self.is_main:
            save_run_data(key, {"train": train, "eval": evals}, self.data_stats)
        return train, evals

    # -- mechanics algorithms call through RunContext ---------------------------
    def to_device(self, batch: dict) -> dict:
        dev = self.accelerator.device
        return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def forward(self, fn: Callable, *args, **kwargs):
        if self.wrapped is None:
            return fn(*args, **kwargs)
        if torch.is_grad_enabled():
            self._forwarded = True
        return self.wrapped(fn, *args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        if self.wrapped is not None and not self._forwarded:
            if self.strategy == "fsdp":
                raise UserError(f"algorithm {self.cfg.algo.name!r} computed a loss outside run.forward, which "
                                "FSDP needs", "use trainer/distributed=ddp, or compute the loss inside "
                                "self.run.forward(fn, ...) in the plugin")
            self.wrapped()  # an empty forward readies DistributedDataParallel to average this backward
        self._forwarded = False
        self.accelerator.backward(loss)

    def optimizer_step(self) -> dict[str, float]:
        """Clip, check the gradient norm, step optimiser and schedule. A non-finite norm stops the
        run before the step, so no update is applied from it."""
        tcfg = self.cfg.trainer
        if tcfg.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(self.params, tcfg.max_grad_norm)
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a DTensor
        if not math.isfinite(grad_norm):
            self.state.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"the gradient norm is {grad_norm} at step {self.state.step}; the run stopped "
                                 "before applying it", "lower trainer.lr, keep trainer.max_grad_norm > 0, or check "
                                 "the data; resume from the last checkpoint with trainer.resume=auto")
        self.state.optimizer.step()
        lr = self.state.scheduler.get_last_lr()[0]
        self.state.scheduler.step()
        self.state.optimizer.zero_grad(set_to_none=True)
        self._last_optimizer_step = {"grad_norm": grad_norm, "lr": lr}
        return dict(self._last_optimizer_step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = self.state.step if step is None else step
        self._log_buffer.setdefault(step, {}).update({k: float(v) for k, v in metrics.items()})

    def _flush(self, step: int, metrics: dict[str, float]) -> None:
        merged = _reduce_metrics(self.accelerator, self._log_buffer.pop(step, {})) | metrics
        self.state.metrics.update(merged)
        if self.logger is not None:
            self.logger.log(step, merged)

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics: each process evaluates its contiguous shard of the held-out set;
        per-example means are combined over processes weighted by example counts."""
        if not self.eval_features:
            return {}
        from accelerate.utils import gather_object
        from tqdm.auto import tqdm

        acc = self.accelerator
        n = len(self.eval_features)
        per = math.ceil(n / acc.num_processes)
        lo, hi = min(n, acc.process_index * per), min(n, (acc.process_index + 1) * per)
        self.run.policy.eval()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        bs = self.cfg.trainer.eval_batch_size
        starts = range(lo, hi, bs)
        bar = tqdm(starts, desc="eval", leave=False, disable=not (self.cfg.trainer.progress and self.is_main))
        for i in bar:
            chunk = [self.eval_features[j] for j in range(i, min(i + bs, hi))]
            batch = self.to_device(self.algorithm.collate(chunk, self.eval_kind))
            batch["index"] = torch.arange(i, i + len(chunk), device=acc.device)  # [b]
            batch["split"] = "eval"
            with torch.no_grad(), acc.autocast():
                metrics = self.forward(self.algorithm.evaluate, batch)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(chunk)
                counts[k] = counts.get(k, 0) + len(chunk)
        self.run.policy.train()
        if acc.num_processes > 1:
            parts = gather_object([(totals, counts)])
            totals, counts = {}, {}
            for t, c in parts:
                for k in t:
                    totals[k] = totals.get(k, 0.0) + t[k]
                    counts[k] = counts.get(k, 0) + c[k]
        out = {f"eval/{k}": v / counts[k] for k, v in totals.items()}
        self.registry.hook.alignkit_on_evaluate(run=self.run, step=self.state.step, metrics=out)
        return out

    # -- saving -------------------------------------------------------------------
    def _full_state(self) -> tuple[dict | None, dict | None]:
        """``(weights, optimiser state)`` of the whole run, gathered to process 0 under FSDP (``None``
        on the others); weights are keyed ``policy.<name>`` and ``extra<i>.<name>``. Every process
        must call it."""
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            weights = get_model_state_dict(self.container, options=opts)
            optim = get_optimizer_state_dict(self.container, _raw_optimizer(self.state.optimizer), options=opts)
            if not self.is_main:
                return None, None
        else:
            weights, optim = self.container.state_dict(), self.state.optimizer.state_dict()
        return {_external_key(k): v for k, v in weights.items()}, optim

    def _check_finite(self, weights: dict | None, what: str) -> None:
        """Refuse to write ``what`` from non-finite weights (every process reaches the same verdict)."""
        bad = next((k for k, v in (weights or {}).items() if v.is_floating_point() and not torch.isfinite(v).all()),
                   None)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            bad = next((b for b in gather_object([bad]) if b), None)
        if bad:
            raise NonFiniteError(f"weight {bad} is not finite at step {self.state.step}; {what} was not written",
                                 "lower trainer.lr or check the data; resume from the last checkpoint with "
                                 "trainer.resume=auto")

    def _write_guarded(self, target: Path, write: Callable[[Path], None]) -> None:
        """Write ``target`` through ``write(tmp)`` into ``<target>.partial``, renamed when complete;
        a full disk removes the partial folder and says so in one line."""
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            write(tmp)
        except (OSError, RuntimeError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if not _is_disk_full(exc):
                raise
            free = shutil.disk_usage(target.parent).free / 2**20
            last = complete_checkpoints(self.run_dir)
            raise DiskFullError(f"the disk is full while writing {target} ({free:.0f} MB free)",
                                "free space or move trainer.output_dir, then resume with trainer.resume=auto"
                                + (f" (last complete checkpoint: {last[-1]})" if last else "")) from None
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)

    def save_checkpoint(self, path: Path) -> None:
        """Weights, HF export and ``trainer_state.pt`` (see :mod:`alignkit.trainer.state`).
        Every process takes part (weights and RNG states are gathered); process 0 writes."""
        from accelerate.utils import gather_object

        from alignkit.models import save_model

        weights, optim = self._full_state()
        self._check_finite(weights, f"checkpoint {path}")
        rngs = gather_object([rng_state()]) if self.accelerator.num_processes > 1 else [rng_state()]
        if self.is_main:
            def write(tmp: Path) -> None:
                save_model(self.run.policy, self.run.tokenizer, tmp / "model", state_dict=self._policy_part(weights))
                _save_weights(weights, tmp / WEIGHTS_FILE)
                torch.save(self.state.state_dict(rngs, optim), tmp / STATE_FILE)

            self._write_guarded(path, write)
            self._rotate_checkpoints()
            self.registry.hook.alignkit_on_checkpoint_saved(run=self.run, step=self.state.step, path=str(path))
        self.accelerator.wait_for_everyone()

    def _policy_part(self, weights: dict) -> dict | None:
        """The policy's weights for a Hugging Face export under FSDP (``None``: the model has them)."""
        if self.strategy != "fsdp":
            return None
        return {k[len("policy."):]: v for k, v in weights.items() if k.startswith("policy.")}

    def _rotate_checkpoints(self) -> None:
        keep = self.cfg.trainer.save_total_limit
        if keep:
            for old in complete_checkpoints(self.run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)

    def _load_checkpoint(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        weights = {_internal_key(k): v for k, v in load_file(str(ckpt / WEIGHTS_FILE)).items()}
        state = load_state_file(ckpt / STATE_FILE)
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.container, weights, options=opts)
            set_optimizer_state_dict(self.container, _raw_optimizer(self.state.optimizer), state.pop("optimizer"),
                                     options=opts)
        else:
            self.container.load_state_dict(weights, strict=True)
        self.state.load_state_dict(state, self.accelerator.process_index)
        log.info("resumed from %s at step %d", ckpt, self.state.step)

    # -- signals ------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self._signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._signal = signum
        if self.is_main:
            log.warning("%s received: saving a checkpoint after step %d, then stopping",
                        signal.Signals(signum).name, self.state.step)

    def _stop_requested(self) -> int | None:
        """The signal that asks to stop, agreed by every process (any process's signal stops all)."""
        got = self._signal or 0
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            got = max(gather_object([got]))
        return got or None

    # -- the loop -----------------------------------------------------------------
    def fit(self) -> RunResult:
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            return self._fit()
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            if self.logger is not None:
                self.logger.close()

    def _fit(self) -> RunResult:
        from tqdm.auto import tqdm

        from alignkit.models import save_model

        tcfg = self.cfg.trainer
        st = self.state
        self.registry.hook.alignkit_on_train_start(run=self.run)
        if tcfg.eval_at_start and st.step == 0:
            self._flush(0, self.evaluate())
        bar = tqdm(total=tcfg.max_steps, initial=st.step, desc=f"{self.cfg.algo.name}",
                   disable=not (tcfg.progress and self.is_main), dynamic_ncols=True)
        t0 = time.time()
        last: dict[str, float] = {}
        self.run.policy.train()
        while st.step < tcfg.max_steps:
            signum = self._stop_requested()
            if signum:
                self._interrupt(signum)
            micro = [self.to_device(st.data.next()) for _ in range(tcfg.grad_accum)]
            st.step += 1
            self._last_optimizer_step = {}
            with self.accelerator.autocast():
                raw = self.algorithm.train_step(micro)
            self.algorithm.end_step()
            # a custom train_step that drops them still logs the last step's grad norm and lr
            raw = {**self._last_optimizer_step, **raw}
            metrics = _reduce_metrics(self.accelerator, raw)
            if not math.isfinite(metrics.get("loss", 0.0)):
                raise NonFiniteError(f"the loss is {metrics.get('loss')} at step {st.step}",
                                     "lower trainer.lr or check the data; resume from the last checkpoint with "
                                     "trainer.resume=auto")
            train_metrics = {f"train/{k}": v for k, v in metrics.items()}
            train_metrics["train/epoch"] = st.data.progress
            self.registry.hook.alignkit_on_step_end(run=self.run, step=st.step, metrics=train_metrics)
            if tcfg.eval_steps and st.step % tcfg.eval_steps == 0 and st.step < tcfg.max_steps:
                train_metrics |= self.evaluate()
            if st.step == tcfg.max_steps:
                last = train_metrics  # logged with the final evaluation, in one row
            elif st.step % tcfg.log_steps == 0:
                self._flush(st.step, train_metrics)
            if tcfg.save_steps and st.step % tcfg.save_steps == 0 and st.step < tcfg.max_steps:
                self.save_checkpoint(self.run_dir / "checkpoints" / f"step-{st.step}")
            if self.step_callback is not None:
                self.step_callback(st.step)
            shown = {k.split("/", 1)[1]: f"{v:.4g}" for k, v in train_metrics.items()
                     if k in ("train/loss", "train/rewards/accuracies", "train/accuracy", "eval/loss")}
            bar.set_postfix(shown)
            bar.update(1)
        bar.close()
        final_eval = self.evaluate()
        self._flush(st.step, last | final_eval | {"time/train_seconds": time.time() - t0})
        weights, _ = self._full_state()
        self._check_finite(weights, "the final model")
        if self.is_main:
            self._write_guarded(self.run_dir / "final", lambda tmp: save_model(
                self.run.policy, self.run.tokenizer, tmp / "model", state_dict=self._policy_part(weights)))
            _flatten(self.run_dir / "final")
            self.logger.plot()
        self.accelerator.wait_for_everyone()
        self.registry.hook.alignkit_on_train_end(run=self.run, metrics=dict(st.metrics))
        history = dict(self.logger.history) if self.logger is not None else {}
        return RunResult(self.run_dir, dict(st.metrics), history)

    def _interrupt(self, signum: int) -> None:
        path = self.run_dir / "checkpoints" / f"step-{self.state.step}"
        if not (path / STATE_FILE).is_file():
            self.save_checkpoint(path)
        name = signal.Signals(signum).name
        raise TrainingInterrupted(f"{name} at step {self.state.step}: checkpoint saved to {path}",
                                  f"resume with the same command plus trainer.run_dir={self.run_dir} "
                                  "trainer.resume=auto", signum)


def _topmost_missing(path: Path) -> Path:
    """The outermost folder of ``path`` that does not exist yet (what creating ``path`` would add)."""
    path = path.absolute()
    while not path.parent.exists():
        path = path.parent
    return path


def _flatten(folder: Path) -> None:
    """Move ``folder/model/*`` up into ``folder`` (``final/`` is the model folder itself)."""
    inner = folder / "model"
    for p in inner.iterdir():
        p.rename(folder / p.name)
    inner.rmdir()


def _external_key(key: str) -> str:
    """``held.0.<name>`` -> ``policy.<name>``, ``held.<i>.<name>`` -> ``extra<i-1>.<name>``."""
    _, i, rest = key.split(".", 2)
    return f"policy.{rest}" if i == "0" else f"extra{int(i) - 1}.{rest}"


def _internal_key(key: str) -> str:
    head, rest = key.split(".", 1)
    return f"held.0.{rest}" if head == "policy" else f"held.{int(head[5:]) + 1}.{rest}"


def _raw_optimizer(opt):
    """The torch optimiser under accelerate's wrapper."""
    return getattr(opt, "optimizer", opt)


def _save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Exact weights of every trained module in one safetensors file; tensors sharing storage (tied
    embeddings) are stored once per name."""
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for k, v in weights.items():
        v = v.detach().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        tensors[k] = v.clone() if key in seen else v.contiguous()
        seen.add(key)
    save_file(tensors, str(path))


def train(cfg: DictConfig, run_dir: Path | str | None = None, registry=None,
          step_callback: Callable[[int], None] | None = None) -> RunResult:
    """Run one training job from a composed config; returns the run folder and metrics."""
    trainer = Trainer(cfg, Path(run_dir) if run_dir else None, registry, step_callback)
    trainer.setup()
    return trainer.fit()
