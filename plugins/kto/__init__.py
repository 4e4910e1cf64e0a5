"""KTO: Kahneman-Tversky optimisation from unpaired desirable / undesirable examples
(Ethayarajh et al. 2024, arXiv:2402.01306).

Loss. For an example ``(x, y)`` with implicit reward ``r = log π(y|x) - log π_ref(y|x)``
(sums over the response tokens, EOS included) and the reference point ``z``::

    desirable:    λ_D · (1 - σ(β(r - z)))        undesirable:  λ_U · (1 - σ(β(z - r)))

averaged over the examples of the batch (``algo.beta``, ``algo.desirable_weight``,
``algo.undesirable_weight``). The paper advises ``λ_D·n_D / (λ_U·n_U)`` in ``[1, 4/3]``
when the data hold ``n_D`` desirable and ``n_U`` undesirable examples.

Reference point. ``z = max(0, mean_i [log π(y_j(i)|x_i) - log π_ref(y_j(i)|x_i)])``, detached: an
estimate of KL(π || π_ref) from *mismatched* pairs, as in the paper and TRL. Each example's
prompt ``x_i`` is joined with the completion of the next example of the batch (cyclically)
whose prompt differs, so both halves of a preference pair never estimate each other; a batch
whose examples all share one prompt uses the next example anyway. The mismatched sequences
are built in :meth:`KTO.collate` from the tokenised prompt and response (cut from the right to
``data.max_length``) and scored without gradient by the policy and the reference; during
training the estimate is pooled over all processes of a data-parallel run.

Data. KTO trains on examples of two shapes, mixed freely in one data set:

* **unpaired** ``{"prompt", "completion", "label"}`` (label True = desirable), read from
  records with fields ``prompt``, ``completion`` (a string or a message list) and ``label``
  (true/false, 1/0, or the strings "true"/"false"/"desirable"/"undesirable") by the data
  format ``unpaired`` that this plugin registers::

      data.sources.0.path=kto.jsonl data.sources.0.format=unpaired

  (``format: auto`` detects ``sft`` for such records, because it comes first; name the format.
  Only KTO reads this format: other algorithms stop with a one-line error.)
* **preference pairs** (any preference format, e.g. ``hh``): for training, each pair becomes
  one desirable (chosen) and one undesirable (rejected) example; pairs whose two responses are
  the same text are dropped and counted as ``identical_pair``.

To fit the data system (which converts every source to the algorithm's ``data_kind``),
``data_kind`` is ``preference`` and the ``unpaired`` format declares that kind too, so both
shapes reach :meth:`KTO.prepare_examples`, which splits training pairs into examples and keeps
held-out pairs whole. :meth:`KTO.tokenize` tokenises a pair like any preference pair and an
unpaired example like an SFT one (plus its label). :meth:`KTO.collate` turns any mix of both
into one batch layout (``trainer.batch_size`` counts features: unpaired examples in training,
pairs and unpaired examples in evaluation):

* ``input_ids``, ``attention_mask``, ``labels`` ``[N, T]``: prompt + completion, one row per example;
* ``desirable`` ``[N]`` bool;
* ``kl_input_ids``, ``kl_attention_mask``, ``kl_labels`` ``[N, T']``: the mismatched sequences;
* ``pair_chosen``, ``pair_rejected`` ``[P]`` int64: rows of the chosen and rejected example of
  each whole pair (held-out pairs; empty when there are none).

``eval/preference_accuracy``: on held-out preference pairs, the fraction whose chosen response
gets the higher implicit reward ``r`` (ties count half). The policy starts as the reference,
so every reward is 0 and the accuracy starts at exactly 0.5, as for DPO. Held-out unpaired
examples give ``eval/loss`` and ``eval/rewards/desirable`` / ``eval/rewards/undesirable``
(mean ``β·r`` of each group), but no preference accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit.api import (IGNORE, STATS, Algorithm, AlgorithmSpec, DataFormatSpec, FormatError, check, hookimpl,
                          pad_sequences, tokenize_example)

from .loss import kto_loss, kto_reference_point, pair_accuracy

_TRUE = {"true", "1", "yes", "desirable", "good"}
_FALSE = {"false", "0", "no", "undesirable", "bad"}


@dataclass
class KTOConfig:
    beta: float = 0.1  # higher = stay closer to the reference model
    desirable_weight: float = 1.0  # λ_D: weight of desirable examples' losses
    undesirable_weight: float = 1.0  # λ_U: weight of undesirable examples' losses (aim for λ_D·n_D / λ_U·n_U in [1, 4/3])

    def __post_init__(self) -> None:
        check(self, beta="> 0", desirable_weight="> 0", undesirable_weight="> 0")


# -- data: the ``unpaired`` record format -------------------------------------------------

class UnpairedExample(dict):
    """A normalised unpaired example; reading a preference field (another algorithm converting
    it) raises a :class:`FormatError` that the data loader reports as one line."""

    def __missing__(self, key):
        raise FormatError(f"unpaired examples (prompt/completion/label) have no {key!r}: only algo=kto trains on "
                          "them")


def _get(record: dict, fields: dict, name: str):
    col = fields.get(name, name)
    if record.get(col) is None:
        mapped = f" (mapped from {name!r})" if col != name else ""
        present = sorted(k for k, v in record.items() if v is not None)
        raise FormatError(f"missing field {col!r}{mapped}, the record has {present}")
    return record[col]


def _label(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FormatError(f"field 'label' must be true/false (or 1/0, 'desirable'/'undesirable'), got {value!r}")


def convert_unpaired(record: dict, fields: dict) -> dict:
    """One ``{"prompt", "completion", "label"}`` record -> ``{"prompt", "completion", "label": bool}``."""
    prompt = _get(record, fields, "prompt")
    if not isinstance(prompt, (str, list)):
        raise FormatError(f"prompt must be a string or a list of messages, got {type(prompt).__name__}")
    completion = _get(record, fields, "completion")
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        completion = completion[-1].get("content")
    if not isinstance(completion, str):
        raise FormatError(f"field 'completion' must be a string or a list of messages, got "
                          f"{type(completion).__name__}")
    return UnpairedExample(prompt=prompt, completion=completion, label=_label(_get(record, fields, "label")))


# -- the algorithm --------------------------------------------------------------------------

def _prompt_length(labels: list[int]) -> int:
    n = 0
    while n < len(labels) and labels[n] == IGNORE:
        n += 1
    return n


class KTO(Algorithm):
    data_kind = "preference"  # pairs and unpaired examples alike (see the module docstring)
    needs_reference = True

    # -- data ---------------------------------------------------------------------------------
    def prepare_examples(self, examples, split):
        if split != "train":  # held-out pairs stay whole: they give eval/preference_accuracy
            return examples
        out = []
        for ex in examples:
            if "completion" in ex:
                out.append(ex)
            elif str(ex["chosen"]).strip() == str(ex["rejected"]).strip():
                STATS["identical_pair"] += 1
            else:
                out.append({"prompt": ex["prompt"], "completion": ex["chosen"], "label": True})
                out.append({"prompt": ex["prompt"], "completion": ex["rejected"], "label": False})
        return out

    def tokenize(self, example):
        tok, data_cfg = self.run.tokenizer, self.run.cfg.data
        if "completion" not in example:
            return tokenize_example(example, "preference", tok, data_cfg)
        feats = tokenize_example({"prompt": example["prompt"], "completion": example["completion"]}, "sft", tok,
                                 data_cfg)
        if feats is not None:
            feats["desirable"] = bool(example["label"])
        return feats

    def collate(self, features, kind=None):
        """Any mix of unpaired and pair features -> the KTO batch (module docstring)."""
        ids, labels, desirable, chosen_rows, rejected_rows = [], [], [], [], []
        for f in features:
            if "chosen_input_ids" in f:
                chosen_rows.append(len(ids))
                rejected_rows.append(len(ids) + 1)
                ids += [f["chosen_input_ids"], f["rejected_input_ids"]]
                labels += [f["chosen_labels"], f["rejected_labels"]]
                desirable += [True, False]
            else:
                ids.append(f["input_ids"])
                labels.append(f["labels"])
                desirable.append(bool(f["desirable"]))
        kl_ids, kl_labels = self._mismatched(ids, labels)
        tok = self.run.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = {"desirable": torch.tensor(desirable, dtype=torch.bool),  # [N]
               "pair_chosen": torch.tensor(chosen_rows, dtype=torch.long),  # [P]
               "pair_rejected": torch.tensor(rejected_rows, dtype=torch.long)}  # [P]
        for prefix, seqs, labs in (("", ids, labels), ("kl_", kl_ids, kl_labels)):
            out[f"{prefix}input_ids"] = pad_sequences(seqs, pad_id)  # [N, T]
            out[f"{prefix}attention_mask"] = pad_sequences([[1] * len(s) for s in seqs], 0)  # [N, T]
            out[f"{prefix}labels"] = pad_sequences(labs, IGNORE)  # [N, T]
        return out

    def _mismatched(self, ids: list[list[int]], labels: list[list[int]]) -> tuple[list, list]:
        """Prompt of row i + completion of the next row (cyclically) whose prompt differs."""
        n_prompt = [_prompt_length(lab) for lab in labels]
        prompts = [tuple(s[:k]) for s, k in zip(ids, n_prompt)]
        max_len = self.run.cfg.data.max_length
        kl_ids, kl_labels = [], []
        N = len(ids)
        for i in range(N):
            j = next((k % N for k in range(i + 1, i + N) if prompts[k % N] != prompts[i]), (i + 1) % N)
            response = ids[j][n_prompt[j]:][: max(1, max_len - n_prompt[i])]
            kl_ids.append(list(prompts[i]) + list(response))
            kl_labels.append([IGNORE] * n_prompt[i] + list(response))
        return kl_ids, kl_labels

    # -- loss -------------------------------------------------------------------------------------
    def _rewards_and_z(self, batch, pool: bool):
        run = self.run
        seq = (batch["input_ids"], batch["attention_mask"], batch["labels"])
        kl_seq = (batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_labels"])
        policy = run.sequence_logprobs(run.policy, *seq)["sum"]  # [N]
        with torch.no_grad():
            policy_kl = run.sequence_logprobs(run.policy, *kl_seq)["sum"]  # [N]
            ref = run.sequence_logprobs(run.reference, *seq)["sum"]  # [N]
            ref_kl = run.sequence_logprobs(run.reference, *kl_seq)["sum"]  # [N]
            if pool and run.num_processes > 1:  # one reference point over the whole global batch
                total = run.all_reduce_sum((policy_kl - ref_kl).float().sum())
                count = run.all_reduce_sum(torch.tensor(float(policy_kl.numel()), device=total.device))
                z = kto_reference_point(total.reshape(1), torch.zeros(1, device=total.device), count)
            else:
                z = kto_reference_point(policy_kl, ref_kl)
        return policy, ref, z

    def _loss(self, batch, pool: bool):
        policy, ref, z = self._rewards_and_z(batch, pool)
        loss, metrics = kto_loss(policy, ref, batch["desirable"], z, beta=self.cfg.beta,
                                 desirable_weight=self.cfg.desirable_weight,
                                 undesirable_weight=self.cfg.undesirable_weight)
        acc = pair_accuracy(policy.detach() - ref, batch["pair_chosen"], batch["pair_rejected"])
        if acc is not None:
            metrics["rewards/accuracies"] = torch.tensor(acc)
        metrics["loss"] = loss.detach()
        return loss, metrics

    def compute_loss(self, batch):
        return self._loss(batch, pool=True)

    def evaluate(self, batch):
        # held-out shards may differ in batch count between processes: no collective here
        with torch.no_grad():
            loss, metrics = self._loss(batch, pool=False)
        out = {k: float(v) for k, v in metrics.items()}
        out["loss"] = float(loss)
        if "rewards/accuracies" in out:
            out["preference_accuracy"] = out["rewards/accuracies"]  # implicit reward r, ties = 0.5
        return out


@hookimpl
def alignkit_register_algorithms():
    return [AlgorithmSpec("kto", KTOConfig, KTO,
                          "KTO: prospect-theoretic loss on unpaired desirable/undesirable examples (or pairs)",
                          paper="Ethayarajh et al. 2024, arXiv:2402.01306")]


@hookimpl
def alignkit_register_data_formats():
    return [DataFormatSpec("unpaired", "preference", convert_unpaired, ("prompt", "completion", "label"),
                           "prompt/completion/label (true = desirable), unpaired examples for algo=kto")]
