"""Human-written instruction sets in their published formats.

* ``dolly`` (databricks-dolly-15k): ``instruction``, ``context``, ``response``, ``category``
  -> ``sft``; the prompt is the instruction, then a blank line and the context when there is one.
* ``sharegpt`` (ShareGPT / Vicuna dumps): ``conversations``: a list of ``{"from", "value"}``
  turns (``human``/``user``, ``gpt``/``chatgpt``/``assistant``/``bing``/``bard``, ``system``)
  -> ``sft`` with the conversation up to its last assistant turn as the prompt messages.
  Leading assistant turns (a dump that starts mid-conversation) and trailing user turns
  (a question never answered) are cut off; a conversation with no user turn followed by an
  assistant turn is skipped and counted (``no_reply``).
* ``oasst`` and ``oasst-ranked`` (OpenAssistant oasst1/oasst2 message trees, one message a
  line: ``message_id``, ``parent_id``, ``role`` ``prompter``/``assistant``, ``text``, ``rank``,
  ``deleted``, ``synthetic``, ``lang``, ...). Both read the whole file as trees:

  - ``oasst`` -> ``sft``: one conversation per tree, from the root prompt down the best-ranked
    path (the reply with the lowest ``rank`` at each step; when no reply carries a rank, the
    first in the file), ending at its last assistant turn;
  - ``oasst-ranked`` -> ``ranked``: for every prompter message with at least two ranked
    assistant replies, the conversation up to it as the prompt and the replies best first
    with scores ``n-1, ..., 0`` (equal ranks, equal scores): the lists PRO and RRHF train on
    (and ``preference``: best against worst).

  Deleted and synthetic messages are left out with everything below them; unranked replies
  are left out of ranked lists; messages whose parent is not in the file are left out with
  their subtree. Each is counted (``deleted``, ``synthetic``, ``unranked``, ``orphan``), as
  are trees without an answered prompt (``no_reply``).

* ``gsm8k`` (GSM8K and files like it): ``question``, ``answer`` whose final answer follows the
  last ``####`` -> ``prompt`` with the question as the prompt and ``reference`` the final answer
  (commas removed: ``#### 1,200`` -> ``"1200"``), what the verifiable rewards compare against.

The Alpaca / Self-Instruct format (``instruction``, ``input``, ``output``) is ``alpaca``
(:mod:`alignkit.datagen.plugin`), which uses :func:`instruction_prompt` from here.

A malformed record raises :class:`FormatError` naming the field (the loader adds file and
line); what the format can leave out is raised as :class:`SkipRecord` (per-record formats)
or counted in ``skipped`` (tree formats), and the loader counts it.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from alignkit.data.formats import DataFormatSpec, FormatError, RecordError, SkipRecord, present_fields

__all__ = ["CORPUS_FORMATS", "instruction_prompt", "text_field", "sharegpt_messages",
           "oasst_trees", "gsm8k_final_answer"]


def text_field(record: dict, fields: dict, name: str, required: bool = True) -> str:
    """The string in ``name`` (mapped through ``fields``); ``""`` when optional and absent."""
    col = fields.get(name, name)
    value = record.get(col)
    if value is None:
        if required:
            raise FormatError(f"missing field {col!r}, the record has {present_fields(record)}")
        return ""
    if not isinstance(value, str):
        raise FormatError(f"field {col!r} must be a string, got {type(value).__name__}")
    return value


def instruction_prompt(record: dict, fields: dict, extra: str = "input") -> str:
    """The instruction, then a blank line and the ``extra`` field (input, context) when the record has one."""
    instruction, given = text_field(record, fields, "instruction"), text_field(record, fields, extra, required=False)
    return f"{instruction}\n\n{given}" if given.strip() else instruction


# -- Dolly ----------------------------------------------------------------------------------

def _dolly(record: dict, fields: dict) -> dict:
    return {"prompt": instruction_prompt(record, fields, "context"),
            "completion": text_field(record, fields, "response")}


# -- GSM8K --------------------------------------------------------------------------------

GSM8K_MARK = "####"


def gsm8k_final_answer(answer: str, col: str = "answer") -> str:
    """The final answer of a GSM8K solution (field ``col``): the text after the last ``####``, commas removed."""
    cut = answer.rfind(GSM8K_MARK)
    final = answer[cut + len(GSM8K_MARK):].replace(",", "").strip() if cut >= 0 else ""
    if not final:
        raise FormatError(f"field {col!r} has no final answer after '{GSM8K_MARK}' (it ends {answer[-40:]!r}; "
                          f"answers without one load as format: prompt with fields: {{prompt: question, "
                          f"reference: {col}}})")
    return final


def _gsm8k(record: dict, fields: dict) -> dict:
    return {"prompt": text_field(record, fields, "question"),
            "reference": gsm8k_final_answer(text_field(record, fields, "answer"), fields.get("answer", "answer"))}


# -- ShareGPT -------------------------------------------------------------------------------

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                  "assistant": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}


def sharegpt_messages(turns: Any, col: str = "conversations") -> list[dict]:
    """ShareGPT turns as chat messages, from the first user turn to the last assistant turn."""
    if not isinstance(turns, list):
        raise FormatError(f"field {col!r} must be a list of turns, got {type(turns).__name__}")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise FormatError(f"field {col!r}, turn {k}: needs a string 'value' (has "
                              f"{present_fields(turn) if isinstance(turn, dict) else type(turn).__name__})")
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise FormatError(f"field {col!r}, turn {k}: unknown 'from' {turn.get('from')!r}; "
                              f"expected one of {', '.join(sorted(SHAREGPT_ROLES))}")
        messages.append({"role": role, "content": turn["value"]})
    system = [m for m in messages[:1] if m["role"] == "system"]
    body = messages[len(system):]
    first_user = next((k for k, m in enumerate(body) if m["role"] == "user"), None)
    last_reply = max((k for k, m in enumerate(body) if m["role"] == "assistant"), default=None)
    if first_user is None or last_reply is None or last_reply < first_user:
        raise SkipRecord("no_reply", "the conversation has no user turn followed by an assistant turn")
    return system + body[first_user:last_reply + 1]


def _sharegpt(record: dict, fields: dict) -> dict:
    col = fields.get("conversations", "conversations")
    if record.get(col) is None:
        raise FormatError(f"missing field {col!r}, the record has {present_fields(record)}")
    msgs = sharegpt_messages(record[col], col)
    return {"prompt": msgs[:-1], "completion": msgs[-1]["content"]}


# -- OpenAssistant message trees --------------------------------------------------------------

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


class _Message:
    __slots__ = ("index", "id", "parent", "role", "text", "rank", "children")

    def __init__(self, index: int, id_: str, parent: str | None, role: str, text: str, rank: float | None):
        self.index, self.id, self.parent, self.role, self.text, self.rank = index, id_, parent, role, text, rank
        self.children: list[_Message] = []


def _oasst_message(index: int, record: dict, fields: dict) -> _Message:
    def col(name: str) -> str:
        return fields.get(name, name)

    try:
        id_ = text_field(record, fields, "message_id")
        parent = record.get(col("parent_id"))
        if parent is not None and not isinstance(parent, str):
            raise FormatError(f"field {col('parent_id')!r} must be a string or null, got {type(parent).__name__}")
        role = OASST_ROLES.get(text_field(record, fields, "role"))
        if role is None:
            raise FormatError(f"field {col('role')!r} is {record[col('role')]!r}; expected prompter or assistant")
        text = text_field(record, fields, "text")
        rank = record.get(col("rank"))
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, float))):
            raise FormatError(f"field {col('rank')!r} must be a number or null, got {type(rank).__name__}")
    except FormatError as exc:
        raise RecordError(index, str(exc)) from exc
    return _Message(index, id_, parent, role, text, rank)


def oasst_trees(rows: list[dict], fields: dict, skipped: Counter) -> list[_Message]:
    """The roots of the message trees of ``rows``, deleted/synthetic/orphaned messages (and what
    hangs below them) left out and counted in ``skipped``."""
    col = lambda name: fields.get(name, name)  # noqa: E731
    by_id: dict[str, _Message] = {}
    dropped: dict[str, str] = {}  #: id -> why it was left out
    for i, record in enumerate(rows):
        msg = _oasst_message(i, record, fields)
        if msg.id in by_id or msg.id in dropped:
            raise RecordError(i, f"field {col('message_id')!r}: {msg.id!r} appears twice")
        if record.get(col("deleted")):
            dropped[msg.id] = "deleted"
        elif record.get(col("synthetic")):
            dropped[msg.id] = "synthetic"
        else:
            by_id[msg.id] = msg
    roots = []
    for msg in by_id.values():
        if msg.parent is None:
            roots.append(msg)
        elif msg.parent in by_id:
            by_id[msg.parent].children.append(msg)
    for reason in dropped.values():
        skipped[reason] += 1
    for msg in by_id.values():  # below a dropped message, or a parent not in the file
        if msg.parent is not None and msg.parent not in by_id:
            n = _subtree_size(msg)
            skipped[f"below_{dropped[msg.parent]}" if msg.parent in dropped else "orphan"] += n
    for msg in by_id.values():
        msg.children.sort(key=lambda m: m.index)
    return sorted(roots, key=lambda m: m.index)


def _subtree_size(msg: _Message) -> int:
    """Messages in ``msg``'s subtree (``msg`` and everything linked below it)."""
    return 1 + sum(_subtree_size(c) for c in msg.children)


def _best(children: list[_Message]) -> _Message | None:
    ranked = [c for c in children if c.rank is not None]
    if ranked:
        return min(ranked, key=lambda c: (c.rank, c.index))
    return children[0] if children else None


def _as_message(msg: _Message) -> dict:
    return {"role": msg.role, "content": msg.text}


def _oasst_conversations(rows: list[dict], fields: dict, skipped: Counter) -> list[dict]:
    examples = []
    for root in oasst_trees(rows, fields, skipped):
        path, node = [], root
        while node is not None:
            path.append(node)
            node = _best(node.children)
        while path and path[-1].role != "assistant":
            path.pop()
        if root.role != "user" or len(path) < 2:
            skipped["no_reply"] += 1
            continue
        examples.append({"prompt": [_as_message(m) for m in path[:-1]], "completion": path[-1].text})
    return examples


def _oasst_ranked(rows: list[dict], fields: dict, skipped: Counter) -> list[dict]:
    examples = []

    def visit(node: _Message, above: list[dict]) -> None:
        convo = above + [_as_message(node)]
        replies = [c for c in node.children if c.role == "assistant"]
        ranked = sorted((c for c in replies if c.rank is not None), key=lambda c: (c.rank, c.index))
        if node.role == "user" and len(replies) >= 2:
            skipped["unranked"] += len(replies) - len(ranked)
            if len(ranked) >= 2:
                levels = sorted({c.rank for c in ranked})
                examples.append({"prompt": convo, "responses": [c.text for c in ranked],
                                 "scores": [float(len(levels) - 1 - levels.index(c.rank)) for c in ranked]})
        for child in node.children:
            visit(child, convo)

    for root in oasst_trees(rows, fields, skipped):
        visit(root, [])
    return examples


CORPUS_FORMATS = [
    DataFormatSpec("dolly", "sft", _dolly, ("instruction", "context", "response"),
                   "Dolly: instruction [+ context] + response"),
    DataFormatSpec("gsm8k", "prompt", _gsm8k, ("question", "answer"),
                   "GSM8K: question + answer ending '#### <final answer>' (the reference)"),
    DataFormatSpec("sharegpt", "sft", _sharegpt, ("conversations",), "ShareGPT 'conversations' of from/value turns"),
    DataFormatSpec("oasst", "sft", None, ("message_id", "parent_id", "role", "text"),
                   "OpenAssistant message trees: the best-ranked conversation of each tree",
                   convert_records=_oasst_conversations),
    DataFormatSpec("oasst-ranked", "ranked", None, (),
                   "OpenAssistant message trees: ranked sibling replies as ranked lists",
                   convert_records=_oasst_ranked),
]
