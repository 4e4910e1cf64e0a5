"""translate: post-translating and post-answering with a plugin's backend and the model backend; language
rejects counted, chrF against references and round trips, resume, languages in data_stats.json."""
import json

import pytest

from datagen_helpers import Interrupt, read_jsonl, write_jsonl

PAIRS = [
    {"instruction": "How do I cook rice?", "output": "Simmer it in twice its volume of water.",
     "ref_de": "Wie kocht man Reis?"},
    {"instruction": "Why is the sky blue?", "output": "Air scatters blue light more than red light."},
    {"instruction": "Name a prime number.", "output": "Seven is a prime number and so is eleven."},  # not in the book
]


@pytest.fixture(scope="module")
def plugin_registry():
    from alignkit.registry import build_registry

    return build_registry(extra_modules=["datagen_translator_plugin"])


def run_with(registry, *overrides):
    from alignkit.datagen.compose import compose_step, data_step
    from alignkit.datagen.run import execute

    spec = data_step(registry, "translate")
    return execute(spec, compose_step(spec, ["progress=false", "num_threads=1", *overrides]), registry)


def test_language_checker_and_chrf():
    pytest.importorskip("py3langid")
    sacrebleu = pytest.importorskip("sacrebleu")
    from alignkit.datagen.translate import LanguageChecker, chrf

    checker = LanguageChecker(0.5)
    assert checker.identify("Warum ist der Himmel blau?")[0] == "de"
    assert checker.is_language("Comment cuire le riz ?", "fr") and not checker.is_language("How do I cook rice?", "de")
    assert chrf("Wie koche ich Reis?", "Wie koche ich Reis?") == 100.0
    assert chrf("Wie koche ich Reis?", "Wie kocht man Reis?") == pytest.approx(
        sacrebleu.sentence_chrf("Wie koche ich Reis?", ["Wie kocht man Reis?"]).score, abs=1e-4)


def test_post_translating_with_a_plugin_backend(plugin_registry, tmp_path):
    pytest.importorskip("py3langid")
    import sacrebleu

    from datagen_translator_plugin import PHRASES

    src = write_jsonl(tmp_path / "en.jsonl", PAIRS)
    out = tmp_path / "de.jsonl"
    step = run_with(plugin_registry, f"input={src}", f"output={out}", "mode=post-translating", "translator=phrasebook",
                    "target_languages=[de]", "+reference_fields.de=ref_de", "round_trip=true")
    assert "model" not in step.models and step.models["translator"] == {"backend": "phrasebook"}  # no model loaded
    rows = read_jsonl(out)
    expected_chrf = round(sacrebleu.sentence_chrf("Wie koche ich Reis?", ["Wie kocht man Reis?"]).score, 4)
    assert rows == [
        {"prompt": "Wie koche ich Reis?", "completion": PHRASES["Simmer it in twice its volume of water."],
         "language": "de", "mode": "post-translating", "source_index": 0, "source_prompt": "How do I cook rice?",
         "source_completion": "Simmer it in twice its volume of water.", "round_trip_chrf": 100.0,
         "chrf": expected_chrf},
        {"prompt": "Warum ist der Himmel blau?", "completion": PHRASES["Air scatters blue light more than red light."],
         "language": "de", "mode": "post-translating", "source_index": 1, "source_prompt": "Why is the sky blue?",
         "source_completion": "Air scatters blue light more than red light.", "round_trip_chrf": 100.0,
         "chrf": None},
    ]
    # the third answer came back in English: identified as such and rejected
    c = step.counts
    assert (c["kept.de"], c["rejected_language.de"], c["examples"]) == (2, 1, 3)
    assert c["chrf.de"] == round(expected_chrf, 2) and c["round_trip_chrf.de"] == 100.0

    # training reads the rows as sft and reports their language in data_stats.json
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    cfg = compose_config(["algo=sft", "model=tiny", "logger=none", "trainer.progress=false", "trainer.max_steps=1",
                          "trainer.batch_size=1", "trainer.eval_steps=0", "trainer.num_threads=1", "data=hh-rlhf-small",
                          f"data.sources.0.path={out}", "data.sources.0.format=auto", "data.sources.0.eval_size=0",
                          "data.sources.0.max_examples=null", f"trainer.output_dir={tmp_path}"])
    train(cfg, run_dir=str(tmp_path / "run"))
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    assert stats["languages"] == {"data.sources[0]": {"de": 2}} and stats["train"]["examples"] == 2


def test_post_answering_on_the_tiny_model(plugin_registry, tmp_path):
    pytest.importorskip("py3langid")
    src = write_jsonl(tmp_path / "en.jsonl", PAIRS)
    out = tmp_path / "de.jsonl"
    step = run_with(plugin_registry, f"input={src}", f"output={out}", "translator=phrasebook", "format=instruction",
                    "language_check=translation", "answer.max_new_tokens=8")
    rows = read_jsonl(out)
    # "Name a prime number." is translated too; answers (random text from the tiny model) are not checked
    assert [r["prompt"] for r in rows] == ["Wie koche ich Reis?", "Warum ist der Himmel blau?", "Nenne eine Primzahl."]
    assert all(r["completion"] and r["mode"] == "post-answering" and r["source_completion"] is None for r in rows)
    assert step.counts["kept.de"] == 3 and step.models["model"]["name"] == "tiny"
    with pytest.raises(Exception, match="rejected_language.de 3"):  # checked, they are not German
        run_with(plugin_registry, f"input={src}", f"output={tmp_path / 'all.jsonl'}", "translator=phrasebook",
                 "format=instruction", "answer.max_new_tokens=8", "resume=false")


ARGS = ["mode=post-translating", "language_check=none", "target_languages=[de,fr]", "translation.max_new_tokens=6",
        "batch_size=1"]


def test_model_backend_resumes_after_an_interrupt(run_step, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "en.jsonl", PAIRS)
    whole = run_step("translate", f"input={src}", f"output={tmp_path / 'whole.jsonl'}", *ARGS)
    assert whole.counts["kept.de"] == whole.counts["kept.fr"] == 3
    assert [(r["source_index"], r["language"]) for r in read_jsonl(tmp_path / "whole.jsonl")] == [
        (0, "de"), (0, "fr"), (1, "de"), (1, "fr"), (2, "de"), (2, "fr")]
    Interrupt(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        run_step("translate", f"input={src}", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    monkeypatch.undo()
    step = run_step("translate", f"input={src}", f"output={tmp_path / 'cut.jsonl'}", *ARGS)
    assert step.resumed_from == 2
    assert read_jsonl(tmp_path / "cut.jsonl") == read_jsonl(tmp_path / "whole.jsonl")


def test_translate_errors_are_one_line(run_step, tmp_path):
    from alignkit.errors import UserError

    src = write_jsonl(tmp_path / "en.jsonl", PAIRS)
    with pytest.raises(UserError, match="unknown translator 'deepl'; choose one of: model"):
        run_step("translate", f"input={src}", f"output={tmp_path / 'x.jsonl'}", "translator=deepl")
    with pytest.raises(UserError, match=r"no language name for 'tlh'.*\+language_names.tlh=<English name"):
        run_step("translate", f"input={src}", f"output={tmp_path / 'x.jsonl'}", "target_languages=[tlh]",
                 "resume=false")
    with pytest.raises(UserError, match="py3langid\\) does not know 'tlh'"):
        run_step("translate", f"input={src}", f"output={tmp_path / 'x.jsonl'}", "target_languages=[tlh]",
                 "+language_names.tlh=Klingon", "resume=false")
