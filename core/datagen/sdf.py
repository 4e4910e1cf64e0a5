"""``alignkit data sdf``: self-distillation with feedback (Baize v2: Xu et al. 2023, arXiv:2304.01196).

For every assistant turn of every dialogue of ``input`` (``turns=all``; ``turns=last``: the
last one only), the step's model samples ``num_samples`` new replies to the conversation
before that turn; a judge model or a reward model scores them (``scorer=judge|reward``, as
in ``score`` and ``pairs``) and they are ranked best first, exactly as ``pairs`` ranks a
prompt's samples (empty, unscored and repeated replies dropped and counted; with
``include_original=true`` the dialogue's own reply is ranked with them). Then:

* ``output`` gets the best reply of each turn, ``{"prompt", "completion", "score",
  "dialogue", "turn"}`` (the ``sft`` format: SFT data; ``dialogue`` is the dialogue's index
  in ``input`` order, ``turn`` the assistant turn's, from 0);
* ``preference_output`` (optional) gets the best against the worst reply
  (``pairing=best_worst``, or every two with ``pairing=all``) when their scores differ by
  more than ``min_gap``: the ``preference`` format of ``algo=dpo``;
* ``ranked_output`` (optional) gets the ranked lists (``ranked``: PRO, RRHF).

With ``chain_of_thought`` the replies are asked for reasoning and a final ``Answer:`` line, as in
``pairs`` (the best row's ``answer``; ``chosen_answer`` / ``rejected_answer``; ``answers``).

``input`` is any alignkit data format with responses: ``self-chat``'s ``messages`` rows,
``sharegpt``, ``oasst``, ``sft``, ``alpaca``, ``dolly``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from alignkit.config.schema import check
from alignkit.datagen.io import to_examples
from alignkit.datagen.pairs import PairsConfig, best_of_n, check_side_output, pairs_and_list
from alignkit.datagen.scoring import build_scorer
from alignkit.errors import UserError

__all__ = ["SdfConfig", "run_sdf", "assistant_turns"]


@dataclass
class SdfConfig(PairsConfig):
    turns: str = "all"  #: all | last: the assistant turns that get new replies
    include_original: bool = False  #: rank each turn's own reply with the samples
    preference_output: Optional[str] = None  #: also write best-vs-worst pairs (DPO) to this .jsonl/.parquet

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, turns="one of all|last")


def assistant_turns(example: dict, which: str) -> list[tuple[int, list[dict], str]]:
    """``(turn, context messages, reply)`` of each assistant turn of an ``sft`` example (its prompt and
    completion as one conversation); ``which="last"``: the last one only."""
    prompt = example["prompt"]
    convo = ([{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)) + [
        {"role": "assistant", "content": example["completion"]}]
    places = [k for k, m in enumerate(convo) if m["role"] == "assistant" and any(
        c["role"] == "user" for c in convo[:k])]
    found = [(t, convo[:k], convo[k]["content"]) for t, k in enumerate(places)]
    return found[-1:] if which == "last" else found


def run_sdf(cfg: Any, step: Any) -> None:
    for key in ("preference_output", "ranked_output"):
        check_side_output(cfg.get(key), key, bool(cfg.overwrite))
    rows = step.read(str(cfg.input))
    examples = to_examples(rows, "sft", str(cfg.format), dict(cfg.fields or {}), step.formats(), step.counts)
    items = [(d, t, context, reply) for d, ex in enumerate(examples) for t, context, reply in
             assistant_turns(ex, str(cfg.turns))]
    if not items:
        raise UserError(f"{rows.path}: no assistant turn after a user turn in {len(examples)} dialogues",
                        "give sdf dialogues (messages, sharegpt, oasst, sft, ...), e.g. self-chat's output")
    policy = step.load_model()
    scorer = build_scorer(cfg, step, policy)
    done = int(step.start().get("done", 0))
    extra = [[reply] for *_, reply in items] if cfg.include_original else None
    bar = step.progress(len(items), done, "turn")
    for start, ranked_batch in best_of_n(cfg, step, [context for _, _, context, _ in items], policy, scorer, done,
                                         extra):
        best, pairs, lists = [], [], []
        for (d, t, _, _), (context, best_first, answers) in zip(items[start:], ranked_batch):
            if not best_first:
                step.counts["turns_without_reply"] += 1
                continue
            top = {"prompt": context, "completion": best_first[0][0], "score": best_first[0][1], "dialogue": d,
                   "turn": t}
            best.append({**top, "answer": answers[top["completion"]]} if answers else top)
            made, listed = pairs_and_list(context, best_first, answers, cfg)
            step.counts["turns_without_pair"] += not made
            pairs += made
            lists += [listed] if listed else []
        step.counts["best"] += len(best)
        step.counts["pairs"] += len(pairs)
        step.counts["ranked_lists"] += len(lists)
        step.commit_batch(start + len(ranked_batch), {"rows": best, "pairs": pairs, "ranked": lists})
        bar.update(len(ranked_batch))
    bar.close()
    step.counts.update({"dialogues": len(examples), "turns": len(items)})
    step.write(step.work.rows("rows"))
    if cfg.preference_output:
        step.write(step.work.rows("pairs"), path=str(cfg.preference_output), name="preference_output")
    if cfg.ranked_output:
        step.write(step.work.rows("ranked"), path=str(cfg.ranked_output), name="ranked_output")
