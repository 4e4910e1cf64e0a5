"""Prompt templates of the data steps.

Every template is a config value (``judge.template``, ``proposal_template``, ...), a
``str.format`` string with named fields (``{instruction}``, ``{response}``, ...; a literal
brace is ``{{``). A value starting with ``file:`` is read from that file, so a long
template can live in its own text file: ``judge.template=file:prompts/judge.txt``.
"""
from __future__ import annotations

import string
from pathlib import Path

from alignkit.errors import UserError

__all__ = ["load_template", "JUDGE_TEMPLATE", "PROPOSAL_TEMPLATE", "PROPOSAL_EXAMPLE", "RESPONSE_TEMPLATE",
           "COT_SUFFIX", "SELF_CHAT_USER_TEMPLATE", "TRANSLATION_TEMPLATE", "TRANSLATE_ANSWER_TEMPLATE"]

#: Alpagasus-style rubric (Chen et al. 2023), asking for the score first so a short answer holds it
JUDGE_TEMPLATE = (
    "Rate how well the response follows the instruction, on a scale of {min_score} to {max_score} "
    "({min_score} = wrong or unhelpful, {max_score} = accurate and helpful). Answer with "
    "\"Score: <number>\" on the first line, then one sentence of reasons.\n\n"
    "Instruction: {instruction}\n\nResponse: {response}"
)

#: Self-Instruct (Wang et al. 2023) task proposal: numbered in-context tasks, the model writes the next one
PROPOSAL_TEMPLATE = (
    "Come up with a new task for an AI assistant, different from these examples. "
    "Write it as one instruction (add a line \"Input: ...\" only if the task needs an input).\n\n"
    "{examples}Task {next}:"
)
#: one in-context task of :data:`PROPOSAL_TEMPLATE` (the ``Input:`` line is left out when a task has none)
PROPOSAL_EXAMPLE = "Task {number}: {instruction}\n{input_line}\n"

#: the prompt a new instruction's response is generated from
RESPONSE_TEMPLATE = "{instruction}{input_block}"
#: appended to a prompt with ``chain_of_thought=true`` (self-instruct, pairs, sdf): reasoning, then a final
#: answer line that :func:`alignkit.datagen.cot.extract_answer` reads
COT_SUFFIX = ("\n\nThink step by step. Then write the final answer on its own last line, as "
              "\"Answer: <final answer>\".")

#: the user's side of Baize's self-chat (Xu et al. 2023): the transcript in its [|Human|] / [|AI|] labels
SELF_CHAT_USER_TEMPLATE = (
    "You are the human in a conversation with an AI assistant that started from this question: {seed}\n\n"
    "The conversation so far:\n{transcript}\n\n"
    "Write the human's next message: one related follow-up question, in one or two sentences. "
    "If the human has no more questions, write {end_marker}."
)

#: ``alignkit data translate``'s default backend: the step's model asked for a translation
TRANSLATION_TEMPLATE = ("Translate the following text from {source} into {target}. Write only the translation, "
                        "nothing else.\n\n{text}")
#: post-answering: the translated instruction, asking for an answer in its language
TRANSLATE_ANSWER_TEMPLATE = "{instruction}\n\n(Answer in {target}.)"


def load_template(value: str, key: str, fields: tuple[str, ...]) -> str:
    """The template ``value`` (or the file it names with ``file:``), checked to use only ``fields``."""
    text = value
    if value.startswith("file:"):
        path = Path(value[len("file:"):]).expanduser()
        if not path.is_file():
            raise UserError(f"{key}: template file not found: {path}", f"check {key}=file:<path>")
        text = path.read_text()
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise UserError(f"{key}: not a valid template ({exc})", "write a literal brace as {{ or }}") from exc
    unknown = sorted(n for n in used if n not in fields)
    if unknown:
        raise UserError(f"{key} uses unknown fields {unknown}", f"use only {', '.join('{' + f + '}' for f in fields)}")
    return text
