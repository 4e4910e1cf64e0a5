"""``alignkit data self-chat``: multi-turn dialogues from seed questions (Baize: Xu et al. 2023, arXiv:2304.01196).

The step's model plays both sides. Each seed question (any alignkit data format with
prompts: a Quora or Stack Overflow title a line, ``instruction`` rows, ...) opens a
dialogue; then, turn by turn, for every open dialogue of a batch at once:

1. the assistant answers the conversation so far (chat template when the model has one,
   ``assistant_system`` as its system message when set);
2. the user's next message is generated from ``user_template``: the seed and the transcript
   written with Baize's ``[|Human|]`` / ``[|AI|]`` labels (``human_label``, ``ai_label``),
   asking for a related follow-up question or ``end_marker`` when there is none.

A generated turn loses a leading speaker label and is cut where the model goes on to the
other speaker's label. The dialogue ends when ``max_turns`` assistant turns are written
(``max_turns``), the user writes ``end_marker`` or opens with one of ``stop_phrases``
(``user_ended``), or a turn is rejected, which is then not kept: ``empty`` (fewer than
``min_words`` words), ``degenerate`` (more than ``max_repetition`` of its word trigrams repeat
one earlier in the turn) or ``repeated`` (the Jaccard similarity of its word-trigram set with
an earlier turn of the dialogue is ``>= repeat_threshold``), e.g. ``stopped_assistant_repeated``.
A dialogue always ends with an assistant turn; one with fewer than ``min_turns`` is skipped
(``skipped_too_short``).

Rows: ``{"messages", "seed", "seed_index", "turns", "stop"}``, the ``messages`` data format
(``algo=sft`` trains on the last turn with the rest as its prompt) and ``sdf``'s input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

from omegaconf import MISSING

from alignkit.config.schema import check
from alignkit.datagen.io import as_text, to_examples
from alignkit.datagen.similarity import jaccard, shingles, words
from alignkit.datagen.spec import ModelStepConfig
from alignkit.datagen.templates import SELF_CHAT_USER_TEMPLATE, load_template
from alignkit.rollout.config import SamplingConfig, sampling_kwargs

__all__ = ["SelfChatConfig", "run_self_chat", "turn_problem", "clean_turn", "repetition"]

#: labels a small model writes for the other speaker when it goes on with the transcript
_OTHER_LABELS = ("Human:", "User:", "AI:", "Assistant:")


@dataclass
class SelfChatConfig(ModelStepConfig):
    input: str = MISSING  #: seed questions: any alignkit data format with prompts (format=auto detects it)
    format: str = "auto"  #: data format of `input` (alignkit list shows them)
    fields: Dict[str, str] = field(default_factory=dict)  #: normalised field -> column name in `input`
    max_turns: int = 3  #: assistant turns per dialogue at most
    min_turns: int = 1  #: dialogues with fewer assistant turns are skipped
    assistant_system: str = ""  #: system message of the assistant's turns ("" = none)
    user_template: str = SELF_CHAT_USER_TEMPLATE  #: fields {seed} {transcript} {end_marker}; file:<path> reads a file
    human_label: str = "[|Human|]"  #: the user's label in the transcript
    ai_label: str = "[|AI|]"  #: the assistant's label in the transcript
    end_marker: str = "[END]"  #: the user ends the dialogue by writing this
    #: a user turn opening with one of these ends the dialogue
    stop_phrases: List[str] = field(default_factory=lambda: ["thank you", "thanks", "goodbye", "bye"])
    min_words: int = 2  #: a turn with fewer words is rejected (empty)
    max_repetition: float = 0.5  #: a turn with more of its word trigrams repeated is rejected (degenerate)
    repeat_threshold: float = 0.8  #: a turn this Jaccard-similar to an earlier one is rejected (repeated)
    assistant: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=128, temperature=0.7,
                                                                             top_p=0.9))
    user: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=48, temperature=0.8,
                                                                        top_p=0.95))

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, max_turns=">= 1", min_turns=">= 1", min_words=">= 1", max_repetition="in [0, 1]",
              repeat_threshold="in (0, 1]")


# -- turns ------------------------------------------------------------------------------------

def repetition(text: str, n: int = 3) -> float:
    """The fraction of the text's word ``n``-grams that repeat an earlier one of the same text."""
    ws = words(text)
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def turn_problem(text: str, earlier: list[str], cfg: Any) -> str | None:
    """Why a generated turn is rejected (``empty``, ``degenerate``, ``repeated``), or None."""
    if len(words(text)) < int(cfg.min_words):
        return "empty"
    if repetition(text) > float(cfg.max_repetition):
        return "degenerate"
    grams = shingles(text, 3)
    if any(jaccard(grams, shingles(e, 3)) >= float(cfg.repeat_threshold) for e in earlier):
        return "repeated"
    return None


def clean_turn(text: str, labels: list[str]) -> str:
    """``text`` without a leading speaker label, cut where the model writes another one
    (``labels`` anywhere, ``Human:`` and the like at a line start)."""
    body = text.strip()
    all_labels = [*labels, *_OTHER_LABELS]
    for label in all_labels:
        if label and body.lower().startswith(label.lower()):
            body = body[len(label):].lstrip()
            break
    cuts = [body.find(label) for label in labels if label and label in body]
    line_label = re.search(r"\n\s*(?:" + "|".join(re.escape(x) for x in _OTHER_LABELS) + ")", body, re.I)
    cuts += [line_label.start()] if line_label else []
    return body[: min(cuts)].strip() if cuts else body


class SelfChat:
    """The prompts of both speakers and the stop rules of one configuration."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.user_template = load_template(str(cfg.user_template), "user_template",
                                           ("seed", "transcript", "end_marker"))
        self.labels = [str(cfg.human_label), str(cfg.ai_label)]

    def assistant_prompt(self, messages: list[dict]) -> list[dict]:
        system = str(self.cfg.assistant_system)
        has_system = messages and messages[0]["role"] == "system"
        return ([{"role": "system", "content": system}] if system and not has_system else []) + messages

    def transcript(self, messages: list[dict]) -> str:
        label = {"user": self.cfg.human_label, "assistant": self.cfg.ai_label}
        return "\n".join(f"{label[m['role']]} {m['content']}" for m in messages if m["role"] in label)

    def user_prompt(self, seed: str, messages: list[dict]) -> str:
        return self.user_template.format(seed=seed, transcript=self.transcript(messages),
                                         end_marker=self.cfg.end_marker)

    def user_ends(self, text: str) -> bool:
        low = text.strip().lower()
        return (bool(self.cfg.end_marker) and str(self.cfg.end_marker).lower() in low) or any(
            low.startswith(p.lower()) for p in self.cfg.stop_phrases)


def _earlier(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] != "system"]


def _chat(chat: SelfChat, dialogues: list[dict], model: Any, tok: Any, data_cfg: Any, counts: Any) -> None:
    """Play every dialogue of a batch to its end (see the module docstring); ``stop`` says why it ended."""
    from alignkit.rollout.generation import generate_from_prompts

    cfg = chat.cfg
    for turn in range(int(cfg.max_turns)):
        open_ = [d for d in dialogues if d["stop"] is None]
        if not open_:
            break
        replies = generate_from_prompts(model, tok, [chat.assistant_prompt(d["messages"]) for d in open_], data_cfg,
                                        **sampling_kwargs(cfg.assistant)).completions
        for d, text in zip(open_, replies):
            reply = clean_turn(text, chat.labels)
            problem = turn_problem(reply, _earlier(d["messages"]), cfg)
            if problem:
                d["stop"] = f"assistant_{problem}"
            else:
                d["messages"].append({"role": "assistant", "content": reply})
        open_ = [d for d in open_ if d["stop"] is None]
        if not open_:
            break
        if turn == int(cfg.max_turns) - 1:
            for d in open_:
                d["stop"] = "max_turns"
            break
        asks = generate_from_prompts(model, tok, [chat.user_prompt(d["seed"], d["messages"]) for d in open_],
                                     data_cfg, **sampling_kwargs(cfg.user)).completions
        for d, text in zip(open_, asks):
            question = clean_turn(text, chat.labels)
            if chat.user_ends(question):
                d["stop"] = "user_ended"
                continue
            problem = turn_problem(question, _earlier(d["messages"]), cfg)
            if problem:
                d["stop"] = f"user_{problem}"
            else:
                d["messages"].append({"role": "user", "content": question})
    for d in dialogues:
        counts[f"stopped_{d['stop']}"] += 1
        while d["messages"] and d["messages"][-1]["role"] != "assistant":
            d["messages"].pop()


def run_self_chat(cfg: Any, step: Any) -> None:
    import torch

    from alignkit.errors import UserError

    rows = step.read(str(cfg.input))
    seeds = [ex["prompt"] for ex in to_examples(rows, "prompt", str(cfg.format), dict(cfg.fields or {}),
                                                step.formats(), step.counts)]
    if int(cfg.min_turns) > int(cfg.max_turns):
        raise UserError(f"min_turns={cfg.min_turns} is above max_turns={cfg.max_turns}",
                        "lower min_turns or raise max_turns")
    chat = SelfChat(cfg)
    model, tok = step.load_model()
    data_cfg = step.tokenization()
    done = int(step.start().get("done", 0))
    bar = step.progress(len(seeds), done, "dialogue")
    bs = int(cfg.batch_size)
    for start in range(done, len(seeds), bs):
        torch.manual_seed(step.seed(start // bs))
        batch = seeds[start:start + bs]
        dialogues = [{"seed": as_text(s), "seed_index": start + i, "stop": None,
                      "messages": [{"role": "user", "content": s}] if isinstance(s, str) else [dict(m) for m in s]}
                     for i, s in enumerate(batch)]
        _chat(chat, dialogues, model, tok, data_cfg, step.counts)
        kept = []
        for d in dialogues:
            turns = sum(m["role"] == "assistant" for m in d["messages"])
            if turns < int(cfg.min_turns):
                step.counts["skipped_too_short"] += 1
                continue
            step.counts["turns"] += turns
            kept.append({"messages": d["messages"], "seed": d["seed"], "seed_index": d["seed_index"], "turns": turns,
                         "stop": d["stop"]})
        step.counts["dialogues"] += len(kept)
        step.commit_batch(start + len(batch), {"rows": kept})
        bar.update(len(batch))
    bar.close()
    step.counts["seeds"] = len(seeds)
    step.write(step.work.rows("rows"))
