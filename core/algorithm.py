"""The algorithm plugin API: what an algorithm declares and what it is given.

An algorithm is a class deriving from :class:`Algorithm`, announced by an
:class:`AlgorithmSpec` returned from the ``alignkit_register_algorithms`` hook::

    from dataclasses import dataclass
    from alignkit import hookimpl, Algorithm, AlgorithmSpec

    @dataclass
    class MyConfig:
        beta: float = 0.1  # strength of the thing

    class MyAlgo(Algorithm):
        data_kind = "preference"
        needs_reference = True

        def compute_loss(self, batch):
            ...
            return loss, {"loss": loss.detach()}

    @hookimpl
    def alignkit_register_algorithms():
        return [AlgorithmSpec("myalgo", MyConfig, MyAlgo, "one-line description")]

Batches by ``data_kind`` (built by :mod:`alignkit.data.collate`; ``labels`` are
*unshifted* token ids with -100 on prompt and padding; the causal shift happens
once, inside :func:`alignkit.modeling.token_logprobs`):

* ``sft``: ``input_ids``, ``attention_mask``, ``labels``: ``[B, T]``.
* ``preference``: ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels``
  and the same three for ``rejected_``, all ``[B, T]`` padded to one ``T`` (so the
  two halves can be concatenated into one ``[2B, T]`` forward); ``margin`` ``[B]``.
* ``ranked``: ``input_ids``, ``attention_mask``, ``labels`` ``[B, K, T]``;
  ``scores`` ``[B, K]`` (float); ``valid`` ``[B, K]`` (bool, False for list padding).
* ``prompt``: ``prompt_input_ids``, ``prompt_attention_mask`` ``[B, Tp]`` *left*
  padded for generation; ``prompts`` (list of str, the raw prompts) and
  ``references`` (list of str or None: a known good response when the data has one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

DATA_KINDS = ("sft", "preference", "ranked", "prompt")



@dataclass
class AlgorithmSpec:
    """What a plugin registers for one algorithm."""

    name: str  #: value of ``algo=`` on the command line
    config_class: type  #: a dataclass; stored in Hydra's ConfigStore as ``algo/<name>``
    algorithm_class: type  #: a subclass of :class:`Algorithm`
    description: str  #: one line, shown by ``alignkit list``
    paper: str = ""  #: citation shown by ``alignkit list``
    #: optional check of the algorithm's config (the dataclass instance) run when the config is
    #: composed, before any model or data is loaded; raise ``ValueError`` / ``UserError`` with a
    #: message naming the key. Single-field ranges belong in the dataclass (``check`` in ``__post_init__``).
    validate: Callable[[Any], None] | None = None


@dataclass
class RunContext:
    """Everything a run owns, handed to algorithms and lifecycle hooks.

    The trainer fills it; algorithms read models and call :meth:`backward` and
    :meth:`optimizer_step` rather than touching the optimiser themselves, so the
    loop keeps gradient accumulation, clipping, mixed precision and data
    parallelism in one place. Under several processes each algorithm instance
    sees its process's shard of every batch; files (samples, extra logs) are
    written by the main process only (:attr:`is_main_process`).
    """

    cfg: DictConfig  #: the whole resolved run config
    output_dir: Path
    tokenizer: Any = None
    policy: Any = None  #: the trained model (``transformers`` model, maybe wrapped by peft)
    reference: Any = None  #: :class:`alignkit.models.ReferenceModel` when the algorithm needs one
    accelerator: Any = None
    #: the run's plugin registry and trainer: the core's, not part of the plugin API (use the methods below)
    _registry: Any = field(default=None, repr=False)
    _trainer: Any = field(default=None, repr=False)
    extra: dict = field(default_factory=dict)  #: free space for plugins

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        """True on the process that writes files (process 0; always True in a one-process run)."""
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def process_index(self) -> int:
        """This process's rank (0 in a one-process run)."""
        return int(getattr(self.accelerator, "process_index", 0))

    @property
    def num_processes(self) -> int:
        return 1 if self.accelerator is None else self.accelerator.num_processes

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` run inside the data-parallel wrapper of the trained modules.

        Compute every loss that will be backpropagated (and, under FSDP, anything that reads the
        policy's weights: evaluation, generation) through it: DDP then averages the gradients and
        FSDP gathers the sharded weights. In a one-process run it simply calls ``fn``."""
        return self._trainer.forward(fn, *args, **kwargs)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all processes (itself in a one-process run), for statistics an
        algorithm defines over the whole batch (whitening, adaptive KL)."""
        if self.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.clone(), reduction="sum")

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (scaled for mixed precision when needed)."""
        self._trainer.backward(loss)

    def optimizer_step(self) -> dict[str, float]:
        """Clip gradients, step optimiser and LR schedule, zero gradients.
        Returns ``{"grad_norm": ..., "lr": ...}``."""
        return self._trainer.optimizer_step()

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Write extra metrics (names with a ``/``, e.g. ``rollout/score``)."""
        self._trainer.log_metrics(metrics, step=step)

    def reward_function(self, name: str) -> Callable[..., list[float]]:
        return self._registry.reward_function(name)

    # -- log-probs that honour model.fused_logprobs -------------------------------
    @property
    def fused(self) -> bool:
        """``model.fused_logprobs``: log-probs from the fused lm_head kernel (no ``[B, T, V]`` logits)."""
        return bool(self.cfg.model.fused_logprobs)

    def token_logprobs(self, model: Any, input_ids, attention_mask, labels, **kw):
        """:func:`alignkit.modeling.token_logprobs` of ``model`` (the policy or :attr:`reference`):
        ``(logp [B, T-1], mask [B, T-1][, entropy])``, fused as the run's config says."""
        from alignkit import modeling

        kw.setdefault("fused", self.fused)
        if model is self.reference:
            return model.token_logprobs(input_ids, attention_mask, labels, **kw)
        return modeling.token_logprobs(model, input_ids, attention_mask, labels, **kw)

    def sequence_logprobs(self, model: Any, input_ids, attention_mask, labels, **kw) -> dict:
        """:func:`alignkit.modeling.sequence_logprobs` (``sum``, ``mean``, ``ntokens`` ``[B]``, ...) of
        ``model`` (the policy or :attr:`reference`), fused as the run's config says."""
        from alignkit import modeling

        kw.setdefault("fused", self.fused)
        if model is self.reference:
            return model.sequence_logprobs(input_ids, attention_mask, labels, **kw)
        return modeling.sequence_logprobs(model, input_ids, attention_mask, labels, **kw)

    def packed_pairs(self, batch: dict):
        """The batch's pairs packed one row per pair (:func:`alignkit.pairs.pack_pairs`), made once per batch,
        or ``None`` when ``model.shared_prompt`` is off, the attention cannot take a 4-D mask, or the pairs
        do not share their prompts."""
        if not self.cfg.model.shared_prompt or self.cfg.model.attn_implementation not in ("eager", "sdpa"):
            return None
        if "_packed" not in batch:
            from alignkit.pairs import pack_pairs

            batch["_packed"] = pack_pairs(batch)
        return batch["_packed"]

    def pair_logprobs(self, model: Any, batch: dict, **kw) -> dict[str, tuple]:
        """Sequence log-probs of a ``preference`` batch's chosen and rejected responses:
        ``{"sum": (chosen [B], rejected [B]), "mean": (...), "ntokens": (...)}``. One packed forward per
        pair when ``model.shared_prompt`` is on (:mod:`alignkit.pairs`), else one ``[2B, T]`` forward; the
        precomputed table when the reference was precomputed (``trainer.precompute_reference``)."""
        import torch

        if model is self.reference and self.reference.precomputed:
            return self.reference.pair_logprobs(batch)
        packed = self.packed_pairs(batch) if set(kw) <= {"temperature"} else None
        if packed is not None:
            from alignkit.pairs import packed_pair_logprobs

            if model is self.reference:
                with torch.no_grad(), model.active():
                    return packed_pair_logprobs(model.model, packed, **kw)
            return packed_pair_logprobs(model, packed, **kw)
        ids, mask, labels = stacked_pairs(batch, "input_ids", "attention_mask", "labels")  # [2B, T] each
        out = self.sequence_logprobs(model, ids, mask, labels, **kw)
        return {k: tuple(out[k].chunk(2)) for k in ("sum", "mean", "ntokens")}

    def pair_rewards(self, model: Any, batch: dict) -> tuple:
        """Scalar rewards ``(chosen [B], rejected [B])`` of a sequence classifier on a ``preference``
        batch, packed one row per pair when ``model.shared_prompt`` is on."""
        from alignkit import modeling

        packed = self.packed_pairs(batch)
        if packed is not None:
            from alignkit.pairs import packed_pair_rewards

            return packed_pair_rewards(model, packed)
        ids, mask = stacked_pairs(batch, "input_ids", "attention_mask")  # [2B, T] each
        return tuple(modeling.reward_scores(model, ids, mask).chunk(2))


def stacked_pairs(batch: dict, *fields: str) -> list:
    """``torch.cat([batch["chosen_<f>"], batch["rejected_<f>"]])`` for each field ``f``: a ``preference``
    batch's chosen rows ``[B, T]`` over its rejected rows, ``[2B, T]`` (the unpacked forward)."""
    import torch

    return [torch.cat([batch[f"chosen_{f}"], batch[f"rejected_{f}"]]) for f in fields]


class Algorithm:
    """Base class for algorithms. Subclasses set the class attributes and
    implement :meth:`compute_loss`; online methods override :meth:`train_step`.
    """

    #: which batches the algorithm trains on (see module docstring)
    data_kind: ClassVar[str] = "preference"
    #: which batches it is evaluated on; defaults to ``data_kind``
    eval_data_kind: ClassVar[str | None] = None
    #: ``causal_lm`` (AutoModelForCausalLM) or ``reward`` (scalar-head sequence classifier)
    model_kind: ClassVar[str] = "causal_lm"
    #: whether the trainer should build a frozen reference model
    needs_reference: ClassVar[bool] = False

    def __init__(self, cfg: Any, run: RunContext):
        self.cfg = cfg  #: the algorithm's config dataclass instance
        self.run = run

    # -- hooks the trainer calls ------------------------------------------------
    def setup(self) -> None:
        """Called once after the models and data exist and before the optimiser is built, so
        modules made here can be returned by :meth:`extra_modules` and trained."""

    def prepare_examples(self, examples: list[dict], split: str) -> list[dict]:
        """Called once per split (``train`` / ``eval``) with the normalised examples,
        before tokenisation; returns the examples to use (e.g. ranked lists sampled
        online). Default: unchanged."""
        return examples

    def tokenize(self, example: dict) -> dict | None:
        """Turn one normalised example into token ids (``None`` drops it).
        Default: :func:`alignkit.data.tokenize.tokenize_example` for ``data_kind``."""
        from alignkit.data.tokenize import tokenize_example

        return tokenize_example(example, self.data_kind, self.run.tokenizer, self.run.cfg.data)

    def collate(self, features: list[dict], kind: str | None = None) -> dict:
        """Pad tokenised examples into a batch (see module docstring)."""
        from alignkit.data.collate import collate

        return collate(features, kind or self.data_kind, self.run.tokenizer)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return ``(loss, metrics)`` for one micro-batch. Metric values may be
        0-dim tensors or floats; they are averaged over micro-batches."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss")

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        """One optimiser step over ``micro_batches`` (gradient accumulation).
        Online algorithms override this to roll out, score and run several
        optimiser steps through :meth:`RunContext.optimizer_step`."""
        sums: dict[str, float] = {}
        n = len(micro_batches)
        for batch in micro_batches:
            loss, metrics = self.run.forward(self.compute_loss, batch)
            self.run.backward(loss / n)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / n
        sums.update(self.run.optimizer_step())
        return sums

    def end_step(self) -> None:
        """Called by the trainer after every :meth:`train_step` (online algorithms advance their
        iteration here, so a subclass's ``train_step`` never has to)."""

    def evaluate(self, batch: dict) -> dict[str, float]:
        """Metrics of one held-out batch (means over the batch); the trainer
        averages them over batches weighted by batch size."""
        import torch

        with torch.no_grad():
            loss, metrics = self.compute_loss(batch)
        out = {k: float(v) for k, v in metrics.items()}
        out["loss"] = float(loss)
        return out

    def optimizer_steps_per_step(self) -> int:
        """Optimiser steps one :meth:`train_step` takes (PPO: epochs x minibatches);
        the LR schedule spans ``trainer.max_steps`` times this."""
        return 1

    def extra_modules(self) -> list:
        """Modules besides the policy whose parameters the optimiser trains (e.g. a value
        head built in :meth:`setup`); called after :meth:`setup`; moved to the run's device."""
        return []

    def state_dict(self) -> dict:
        """Algorithm state to checkpoint (e.g. an adaptive KL coefficient)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
