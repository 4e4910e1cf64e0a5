"""``alignkit data self-instruct``: new instructions from seed tasks (Wang et al. 2023, arXiv:2212.10560).

Each round builds ``batch_size`` proposal prompts, each listing ``num_examples`` tasks
sampled from the pool (``seed_examples`` of them from the seed tasks, the rest from tasks
generated so far, as the paper's 6 + 2) and asking for the next one; the model's answers
are parsed into an instruction and an optional input and filtered:

* ``empty``: nothing parsed; ``too_short`` / ``too_long``: fewer than ``min_words`` or
  more than ``max_words`` words;
* ``keyword``: names something a text model cannot do (``blocklist``: image, draw, ...);
* ``format``: starts with punctuation, a non-ASCII character or an ``Input:`` / ``Output:`` label;
* ``similar``: ROUGE-L F1 with any pool instruction (seeds and accepted ones, this
  round's included) is ``>= rouge_threshold`` (kept only when below it, as in the paper).

Survivors join the pool; with ``generate_outputs`` the model then answers each one
(``chain_of_thought`` asks it to reason step by step, then write a final ``Answer:`` line,
which is extracted into the ``answer`` column, the rest into ``reasoning``; a task without
one is dropped, ``no_final_answer``) and a task whose answer is empty is dropped
(``empty_output``). Rounds repeat until ``target`` tasks or
``max_rounds``. Output rows are ``{"instruction", "input", "output", "similarity"}``
(the ``alpaca`` data format: ``algo=sft`` trains on them as they are).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

from omegaconf import MISSING

from alignkit.config.schema import check
from alignkit.datagen.cot import cot_prompt, extract_answer
from alignkit.datagen.io import Rows, require_fields
from alignkit.datagen.similarity import RougePool
from alignkit.datagen.spec import ModelStepConfig
from alignkit.datagen.templates import COT_SUFFIX, PROPOSAL_EXAMPLE, PROPOSAL_TEMPLATE, RESPONSE_TEMPLATE, load_template
from alignkit.errors import UserError
from alignkit.rollout.config import SamplingConfig, sampling_kwargs

__all__ = ["SelfInstructConfig", "run_self_instruct", "parse_task", "reject_reason", "BLOCKLIST"]

#: words naming tasks a text-only model cannot do (from the Self-Instruct filter)
BLOCKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]
_NO_INPUT = {"", "none", "n/a", "<noinput>", "no input", "noinput"}


@dataclass
class SelfInstructConfig(ModelStepConfig):
    input: str = MISSING  #: seed tasks (.jsonl/.json/.parquet): `instruction`, optional `input`/`output` or `instances`
    fields: Dict[str, str] = field(default_factory=dict)  #: instruction/input/output -> column names in the seed file
    target: int = 100  #: generated tasks to reach (the seeds are not part of the output)
    max_rounds: int = 100  #: stop after this many rounds even below target (each round: batch_size proposals)
    num_examples: int = 8  #: in-context tasks per proposal prompt
    seed_examples: int = 6  #: of them from the seed tasks (the rest from generated ones once there are any)
    rouge_threshold: float = 0.7  #: reject a proposal this ROUGE-L-similar to a pool instruction (lower = more diverse)
    min_words: int = 3  #: shorter instructions are rejected
    max_words: int = 150  #: longer instructions are rejected
    blocklist: List[str] = field(default_factory=lambda: list(BLOCKLIST))  #: words of tasks a text model cannot do
    generate_outputs: bool = True  #: also answer each new instruction (the `output` column)
    chain_of_thought: bool = False  #: ask for step-by-step reasoning, then a final "Answer:" line (`answer` column)
    cot_suffix: str = COT_SUFFIX  #: appended to the response prompt with chain_of_thought=true
    cot_require_answer: bool = True  #: with chain_of_thought: drop a task whose output has no final answer line
    proposal_template: str = PROPOSAL_TEMPLATE  #: fields {examples} {next}; file:<path> reads a file
    example_template: str = PROPOSAL_EXAMPLE  #: fields {number} {instruction} {input_line}
    response_template: str = RESPONSE_TEMPLATE  #: fields {instruction} {input_block}
    proposal: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64, temperature=0.8,
                                                                            top_p=0.95))
    response: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=128, temperature=0.7,
                                                                            top_p=0.9))

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, target=">= 1", max_rounds=">= 1", num_examples=">= 1", seed_examples=">= 0",
              rouge_threshold="in (0, 1]", min_words=">= 0", max_words=">= 1")


# -- parsing and filtering ------------------------------------------------------

def parse_task(text: str) -> tuple[str, str]:
    """``(instruction, input)`` from a proposal: a leading ``Task N:`` / ``Instruction:`` label dropped,
    cut where the model goes on to the next ``Task N:`` or to an ``Output:``, split at a line starting
    with ``Input:``; the instruction is its first paragraph (a task is one instruction)."""
    body = re.sub(r"^(?:Task\s+\d+\s*:|Instruction\s*:)\s*", "", text.strip(), flags=re.I)
    body = re.split(r"\n\s*(?:Task\s+\d+|Output)\s*:", body, maxsplit=1, flags=re.I)[0]
    parts = re.split(r"\n\s*Input\s*:", body, maxsplit=1, flags=re.I)
    instruction = re.split(r"\n\s*\n", parts[0].strip(), maxsplit=1)[0].strip()
    given = parts[1].strip() if len(parts) > 1 else ""
    return instruction, "" if given.lower() in _NO_INPUT else given


def reject_reason(instruction: str, cfg: Any) -> str | None:
    """Why a proposed instruction is rejected before the similarity check, or None."""
    if not instruction:
        return "empty"
    words = instruction.split()
    if len(words) < cfg.min_words:
        return "too_short"
    if len(words) > cfg.max_words:
        return "too_long"
    low = " " + " ".join(re.findall(r"[a-z0-9']+", instruction.lower())) + " "
    if any(f" {w.lower()} " in low for w in cfg.blocklist):
        return "keyword"
    first = instruction[0]
    if not first.isascii() or not first.isalnum() or re.match(r"(?:input|output|response)\s*:", instruction, re.I):
        return "format"
    return None


# -- the step ---------------------------------------------------------------------

def _seed_tasks(rows: Rows, fields: dict) -> list[dict]:
    """Seed tasks as ``{"instruction", "input", "output"}``; ``instances`` (the Self-Instruct seed
    file's layout) gives the first instance's input and output."""
    col = lambda name: fields.get(name, name)  # noqa: E731
    tasks = []
    for i, r in enumerate(rows.rows):
        require_fields(rows, i, [col("instruction")])
        inst = r.get("instances") or [{}]
        first = inst[0] if isinstance(inst, list) and inst and isinstance(inst[0], dict) else {}
        tasks.append({"instruction": str(r[col("instruction")]).strip(),
                      "input": str(r.get(col("input")) or first.get("input") or "").strip(),
                      "output": str(r.get(col("output")) or first.get("output") or "").strip()})
    return tasks


class Proposer:
    """Builds proposal prompts from the pool (seeded per round) and response prompts."""

    def __init__(self, cfg: Any, seeds: list[dict]):
        self.cfg, self.seeds = cfg, seeds
        self.proposal = load_template(str(cfg.proposal_template), "proposal_template", ("examples", "next"))
        self.example = load_template(str(cfg.example_template), "example_template",
                                     ("number", "instruction", "input_line"))
        self.response = load_template(str(cfg.response_template), "response_template",
                                      ("instruction", "input_block"))

    def examples(self, rng: random.Random, generated: list[dict]) -> list[dict]:
        n = int(self.cfg.num_examples)
        n_machine = min(len(generated), max(0, n - int(self.cfg.seed_examples)))
        n_seed = min(len(self.seeds), n - n_machine)
        picked = rng.sample(self.seeds, n_seed) + rng.sample(generated, n_machine)
        rng.shuffle(picked)
        return picked

    def proposal_prompt(self, tasks: list[dict]) -> str:
        shown = "".join(self.example.format(number=k + 1, instruction=t["instruction"],
                                            input_line=f"Input: {t['input']}\n" if t["input"] else "")
                        for k, t in enumerate(tasks))
        return self.proposal.format(examples=shown, next=len(tasks) + 1)

    def response_prompt(self, task: dict) -> str:
        text = self.response.format(instruction=task["instruction"],
                                    input_block=f"\n\n{task['input']}" if task["input"] else "")
        return cot_prompt(text, str(self.cfg.cot_suffix)) if self.cfg.chain_of_thought else text


def _filter(candidates: list[tuple[str, str]], pool: RougePool, cfg: Any, room: int, counts: Any) -> list[dict]:
    """The candidates that pass every filter (at most ``room``), added to ``pool`` as they pass."""
    accepted = []
    for instruction, given in candidates:
        if len(accepted) >= room:
            counts["unused"] += 1
            continue
        reason = reject_reason(instruction, cfg)
        similarity = 0.0
        if reason is None:
            similarity, _ = pool.most_similar(instruction)
            reason = "similar" if similarity >= cfg.rouge_threshold else None
        if reason is not None:
            counts[f"rejected_{reason}"] += 1
            continue
        pool.add(instruction)
        accepted.append({"instruction": instruction, "input": given, "similarity": round(similarity, 4)})
    return accepted


def _split_answers(tasks: list[dict], require: bool, counts: Any) -> list[dict]:
    """Chain-of-thought tasks with ``reasoning`` and ``answer`` (the final answer line) beside ``output``;
    without an answer line a task is dropped (``rejected_no_final_answer``) when ``require``."""
    kept = []
    for t in tasks:
        t["reasoning"], t["answer"] = extract_answer(t["output"])
        if t["answer"] is None and require:
            counts["rejected_no_final_answer"] += 1
        else:
            kept.append(t)
    return kept


def run_self_instruct(cfg: Any, step: Any) -> None:
    import torch

    from alignkit.rollout.generation import generate_from_prompts

    seeds = _seed_tasks(step.read(str(cfg.input)), dict(cfg.fields or {}))
    proposer = Proposer(cfg, seeds)
    pool = RougePool([t["instruction"] for t in seeds])
    state = step.start()
    generated = step.work.rows("rows")
    for t in generated:
        pool.add(t["instruction"])
    model, tok = step.load_model()
    data_cfg = step.tokenization()
    round_ = int(state.get("round", 0))
    bar = step.progress(int(cfg.target), len(generated), "task")
    while len(generated) < cfg.target and round_ < cfg.max_rounds:
        rng = random.Random(step.seed(round_))
        torch.manual_seed(step.seed(round_))
        prompts = [proposer.proposal_prompt(proposer.examples(rng, generated)) for _ in range(int(cfg.batch_size))]
        roll = generate_from_prompts(model, tok, prompts, data_cfg, **sampling_kwargs(cfg.proposal))
        step.counts["proposed"] += len(prompts)
        accepted = _filter([parse_task(t) for t in roll.completions], pool, cfg, int(cfg.target) - len(generated),
                           step.counts)
        if cfg.generate_outputs and accepted:
            answers = generate_from_prompts(model, tok, [proposer.response_prompt(t) for t in accepted], data_cfg,
                                            **sampling_kwargs(cfg.response)).completions
            for task, answer in zip(accepted, answers):
                task["output"] = answer.strip()
            step.counts["rejected_empty_output"] += sum(not t["output"] for t in accepted)
            accepted = [t for t in accepted if t["output"]]
            if cfg.chain_of_thought:
                accepted = _split_answers(accepted, bool(cfg.cot_require_answer), step.counts)
        generated += accepted
        step.counts["accepted"] = len(generated)
        round_ += 1
        step.commit_batch(len(generated), {"rows": accepted}, round=round_)
        bar.update(len(accepted))
    bar.close()
    step.counts["rounds"] = round_
    if not generated:
        rejected = ", ".join(f"{k[len('rejected_'):]} {v}" for k, v in sorted(step.counts.items())
                             if k.startswith("rejected_")) or "none"
        raise UserError(f"self-instruct accepted none of {step.counts['proposed']} proposals in {round_} rounds "
                        f"(rejected: {rejected})",
                        "use a stronger model, raise max_rounds or proposal.max_new_tokens, or relax the filters "
                        "(rouge_threshold, min_words, max_words, blocklist)")
    step.write(generated)
