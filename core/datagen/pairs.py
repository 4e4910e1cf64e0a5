"""``alignkit data pairs``: best-of-n preference pairs and ranked lists from a policy's own samples.

For each prompt of ``input`` (any alignkit data format: its prompts are used), sample
``num_samples`` responses with the step's model, score them (``scorer=judge|reward``, see
:mod:`alignkit.datagen.scoring`) and write:

* ``output``: ``{"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}``
  rows, the ``preference`` format ``algo=dpo`` (and ``rm``, ``coh``) trains on as is:
  ``pairing=best_worst`` pairs the best with the worst response, ``pairing=all`` every two
  responses whose scores differ by more than ``min_gap``;
* ``ranked_output`` (optional): ``{"prompt", "responses", "scores"}`` lists sorted best
  first, the ``ranked`` format of ``algo=pro`` / ``algo=rrhf``. Responses tied with a
  better one are dropped (``keep_ties=true`` keeps them; PRO then needs
  ``algo.constant_temperature=true``).

Before pairing, empty responses, responses the scorer could not score (a judge answer that
never parsed) and repeats of a response already in the list are dropped and counted. With
``chain_of_thought`` each prompt asks for reasoning and a final ``Answer:`` line; the answers are
extracted into ``chosen_answer`` / ``rejected_answer`` (``answers`` in ranked lists), and
responses without one are dropped (``no_final_answer``).
Sampling and scoring are those of the online algorithms
(:func:`alignkit.ranking.lists.sample_ranked_lists`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, NamedTuple, Optional

from omegaconf import MISSING

from alignkit.config.schema import check
from alignkit.datagen.cot import cot_prompt, extract_answer
from alignkit.datagen.io import output_suffix, to_examples
from alignkit.datagen.scoring import ScoringConfig, build_scorer
from alignkit.datagen.spec import ModelStepConfig
from alignkit.datagen.templates import COT_SUFFIX
from alignkit.errors import UserError
from alignkit.rollout.config import SamplingConfig, sampling_kwargs

__all__ = ["PairsConfig", "run_pairs", "clean_list", "make_pairs", "ranked_list", "best_of_n", "check_side_output",
           "with_answers", "Sampled"]


@dataclass
class PairsConfig(ScoringConfig, ModelStepConfig):
    input: str = MISSING  #: prompts: any alignkit data format (format=auto detects it)
    format: str = "auto"  #: data format of `input` (alignkit list shows them)
    fields: Dict[str, str] = field(default_factory=dict)  #: normalised field -> column name in `input`
    num_samples: int = 4  #: responses sampled per prompt (best-of-n)
    pairing: str = "best_worst"  #: best_worst | all (every two responses with different scores)
    min_gap: float = 0.0  #: a pair's scores must differ by more than this
    ranked_output: Optional[str] = None  #: also write ranked lists (PRO, RRHF) to this .jsonl/.parquet
    keep_ties: bool = False  #: keep responses tied with a better one in ranked lists
    generation: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64, temperature=1.0))
    chain_of_thought: bool = False  #: ask for reasoning, then a final "Answer:" line (into *answer fields)
    cot_suffix: str = COT_SUFFIX  #: appended to each prompt (its last user message) with chain_of_thought=true
    cot_require_answer: bool = True  #: with chain_of_thought: drop responses without a final answer line

    def __post_init__(self) -> None:
        ModelStepConfig.__post_init__(self)
        ScoringConfig.__post_init__(self)
        check(self, num_samples=">= 2", pairing="one of best_worst|all", min_gap=">= 0")


def clean_list(responses: list[str], scores: list[float], counts: Any) -> list[tuple[str, float]]:
    """``(response, score)`` sorted best first (stable: ties keep sampling order), without empty,
    unscored (NaN) and repeated responses; each drop counted."""
    seen, kept = set(), []
    for r, s in zip(responses, scores):
        if not r.strip():
            counts["empty_response"] += 1
        elif s != s:  # NaN
            counts["unscored_response"] += 1
        elif r in seen:
            counts["repeated_response"] += 1
        else:
            seen.add(r)
            kept.append((r, float(s)))
    return sorted(kept, key=lambda rs: -rs[1])


def make_pairs(prompt: Any, ranked: list[tuple[str, float]], pairing: str, min_gap: float) -> list[dict]:
    """Preference rows from a cleaned, best-first list (see the module docstring)."""
    if len(ranked) < 2:
        return []
    candidates = [(0, len(ranked) - 1)] if pairing == "best_worst" else [
        (i, j) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]
    return [{"prompt": prompt, "chosen": ranked[i][0], "rejected": ranked[j][0], "chosen_score": ranked[i][1],
             "rejected_score": ranked[j][1]} for i, j in candidates if ranked[i][1] - ranked[j][1] > min_gap]


def ranked_list(prompt: Any, ranked: list[tuple[str, float]], keep_ties: bool) -> dict | None:
    """A ``ranked`` row (best first), ties with a better response dropped unless ``keep_ties``;
    None when fewer than two responses remain."""
    kept = ranked if keep_ties else [rs for k, rs in enumerate(ranked) if k == 0 or rs[1] != ranked[k - 1][1]]
    if len(kept) < 2:
        return None
    return {"prompt": prompt, "responses": [r for r, _ in kept], "scores": [s for _, s in kept]}


def check_side_output(path: Any, key: str, overwrite: bool) -> None:
    """Refuse a side output (``ranked_output=`` ...) that is not .jsonl/.parquet, or that exists without
    ``overwrite``."""
    if path:
        from pathlib import Path

        output_suffix(str(path), key)
        if Path(str(path)).exists() and not overwrite:
            raise UserError(f"{key} {path} already exists",
                            f"pass overwrite=true to replace it, or choose another {key}=")


class Sampled(NamedTuple):
    """One prompt's samples from :func:`best_of_n`."""

    prompt: Any  #: as the model saw it (with ``cot_suffix`` under ``chain_of_thought``)
    best_first: list  #: ``(response, score)`` by :func:`clean_list`
    answers: dict  #: response -> its final answer (``chain_of_thought``; empty otherwise)


def best_of_n(cfg: Any, step: Any, prompts: list, policy: tuple[Any, Any], scorer: Any, done: int,
              extra_responses: list | None = None) -> Iterator[tuple[int, list[Sampled]]]:
    """Sample ``cfg.num_samples`` responses for each prompt from ``done`` on, ``cfg.batch_size`` prompts a
    batch (each seeded from ``cfg.seed`` and its index), score them and yield ``(start, [Sampled, ...])``
    per batch, each list cleaned by :func:`clean_list` (drops counted in ``step.counts``).
    ``extra_responses[i]``: existing responses of prompt ``i`` ranked with the samples. With
    ``cfg.chain_of_thought`` the prompts ask for reasoning and a final answer line, each response's
    answer is extracted (:func:`alignkit.datagen.cot.extract_answer`) and, with ``cot_require_answer``,
    responses without one are dropped (``no_final_answer``). The caller commits each batch
    (``step.commit_batch(start + len(items), ...)``) before the next."""
    import torch

    from alignkit.ranking.lists import sample_ranked_lists

    cot = bool(cfg.chain_of_thought)
    if cot:
        prompts = [cot_prompt(p, str(cfg.cot_suffix)) for p in prompts]
    data_cfg = step.tokenization()
    bs = int(cfg.batch_size)
    for start in range(done, len(prompts), bs):
        torch.manual_seed(step.seed(start // bs))
        extra = extra_responses[start:start + bs] if extra_responses is not None else None
        lists = sample_ranked_lists(prompts[start:start + bs], *policy, data_cfg, scorer, k=int(cfg.num_samples),
                                    sampling=sampling_kwargs(cfg.generation), extra_responses=extra, batch_size=bs,
                                    missing_eos_penalty=float(cfg.reward.missing_eos_penalty))
        out = []
        for item in lists:
            best_first = clean_list(item["responses"], item["scores"], step.counts)
            answers = {r: extract_answer(r)[1] for r, _ in best_first} if cot else {}
            if cot and cfg.cot_require_answer:
                step.counts["no_final_answer"] += sum(answers[r] is None for r, _ in best_first)
                best_first = [(r, sc) for r, sc in best_first if answers[r] is not None]
            out.append(Sampled(item["prompt"], best_first, answers))
        yield start, out


def with_answers(row: dict, answers: dict) -> dict:
    """A pair or ranked row with the final answers of its responses (chain-of-thought runs)."""
    if not answers:
        return row
    if "responses" in row:
        return {**row, "answers": [answers[r] for r in row["responses"]]}
    return {**row, "chosen_answer": answers[row["chosen"]], "rejected_answer": answers[row["rejected"]]}


def pairs_and_list(prompt: Any, best_first: list[tuple[str, float]], answers: dict,
                   cfg: Any) -> tuple[list[dict], dict | None]:
    """One prompt's preference pairs and ranked list from its scored completions (best first), each row with
    the completions' extracted answers; ``cfg`` gives ``pairing``, ``min_gap`` and ``keep_ties``."""
    made = make_pairs(prompt, best_first, str(cfg.pairing), float(cfg.min_gap))
    listed = ranked_list(prompt, best_first, bool(cfg.keep_ties))
    return [with_answers(p, answers) for p in made], (with_answers(listed, answers) if listed else None)


def run_pairs(cfg: Any, step: Any) -> None:
    check_side_output(cfg.ranked_output, "ranked_output", bool(cfg.overwrite))
    rows = step.read(str(cfg.input))
    prompts = [ex["prompt"] for ex in to_examples(rows, "prompt", str(cfg.format), dict(cfg.fields or {}),
                                                  step.formats(), step.counts)]
    policy = step.load_model()
    scorer = build_scorer(cfg, step, policy)
    done = int(step.start().get("done", 0))
    bar = step.progress(len(prompts), done, "prompt")
    for start, items in best_of_n(cfg, step, prompts, policy, scorer, done):
        pairs, ranked = [], []
        for prompt, best_first, answers in items:
            made, listed = pairs_and_list(prompt, best_first, answers, cfg)
            step.counts["prompts_without_pair"] += not made
            pairs += made
            ranked += [listed] if listed else []
        step.counts["pairs"] += len(pairs)
        step.counts["ranked_lists"] += len(ranked)
        step.commit_batch(start + len(items), {"rows": pairs, "ranked": ranked})
        bar.update(len(items))
    bar.close()
    step.counts["prompts"] = len(prompts)
    if step.counts["pairs"] == 0:
        raise UserError(f"pairs made no pair from {len(prompts)} prompts x {cfg.num_samples} samples "
                        f"(empty {step.counts['empty_response']}, unscored {step.counts['unscored_response']}, "
                        f"repeated {step.counts['repeated_response']})",
                        "sample more or longer responses (num_samples, generation.max_new_tokens), raise "
                        "generation.temperature, or use a scorer that separates them (scorer=reward)")
    step.write(step.work.rows("rows"))
    if cfg.ranked_output:
        step.write(step.work.rows("ranked"), path=str(cfg.ranked_output), name="ranked_output")
