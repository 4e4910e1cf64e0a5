"""The training loop.

``train(cfg)`` builds a run from a composed config: plugins -> algorithm,
tokenizer and model(s), data, optimiser and schedule; then steps the algorithm,
evaluates, checkpoints and saves the final model in Hugging Face format.
The loop never knows which algorithm it runs: it asks the registry.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from alignkit.algorithm import RunContext
from alignkit.trainer.logger import MetricsLogger
from alignkit.trainer.state import BatchStream, TrainState

log = logging.getLogger("alignkit")


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict  #: last value of every logged metric
    history: dict  #: metric -> [(step, value), ...]


def make_run_dir(cfg: DictConfig) -> Path:
    if cfg.trainer.run_dir:
        path = Path(cfg.trainer.run_dir)
    else:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        path = Path(cfg.trainer.output_dir) / f"{stamp}_{cfg.algo.name}"
        n = 1
        while path.exists():
            n += 1
            path = Path(cfg.trainer.output_dir) / f"{stamp}_{cfg.algo.name}_{n}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _algo_config(cfg: DictConfig):
    """The algorithm's dataclass instance (typed), from the composed node."""
    return OmegaConf.to_object(cfg.algo) if OmegaConf.get_type(cfg.algo) not in (dict, None) else cfg.algo


class Trainer:
    """Owns the :class:`TrainState` and the mechanics every algorithm shares:
    backward with mixed precision, clipping, optimiser and schedule steps,
    evaluation, logging and saving."""

    def __init__(self, cfg: DictConfig, run_dir: Path | None = None, registry=None,
                 step_callback: Callable[[int], None] | None = None):
        from accelerate import Accelerator
        from transformers import set_seed

        from alignkit import ops
        from alignkit.registry import build_registry, default_registry

        self.cfg = cfg
        tcfg = cfg.trainer
        if registry is None:
            registry = build_registry(disabled=cfg.plugins.disable) if cfg.plugins.disable else default_registry()
        self.registry = registry
        self.spec = self.registry.algorithm(cfg.algo.name)
        ops.set_backend(cfg.ops.backend)
        if tcfg.num_threads:
            torch.set_num_threads(tcfg.num_threads)
        set_seed(tcfg.seed, deterministic=False)
        if tcfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.run_dir = Path(run_dir) if run_dir else make_run_dir(cfg)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.step_callback = step_callback
        cpu = tcfg.device == "cpu" or (tcfg.device == "auto" and not torch.cuda.is_available())
        if tcfg.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no CUDA device is available")
        if tcfg.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"trainer.mixed_precision must be no, bf16 or fp16, got {tcfg.mixed_precision!r}")
        if tcfg.mixed_precision == "fp16" and cpu:
            raise ValueError("trainer.mixed_precision=fp16 needs a CUDA device; use bf16 (or no) on CPU")
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=tcfg.mixed_precision)
        self.run = RunContext(cfg=cfg, output_dir=self.run_dir, accelerator=self.accelerator,
                              registry=self.registry, trainer=self)
        self.logger = MetricsLogger(self.run_dir, cfg.logger)
        self._log_buffer: dict[int, dict] = {}

    # -- building ---------------------------------------------------------------
    def setup(self) -> None:
        from transformers import get_scheduler

        from alignkit.models import ReferenceModel, build_model, build_tokenizer

        cfg, tcfg = self.cfg, self.cfg.trainer
        OmegaConf.save(cfg, self.run_dir / "config.yaml", resolve=True)
        algo_cls = self.spec.algorithm_class
        self.run.tokenizer = build_tokenizer(cfg.model)
        policy = build_model(cfg.model, kind=algo_cls.model_kind, tokenizer=self.run.tokenizer)
        policy.to(self.accelerator.device)  # before data: prepare_examples may sample with it
        self.run.policy = policy
        self.algorithm = algo_cls(_algo_config(cfg), self.run)
        if algo_cls.needs_reference:
            self.run.reference = ReferenceModel(policy).to(self.accelerator.device)
        train_feats, self.eval_features = self._load_data()
        modules = [policy] + list(self.algorithm.extra_modules())
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if tcfg.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=tuple(tcfg.adam_betas))
        elif tcfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        else:
            raise ValueError(f"trainer.optimizer must be adamw or sgd, got {tcfg.optimizer!r}")
        sched = get_scheduler(tcfg.lr_scheduler, opt, num_warmup_steps=tcfg.warmup_steps,
                              num_training_steps=tcfg.max_steps * self.algorithm.optimizer_steps_per_step())
        for extra in modules[1:]:
            extra.to(self.accelerator.device)
        policy, opt = self.accelerator.prepare(policy, opt)
        self.run.policy = policy
        self.params = params
        stream = BatchStream(train_feats, tcfg.batch_size, self.algorithm.collate, tcfg.seed)
        self.state = TrainState(policy, opt, sched, stream, self.algorithm)
        self.algorithm.setup()

    def _tokenize_all(self, examples: list[dict], split: str, kind: str) -> list[dict]:
        from alignkit.data.tokenize import reset_stats, tokenize_example

        reset_stats()
        examples = self.algorithm.prepare_examples(examples, split)
        if kind == self.spec.algorithm_class.data_kind:
            feats = [self.algorithm.tokenize(ex) for ex in examples]
        else:
            feats = [tokenize_example(ex, kind, self.run.tokenizer, self.cfg.data) for ex in examples]
        kept = [f for f in feats if f is not None]
        stats = reset_stats()
        if stats:
            log.warning("%s data: %s (of %d examples; data.max_length=%d, truncation=%s)", split,
                        ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(stats.items())), len(examples),
                        self.cfg.data.max_length, self.cfg.data.truncation)
        self.data_stats[split] = {k: int(v) for k, v in stats.items()} | {"examples": len(kept)}
        return kept

    def _load_data(self) -> tuple[list[dict], list[dict]]:
        from alignkit.data.load import load_data

        formats = {name: spec for name, (spec, _) in self.registry.data_formats.items()}
        algo_cls = self.spec.algorithm_class
        eval_kind = algo_cls.eval_data_kind or algo_cls.data_kind
        self.data_stats: dict = {}
        self.eval_kind = eval_kind
        data = load_data(self.cfg.data, formats, algo_cls.data_kind)
        eval_examples = data.eval if eval_kind == algo_cls.data_kind else load_data(self.cfg.data, formats, eval_kind).eval
        if self.cfg.trainer.max_eval_examples is not None:
            eval_examples = eval_examples[: self.cfg.trainer.max_eval_examples]
        train = self._tokenize_all(data.train, "train", algo_cls.data_kind)
        evals = self._tokenize_all(eval_examples, "eval", eval_kind)
        (self.run_dir / "data_stats.json").write_text(json.dumps(self.data_stats, indent=2))
        return train, evals

    # -- mechanics algorithms call through RunContext ---------------------------
    def to_device(self, batch: dict) -> dict:
        dev = self.accelerator.device
        return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def optimizer_step(self) -> dict[str, float]:
        tcfg = self.cfg.trainer
        grad_norm = float("nan")
        if tcfg.max_grad_norm and tcfg.max_grad_norm > 0:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.params, tcfg.max_grad_norm))
        self.state.optimizer.step()
        lr = self.state.scheduler.get_last_lr()[0]
        self.state.scheduler.step()
        self.state.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": grad_norm, "lr": lr}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = self.state.step if step is None else step
        self._log_buffer.setdefault(step, {}).update({k: float(v) for k, v in metrics.items()})

    def _flush(self, step: int, metrics: dict[str, float]) -> None:
        merged = self._log_buffer.pop(step, {}) | metrics
        self.state.metrics.update(merged)
        self.logger.log(step, merged)

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        if not self.eval_features:
            return {}
        self.run.policy.eval()
        totals: dict[str, float] = {}
        count = 0
        bs = self.cfg.trainer.eval_batch_size
        for i in range(0, len(self.eval_features), bs):
            chunk = self.eval_features[i: i + bs]
            batch = self.to_device(self.algorithm.collate(chunk, self.eval_kind))
            with torch.no_grad(), self.accelerator.autocast():
                metrics = self.algorithm.evaluate(batch)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(chunk)
            count += len(chunk)
        self.run.policy.train()
        out = {f"eval/{k}": v / count for k, v in totals.items()}
        self.registry.hook.alignkit_on_evaluate(run=self.run, step=self.state.step, metrics=out)
        return out

    # -- saving -------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        """Model in HF format plus ``trainer_state.pt`` (optimiser, schedule, RNG,
        data position, algorithm state), written to a temporary folder first."""
        import shutil

        from alignkit.models import save_model

        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(self.accelerator.unwrap_model(self.run.policy), self.run.tokenizer, tmp / "model")
        torch.save(self.state.state_dict(), tmp / "trainer_state.pt")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        self.registry.hook.alignkit_on_checkpoint_saved(run=self.run, step=self.state.step, path=str(path))

    # -- the loop -----------------------------------------------------------------
    def fit(self) -> RunResult:
        from tqdm.auto import tqdm

        from alignkit.models import save_model

        tcfg = self.cfg.trainer
        st = self.state
        self.registry.hook.alignkit_on_train_start(run=self.run)
        if tcfg.eval_at_start:
            self._flush(0, self.evaluate())
        bar = tqdm(total=tcfg.max_steps, desc=f"{self.cfg.algo.name}", disable=not tcfg.progress, dynamic_ncols=True)
        t0 = time.time()
        self.run.policy.train()
        while st.step < tcfg.max_steps:
            micro = [self.to_device(st.data.next()) for _ in range(tcfg.grad_accum)]
            st.step += 1
            with self.accelerator.autocast():
                metrics = self.algorithm.train_step(micro)
            if not math.isfinite(metrics.get("loss", 0.0)):
                raise FloatingPointError(f"loss is {metrics.get('loss')} at step {st.step}; lower trainer.lr "
                                         "or check the data")
            train_metrics = {f"train/{k}": v for k, v in metrics.items()}
            train_metrics["train/epoch"] = st.data.epoch + st.data.offset / len(st.data.features)
            self.registry.hook.alignkit_on_step_end(run=self.run, step=st.step, metrics=train_metrics)
            if tcfg.eval_steps and st.step % tcfg.eval_steps == 0 and st.step < tcfg.max_steps:
                train_metrics |= self.evaluate()
            if st.step % tcfg.log_steps == 0 or st.step == tcfg.max_steps:
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
        self._flush(st.step, final_eval | {"time/train_seconds": time.time() - t0})
        save_model(self.accelerator.unwrap_model(self.run.policy), self.run.tokenizer, self.run_dir / "final")
        self.logger.plot()
        self.logger.close()
        self.registry.hook.alignkit_on_train_end(run=self.run, metrics=dict(st.metrics))
        return RunResult(self.run_dir, dict(st.metrics), dict(self.logger.history))


def train(cfg: DictConfig, run_dir: Path | str | None = None, registry=None,
          step_callback: Callable[[int], None] | None = None) -> RunResult:
    """Run one training job from a composed config; returns the run folder and metrics."""
    trainer = Trainer(cfg, Path(run_dir) if run_dir else None, registry, step_callback)
    trainer.setup()
    return trainer.fit()
