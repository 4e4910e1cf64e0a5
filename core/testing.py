"""Test helpers for plugin authors: run an algorithm's code without the trainer.

::

    from alignkit.testing import fake_batch, make_algorithm

    def test_my_loss_backpropagates():
        algo = make_algorithm(MY_SPEC)                 # tiny model on CPU, config from MY_SPEC
        batch = fake_batch(algo.data_kind, tokenizer=algo.run.tokenizer)
        loss, metrics = algo.run.forward(algo.compute_loss, batch)
        algo.run.backward(loss)
        algo.run.optimizer_step()

* :func:`make_run` composes a real run config (``model=tiny`` by default, any overrides) and
  returns a :class:`~alignkit.api.RunContext` with the tokenizer, the policy, a frozen reference
  when the algorithm needs one, on CPU, in one process. ``forward`` calls the function,
  ``backward`` is ``loss.backward()``, ``optimizer_step`` is a plain AdamW step at
  ``trainer.lr`` (no clipping, no schedule, no accumulation), ``log`` appends ``(step,
  metrics)`` to ``run.extra["logged"]`` and ``all_reduce_sum`` returns its argument. It is a
  stand-in, not the trainer: lifecycle hooks are not called and nothing is written to disk.
* :func:`make_algorithm` builds an algorithm from its :class:`~alignkit.api.AlgorithmSpec` (or a
  registered name) on such a run and calls its ``setup``; the spec need not be installed.
* :func:`fake_batch` makes a small valid batch of any data kind (``sft``, ``preference``,
  ``ranked``, ``prompt``) in exactly the layouts the trainer produces (made-up text tokenised
  and collated by the same code), with padding, ``[B, seq_len]`` per sequence tensor.
"""
from __future__ import annotations

import dataclasses
import random
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch

__all__ = ["make_run", "make_algorithm", "fake_batch"]

_WORDS = ("the cat sat on a warm mat while rain fell over quiet hills and small boats drifted past old "
          "stone walls near the river where children played with kites in the bright morning light").split()


class _MiniTrainer:
    """What :class:`RunContext` asks of the trainer, for one process on CPU."""

    def __init__(self, run, lr: float, weight_decay: float):
        self.run = run
        self.lr, self.weight_decay = lr, weight_decay
        self.modules: list[torch.nn.Module] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.step = 0

    def forward(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self) -> dict[str, float]:
        params = [p for m in self.modules for p in m.parameters() if p.requires_grad]
        if self.optimizer is None:  # built at the first step, so modules made in setup() are trained too
            self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"grad_norm": norm, "lr": self.lr}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.extra.setdefault("logged", []).append(
            (self.step if step is None else step, {k: float(v) for k, v in metrics.items()}))


def _resolve(algo: Any, registry: Any):
    """``(AlgorithmSpec or None, registry holding it)``: a registered name or a spec of its own."""
    from alignkit.algorithm import AlgorithmSpec

    if algo is None or isinstance(algo, str):
        return (registry.algorithm(algo) if algo else None), registry
    if not isinstance(algo, AlgorithmSpec):
        raise TypeError(f"algo must be an algorithm name or an AlgorithmSpec, got {type(algo).__name__}")
    if registry.algorithms.get(algo.name, (None,))[0] is algo:
        return algo, registry
    # a spec not (or differently) installed: a copy of the registry with this spec under its name
    reg = dataclasses.replace(registry, **{f.name: dict(getattr(registry, f.name)) for f in dataclasses.fields(registry)
                                           if isinstance(getattr(registry, f.name), dict)})
    reg.algorithms[algo.name] = (algo, "alignkit.testing")
    return algo, reg


def make_run(overrides: Sequence[str] = (), *, algo: Any = None, model: str = "tiny", registry: Any = None,
             reference: bool | None = None, seed: int = 0, output_dir: str | Path | None = None):
    """A :class:`~alignkit.api.RunContext` for tests (see the module docstring).

    ``algo``: an algorithm name or an :class:`~alignkit.api.AlgorithmSpec` (composed as
    ``algo=<name>``; its ``model_kind`` picks the model and its ``needs_reference`` the reference).
    ``overrides``: command-line style (``"algo.beta=0.5"``, ``"model.fused_logprobs=false"``),
    checked as on the command line. ``reference``: force a reference model on or off.
    ``seed`` seeds torch before the model is built (same seed, same weights)."""
    from alignkit.algorithm import RunContext
    from alignkit.config import compose as _compose_mod
    from alignkit.models import ReferenceModel, build_model, build_tokenizer
    from alignkit.registry import registry_for

    registry = registry or registry_for(overrides)
    spec, registry = _resolve(algo, registry)
    args = [f"model={model}"] + ([f"algo={spec.name}"] if spec else []) + list(overrides)
    cfg = _compose_mod.compose_config(args, registry=registry)
    if spec is None:
        spec = registry.algorithm(cfg.algo.name)
    cls = spec.algorithm_class
    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="alignkit-test-"))
    run = RunContext(cfg=cfg, output_dir=out, _registry=registry,
                     accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True,
                                                 num_processes=1))
    run._trainer = _MiniTrainer(run, float(cfg.trainer.lr), float(cfg.trainer.weight_decay))
    torch.manual_seed(seed)
    run.tokenizer = build_tokenizer(cfg.model)
    run.policy = build_model(cfg.model, kind=cls.model_kind, tokenizer=run.tokenizer)
    run.policy.train()
    run._trainer.modules.append(run.policy)
    if cls.needs_reference if reference is None else reference:
        run.reference = ReferenceModel(run.policy)
    return run


def make_algorithm(spec_or_name: Any, overrides: Sequence[str] = (), *, run: Any = None, **kw):
    """The algorithm of ``spec_or_name`` (an :class:`~alignkit.api.AlgorithmSpec` or a registered
    name) on :func:`make_run` ``(overrides, algo=spec_or_name, **kw)`` (or on ``run``), with its
    typed config (``algo.cfg``) and ``setup()`` called; modules from ``extra_modules()`` are
    trained by ``run.optimizer_step()``."""
    from omegaconf import OmegaConf

    run = run or make_run(overrides, algo=spec_or_name, **kw)
    spec, _ = _resolve(spec_or_name, run._registry)
    node = run.cfg.algo
    typed = OmegaConf.to_object(node) if dataclasses.is_dataclass(OmegaConf.get_type(node)) else node
    algorithm = spec.algorithm_class(typed, run)
    algorithm.setup()
    run._trainer.modules.extend(algorithm.extra_modules())
    return algorithm


def _text(rng: random.Random, n: int, first: str | None = None) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    if first is not None:
        words[0] = first
    return " ".join(words)


def _example(kind: str, i: int, rng: random.Random) -> dict:
    """Made-up normalised example ``i``; example 0 is long (truncated to ``seq_len``), the
    others short, so the batch has both truncation and padding."""
    n_prompt, n_resp = (40, 40) if i == 0 else (2 + i % 3, 1 + i % 2)
    prompt = _text(rng, n_prompt) + "?"
    if kind == "sft":
        return {"prompt": prompt, "completion": _text(rng, n_resp)}
    if kind == "preference":  # responses differ in their first word, so truncation keeps them apart
        return {"prompt": prompt, "chosen": _text(rng, n_resp, "yes"), "rejected": _text(rng, n_resp, "no")}
    if kind == "ranked":
        k = 3 if i % 2 == 0 else 2  # a shorter list in odd rows: list padding (valid False)
        firsts = ("best", "good", "bad")[:k]
        return {"prompt": prompt, "responses": [_text(rng, n_resp, f) for f in firsts],
                "scores": [float(k - j) for j in range(k)]}
    if kind == "prompt":
        return {"prompt": prompt, "reference": _text(rng, n_resp) if i % 2 == 0 else None}
    raise ValueError(f"unknown data kind {kind!r}; one of sft, preference, ranked, prompt")


def fake_batch(kind: str, batch_size: int = 2, seq_len: int = 12, tokenizer: Any = None, seed: int = 0) -> dict:
    """A valid batch of ``kind`` as the trainer gives it to ``compute_loss`` / ``train_step``:
    ``batch_size`` made-up examples tokenised (prompt at most ``seq_len // 2`` tokens, whole
    sequences at most ``seq_len``) and collated. Sequence tensors are ``[B, seq_len]``
    (``[B, K, seq_len]`` for ``ranked``, ``[B, <= seq_len // 2]`` for ``prompt``); the first
    example is truncated to full length, the others are padded. ``tokenizer``: the run's
    (``run.tokenizer``); default the tiny model's."""
    from alignkit.data.collate import collate
    from alignkit.data.tokenize import tokenize_example

    if seq_len < 4:
        raise ValueError("fake_batch needs seq_len >= 4")
    if tokenizer is None:
        from alignkit.models.tiny import load_tiny_tokenizer

        tokenizer = load_tiny_tokenizer()
    data_cfg = SimpleNamespace(max_length=seq_len, max_prompt_length=seq_len // 2, truncation="truncate")
    rng = random.Random(seed)
    feats = []
    for i in range(batch_size):
        f = tokenize_example(_example(kind, i, rng), kind, tokenizer, data_cfg)
        if f is None:
            raise RuntimeError(f"fake_batch: example {i} of kind {kind!r} was dropped")
        feats.append(f)
    return collate(feats, kind, tokenizer)
