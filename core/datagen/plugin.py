"""The built-in data steps and the instruction data formats, registered through the
``alignkit.plugins`` entry-point group like any plugin.

Formats (for ``data.sources[].format`` and the data steps' ``format=``):

* ``alpaca``: ``instruction``, optional ``input``, ``output`` -> ``sft`` (prompt: the
  instruction, then a blank line and the input when there is one): Stanford Alpaca's
  ``alpaca_data.json``, Self-Instruct's released data, and the rows
  ``alignkit data self-instruct`` writes;
* ``instruction``: ``instruction`` and optional ``input`` without an output -> ``prompt``.
"""
from __future__ import annotations

from alignkit import hookimpl
from alignkit.data.corpora import instruction_prompt, text_field
from alignkit.data.formats import DataFormatSpec
from alignkit.datagen.arithmetic import ArithmeticConfig, run_arithmetic
from alignkit.datagen.dedup import DedupConfig, run_dedup
from alignkit.datagen.mix import MixConfig, run_mix
from alignkit.datagen.pairs import PairsConfig, run_pairs
from alignkit.datagen.sdf import SdfConfig, run_sdf
from alignkit.datagen.self_chat import SelfChatConfig, run_self_chat
from alignkit.datagen.score import ScoreConfig, SelectConfig, run_score, run_select
from alignkit.datagen.self_instruct import SelfInstructConfig, run_self_instruct
from alignkit.datagen.spec import DataStepSpec
from alignkit.datagen.translate import MODEL_TRANSLATOR, TranslateConfig, run_translate


def _alpaca(record: dict, fields: dict) -> dict:
    return {"prompt": instruction_prompt(record, fields), "completion": text_field(record, fields, "output")}


def _instruction(record: dict, fields: dict) -> dict:
    return {"prompt": instruction_prompt(record, fields), "reference": None}


INSTRUCTION_FORMATS = [
    DataFormatSpec("alpaca", "sft", _alpaca, ("instruction", "output"), "instruction [+ input] + output"),
    DataFormatSpec("instruction", "prompt", _instruction, ("instruction",), "instruction [+ input], no output"),
]

BUILTIN_STEPS = [
    DataStepSpec("self-instruct", SelfInstructConfig, run_self_instruct,
                 "new instructions (and answers) from seed tasks, ROUGE-L/length/keyword filtered (Wang et al. 2023)"),
    DataStepSpec("score", ScoreConfig, run_score,
                 "score examples with a judge model on a 1-5 rubric or a reward model/function (Alpagasus)"),
    DataStepSpec("select", SelectConfig, run_select, "keep scored examples by threshold, top-k or top fraction"),
    DataStepSpec("pairs", PairsConfig, run_pairs,
                 "best-of-n samples scored into prompt/chosen/rejected pairs (DPO) and ranked lists (PRO, RRHF)"),
    DataStepSpec("self-chat", SelfChatConfig, run_self_chat,
                 "multi-turn dialogues from seed questions, the model playing both sides (Baize self-chat)"),
    DataStepSpec("sdf", SdfConfig, run_sdf,
                 "k replies per dialogue turn ranked by a judge or reward: best kept (SFT), best vs worst (DPO)"),
    DataStepSpec("translate", TranslateConfig, run_translate,
                 "multilingual data: post-answering or post-translating, language-checked (py3langid), chrF"),
    DataStepSpec("dedup", DedupConfig, run_dedup, "remove exact and near duplicates (MinHash LSH) across files"),
    DataStepSpec("mix", MixConfig, run_mix, "weighted mixture of sources in one file, with per-source counts"),
    DataStepSpec("arithmetic", ArithmeticConfig, run_arithmetic,
                 "arithmetic problems with integer answers (prompt + reference), disjoint train/held-out files"),
]


@hookimpl
def alignkit_register_data_steps():
    return list(BUILTIN_STEPS)


@hookimpl
def alignkit_register_data_formats():
    return list(INSTRUCTION_FORMATS)


@hookimpl
def alignkit_register_translators():
    return [MODEL_TRANSLATOR]
