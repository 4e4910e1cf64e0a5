"""Record formats: raw records -> alignkit's normalised examples.

Normalised examples by kind (prompts are a string or a list of chat messages
``{"role", "content"}`` ending with a user turn; responses are strings):

* ``sft``: ``{"prompt", "completion"}``
* ``preference``: ``{"prompt", "chosen", "rejected"[, "margin"]}``
* ``ranked``: ``{"prompt", "responses": [...], "scores": [...]}``
* ``prompt``: ``{"prompt", "reference"}`` (a known good response or None)

A format's ``convert(record, fields)`` gets one raw record and the source's
field mapping (normalised name -> column name) and returns the example, or
raises :class:`FormatError` saying which field is wrong. A format whose examples
span several records (message trees) gives ``convert_records(records, fields,
skipped)`` instead: every record of the file in, the examples out, what it leaves
out counted in the ``skipped`` Counter (see :mod:`alignkit.data.corpora`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from alignkit.errors import UserError

HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"


class FormatError(UserError, ValueError):
    """A record that does not fit its format; the loader adds file, line and how to fix it."""


class SkipRecord(FormatError):
    """A record the format leaves out on purpose; ``reason`` is the count's name."""

    def __init__(self, reason: str, what: str = ""):
        super().__init__(what or reason)
        self.reason = reason


class RecordError(FormatError):
    """A bad record found while reading a whole file: ``index`` is its place (0-based) in the file."""

    def __init__(self, index: int, what: str):
        super().__init__(what)
        self.index = index


@dataclass
class DataFormatSpec:
    name: str
    kind: str  #: sft | preference | ranked | prompt
    convert: Optional[Callable[[dict, dict], dict]]  #: one record -> one example (None with ``convert_records``)
    detect_fields: tuple = ()  #: columns whose presence selects this format under ``format: auto``
    description: str = ""
    #: all records of a file -> examples, for formats whose examples span records: ``(records, fields, skipped)``
    convert_records: Optional[Callable[[list, dict, Any], list]] = None


@dataclass
class DatasetPreset:
    name: str
    description: str
    config: dict = field(default_factory=dict)  #: a data config (see ``alignkit.config.DataConfig``)


def present_fields(record: dict) -> list[str]:
    """The record's fields that hold a value: ``datasets`` gives every record every column
    of the file, with None where a line lacks it, so None counts as absent."""
    return sorted(k for k, v in record.items() if v is not None)


def _field(record: dict, fields: dict, name: str, required: bool = True) -> Any:
    col = fields.get(name, name)
    if record.get(col) is None:
        if required:
            mapped = f" (mapped from {name!r})" if col != name else ""
            raise FormatError(f"missing field {col!r}{mapped}, the record has {present_fields(record)}")
        return None
    return record[col]


def parse_hh_dialogue(text: str) -> tuple[list[dict], str]:
    """Split an HH-RLHF dialogue into (prompt messages, final assistant response).

    The implicit prompt is everything up to the last ``\\n\\nAssistant:``; it is
    parsed into user/assistant messages (usually ending with a user turn; a few
    real dialogues hold two Assistant turns in a row, which are kept as they are).
    """
    if not isinstance(text, str):
        raise FormatError(f"expected a dialogue string, got {type(text).__name__}")
    cut = text.rfind(HH_ASSISTANT)
    if cut < 0:
        raise FormatError("dialogue has no '\\n\\nAssistant:' turn")
    head, response = text[:cut], text[cut + len(HH_ASSISTANT):]
    messages: list[dict] = []
    for chunk in head.split(HH_HUMAN):
        if not chunk.strip() and not messages:
            continue
        parts = chunk.split(HH_ASSISTANT)
        messages.append({"role": "user", "content": parts[0].strip()})
        for part in parts[1:]:
            messages.append({"role": "assistant", "content": part.strip()})
    if not messages:
        raise FormatError("dialogue has no turn before the last Assistant turn")
    return messages, response.strip()


def _hh(record: dict, fields: dict) -> dict:
    """HH-RLHF pair. When the two dialogues' last Assistant turns sit at different
    depths (3 of the bundled 1,800 rows), the prompt is their common prefix cut at
    its last ``\n\nAssistant:`` and each response is the rest of its dialogue."""
    chosen_text, rejected_text = _field(record, fields, "chosen"), _field(record, fields, "rejected")
    chosen_prompt, chosen = parse_hh_dialogue(chosen_text)
    rejected_prompt, rejected = parse_hh_dialogue(rejected_text)
    if chosen_prompt != rejected_prompt:
        n = 0
        while n < min(len(chosen_text), len(rejected_text)) and chosen_text[n] == rejected_text[n]:
            n += 1
        cut = chosen_text.rfind(HH_ASSISTANT, 0, n)
        if cut < 0:
            raise FormatError("'chosen' and 'rejected' share no prompt ending with '\\n\\nAssistant:'")
        chosen_prompt, _ = parse_hh_dialogue(chosen_text[: cut + len(HH_ASSISTANT)])
        chosen = chosen_text[cut + len(HH_ASSISTANT):].strip()
        rejected = rejected_text[cut + len(HH_ASSISTANT):].strip()
    return {"prompt": chosen_prompt, "chosen": chosen, "rejected": rejected}


def _as_prompt(value: Any) -> Any:
    """A prompt is a string or a list of messages (kept as given)."""
    if isinstance(value, (str, list)):
        return value
    raise FormatError(f"prompt must be a string or a list of messages, got {type(value).__name__}")


def _response(value: Any, name: str) -> str:
    """Responses may be strings or conversational lists (the last assistant message is taken)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        return value[-1]["content"]
    raise FormatError(f"field {name!r} must be a string or a list of messages, got {type(value).__name__}")


def _preference(record: dict, fields: dict) -> dict:
    prompt = _field(record, fields, "prompt", required=False)
    if prompt is None:  # conversational pairs with the prompt inside: same as HH's implicit prompt
        chosen, rejected = _field(record, fields, "chosen"), _field(record, fields, "rejected")
        if isinstance(chosen, str):
            return _hh(record, fields)
        if not (isinstance(chosen, list) and isinstance(rejected, list)) or chosen[:-1] != rejected[:-1]:
            raise FormatError("without 'prompt', 'chosen' and 'rejected' must share everything but the last message")
        return {"prompt": chosen[:-1], "chosen": _response(chosen, "chosen"), "rejected": _response(rejected, "rejected")}
    out = {
        "prompt": _as_prompt(prompt),
        "chosen": _response(_field(record, fields, "chosen"), "chosen"),
        "rejected": _response(_field(record, fields, "rejected"), "rejected"),
    }
    margin = _field(record, fields, "margin", required=False)
    if margin is not None:
        out["margin"] = float(margin)
    return out


def _sft(record: dict, fields: dict) -> dict:
    return {"prompt": _as_prompt(_field(record, fields, "prompt")),
            "completion": _response(_field(record, fields, "completion"), "completion")}


def _messages(record: dict, fields: dict) -> dict:
    msgs = _field(record, fields, "messages")
    if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "assistant":
        raise FormatError("field 'messages' must be a list of messages ending with an assistant turn")
    return {"prompt": msgs[:-1], "completion": msgs[-1]["content"]}


def _ranked(record: dict, fields: dict) -> dict:
    responses = _field(record, fields, "responses")
    scores = _field(record, fields, "scores")
    if not isinstance(responses, list) or not isinstance(scores, list) or len(responses) != len(scores):
        raise FormatError("fields 'responses' and 'scores' must be lists of the same length")
    if len(responses) < 2:
        raise FormatError("a ranked list needs at least 2 responses")
    return {"prompt": _as_prompt(_field(record, fields, "prompt")),
            "responses": [_response(r, "responses") for r in responses], "scores": [float(s) for s in scores]}


def _prompt(record: dict, fields: dict) -> dict:
    return {"prompt": _as_prompt(_field(record, fields, "prompt")),
            "reference": _field(record, fields, "reference", required=False)}


BUILTIN_FORMATS = [
    # order matters for ``format: auto``: the first whose detect_fields are all present wins
    DataFormatSpec("ranked", "ranked", _ranked, ("prompt", "responses", "scores"), "prompt + responses + scores"),
    DataFormatSpec("preference", "preference", _preference, ("prompt", "chosen", "rejected"),
                   "prompt/chosen/rejected (strings or message lists)"),
    DataFormatSpec("hh", "preference", _hh, ("chosen", "rejected"),
                   "HH-RLHF whole dialogues; prompt = up to the last '\\n\\nAssistant:'"),
    DataFormatSpec("messages", "sft", _messages, ("messages",), "chat 'messages' ending with an assistant turn"),
    DataFormatSpec("sft", "sft", _sft, ("prompt", "completion"), "prompt/completion"),
    DataFormatSpec("prompt", "prompt", _prompt, ("prompt",), "prompts only (online methods)"),
]


def detect_format(columns: list[str], fields: dict, formats: dict[str, DataFormatSpec]) -> DataFormatSpec:
    """Pick the first format whose (mapped) detection columns are all present."""
    cols = set(columns)
    for spec in formats.values():
        if spec.detect_fields and all(fields.get(f, f) in cols for f in spec.detect_fields):
            return spec
    raise FormatError(f"cannot detect the format from columns {sorted(cols)}")


# ---------------------------------------------------------------------------
# Conversions between kinds, so one preference data set serves every algorithm
# ---------------------------------------------------------------------------

def convert_kind(example: dict, src: str, dst: str) -> dict:
    """Convert a normalised example of kind ``src`` to kind ``dst``."""
    if src == dst:
        return example
    prompt = example["prompt"]
    if src == "preference":
        if dst == "sft":
            return {"prompt": prompt, "completion": example["chosen"]}
        if dst == "ranked":
            return {"prompt": prompt, "responses": [example["chosen"], example["rejected"]], "scores": [1.0, 0.0]}
        if dst == "prompt":
            return {"prompt": prompt, "reference": example["chosen"]}
    if src == "ranked":
        order = sorted(range(len(example["scores"])), key=lambda i: -example["scores"][i])
        best, worst = example["responses"][order[0]], example["responses"][order[-1]]
        if dst == "preference":
            return {"prompt": prompt, "chosen": best, "rejected": worst}
        if dst == "sft":
            return {"prompt": prompt, "completion": best}
        if dst == "prompt":
            return {"prompt": prompt, "reference": best}
    if src == "sft" and dst == "prompt":
        return {"prompt": prompt, "reference": example["completion"]}
    raise FormatError(f"cannot turn {src!r} examples into {dst!r} examples")
