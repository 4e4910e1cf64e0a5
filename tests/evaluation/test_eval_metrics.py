"""alignkit eval's metrics on hand-computed examples, its config node, its hook and its errors
(no training: a few seconds)."""
import json
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from alignkit.evaluation.generation_metrics import distinct_n, response_stats, sequence_kl, win_rate
from alignkit.evaluation.preference import compare, score_pairs, wilson
from alignkit.evaluation.report import md_escape


def test_wilson_interval_small_case():
    # 3 successes of 4 (p = 0.75, n = 4), z = 1.959964, z² = 3.841459, by hand:
    # centre = (0.75 + z²/8) / (1 + z²/4) = 1.230182 / 1.960365 = 0.627527
    # half = z * sqrt(0.75 * 0.25 / 4 + z²/64) / (1 + z²/4) = 1.959964 * 0.326953 / 1.960365 = 0.326886
    lo, hi = wilson(0.75, 4)
    assert lo == pytest.approx(0.627527 - 0.326886, abs=2e-6)
    assert hi == pytest.approx(0.627527 + 0.326886, abs=2e-6)
    lo, hi = wilson(0.5, 10)  # 5 of 10: the textbook (0.2366, 0.7634)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson(1.0, 8)  # never [1, 1]: 8 of 8 -> (0.6756, 1)
    assert round(lo, 4) == 0.6756 and hi == 1.0


def test_accuracy_counts_ties_as_half():
    r = compare(torch.tensor([2.0, 1.0, 0.0, 5.0]), torch.tensor([1.0, 1.0, 3.0, 4.0]))
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (2, 1, 1, 4)
    assert r["value"] == 0.625
    assert r["ci"] == pytest.approx(list(wilson(0.625, 4)))
    assert compare(torch.zeros(6), torch.zeros(6))["value"] == 0.5  # an untrained policy: every pair ties


def test_win_rate_with_ties():
    w = win_rate(torch.tensor([0.9, 0.2, 0.5, 0.5, 0.1]), torch.tensor([0.1, 0.3, 0.5, 0.4, 0.1]))
    assert (w["wins"], w["ties"], w["losses"]) == (2, 2, 1)
    assert w["value"] == pytest.approx(3 / 5)


def test_distinct_n_on_fixed_strings():
    texts = ["the cat the cat", "the dog"]
    # unigrams: the cat the cat the dog -> {the, cat, dog} = 3 of 6
    assert distinct_n(texts, 1) == 0.5
    # bigrams: (the cat) (cat the) (the cat) (the dog) -> 3 of 4
    assert distinct_n(texts, 2) == 0.75
    assert distinct_n(["a b c"], 2) == 1.0
    assert distinct_n(["", "one"], 2) == 0.0  # no bigram at all


def test_sequence_kl_on_known_logprobs():
    policy = torch.tensor([-1.0, -2.0, -3.0])
    reference = torch.tensor([-2.0, -2.0, -1.0])
    assert sequence_kl(policy, reference) == pytest.approx((1.0 + 0.0 - 2.0) / 3)
    assert sequence_kl(reference, reference) == 0.0
    with pytest.raises(ValueError):
        sequence_kl(policy, reference[:2])


def test_response_stats():
    s = response_stats(torch.tensor([3, 5, 8, 8]), torch.tensor([True, True, False, False]))
    assert s == {"length_tokens": 6.0, "eos_rate": 0.5}


def test_markdown_escaping_keeps_one_cell():
    cell = md_escape("a | b\nc *d* <b>x</b> [l](u) `c` \\")
    assert "\n" not in cell and cell.count("<br>") == 1
    assert cell.replace("\\|", "").count("|") == 0  # no unescaped pipe can split the row
    assert cell == "a \\| b<br>c \\*d\\* \\<b\\>x\\</b\\> \\[l\\](u) \\`c\\` \\\\"
    assert md_escape(None) == "-"


# -- config node ------------------------------------------------------------------------------------
def test_eval_config_is_typed_and_range_checked():
    from alignkit.config.compose import ConfigError, compose_config

    cfg = compose_config(["eval.generation.num_prompts=3", "eval.lm_eval.tasks=[a,b]", "eval.judge.batch_size=2"])
    assert cfg.eval.generation.num_prompts == 3 and list(cfg.eval.lm_eval.tasks) == ["a", "b"]
    assert cfg.eval.judge.model_path is None and cfg.eval.lm_eval.limit is None
    with pytest.raises(ConfigError, match=r"eval.generation.temperature=-1.0 is out of range"):
        compose_config(["eval.generation.temperature=-1"])
    with pytest.raises(ConfigError, match=r"'nmu_prompts' is not a key of 'eval.generation'"):
        compose_config(["eval.generation.nmu_prompts=3"])
    with pytest.raises(ConfigError, match=r"eval.generation.num_prompts=x is not an integer"):
        compose_config(["eval.generation.num_prompts=x"])


# -- the hook ---------------------------------------------------------------------------------------
PLUGIN = """
from alignkit.api import EvalMetricSpec, hookimpl

def _count(prompts, policy, reference):
    return {{"n": len(policy), "has_reference": float(reference is not None)}}

@hookimpl
def alignkit_register_eval_metrics():
    return [EvalMetricSpec("{name}", _count, "counts")]
"""


@pytest.fixture
def metric_plugins(tmp_path, monkeypatch):
    for mod, name in (("evm_one", "count"), ("evm_two", "count"), ("evm_distinct", "distinct")):
        (tmp_path / f"{mod}.py").write_text(textwrap.dedent(PLUGIN.format(name=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in ("evm_one", "evm_two", "evm_distinct"):
        sys.modules.pop(mod, None)


def test_eval_metric_hook_collects_plugins_and_builtins(metric_plugins):
    from alignkit.evaluation.run import plugin_metrics
    from alignkit.registry import build_registry

    reg = build_registry(extra_modules=["evm_one"])
    assert reg.eval_metrics["count"][1] == "evm_one"
    assert reg.eval_metrics["distinct"][1] == "core"  # the built-in registers through the same hook
    out = plugin_metrics(reg, ["p1", "p2"], ["a b", "a c"], None)
    assert out["count/n"] == 2.0 and out["count/has_reference"] == 0.0
    assert out["distinct/policy_distinct_1"] == 0.75 and "distinct/reference_distinct_1" not in out


@pytest.mark.parametrize("modules, names", [(["evm_one", "evm_two"], ("evm_one", "evm_two")),
                                            (["evm_distinct"], ("core", "evm_distinct"))])
def test_two_plugins_claiming_one_metric_is_an_error_naming_both(metric_plugins, modules, names):
    from alignkit.registry import PluginError, build_registry

    with pytest.raises(PluginError) as err:
        build_registry(extra_modules=modules)
    msg = str(err.value)
    assert "eval metric" in msg and "registered by two plugins" in msg
    assert all(f"'{n}'" in msg for n in names) and "plugins.disable" in msg


def test_eval_metric_spec_is_public():
    import alignkit.api

    assert "EvalMetricSpec" in alignkit.api.__all__
    assert alignkit.api.EvalMetricSpec.__module__ == "alignkit.evaluation.spec"


# -- errors: one line, exit 2 -------------------------------------------------------------------------
def _cli(capsys, *argv):
    from alignkit.cli import main

    code = main(["eval", *argv])
    out = capsys.readouterr()
    return code, SimpleNamespace(out=out.out, err=out.err.splitlines()[-1] + "\n" if out.err else "", full=out.err)


def test_neither_run_nor_model_folder(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hi")
    code, out = _cli(capsys, str(tmp_path))
    assert code == 2
    assert out.err.strip() == (f"alignkit: {tmp_path} is neither a run folder (config.yaml + final/) nor a model "
                               "folder (config.json); give the folder alignkit train printed, or a saved Hugging "
                               "Face model folder")
    code, out = _cli(capsys, str(tmp_path / "missing"))
    assert code == 2 and out.err.startswith("alignkit: no such folder") and "Traceback" not in out.full
    code, out = _cli(capsys)
    assert code == 2 and "needs a run folder or a model folder" in out.err


def test_run_without_final_model(tmp_path, capsys):
    from alignkit.config.compose import compose_config
    from omegaconf import OmegaConf

    OmegaConf.save(compose_config([]), tmp_path / "config.yaml")
    code, out = _cli(capsys, str(tmp_path))
    assert code == 2
    assert "has no final/ model (the run did not finish)" in out.err and "trainer.resume=auto" in out.err


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from alignkit.config.compose import compose_config
    from alignkit.models import build_model, build_tokenizer, save_model

    cfg = compose_config(["model=tiny", "model.tiny.hidden_size=32", "model.tiny.num_layers=1",
                          "model.tiny.num_heads=2", "model.tiny.intermediate_size=64"])
    tok = build_tokenizer(cfg.model)
    path = tmp_path_factory.mktemp("tiny_model") / "model"
    save_model(build_model(cfg.model, tokenizer=tok), tok, path)
    return path


def test_data_without_pairs(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"question {i}?"}) + "\n" for i in range(10)))
    code, out = _cli(capsys, str(tiny_model_dir), "data.name=prompts",
                     f"data.sources=[{{path: {data}, format: prompt, eval_size: 3}}]",
                     f"eval.output_dir={tmp_path / 'ev'}", "eval.progress=false")
    assert code == 2, out
    assert out.err.startswith("alignkit: data 'prompts' has no preference pairs to evaluate on")
    assert not (tmp_path / "ev").exists()


def test_model_folder_refuses_model_group_and_bad_reference(tiny_model_dir, tmp_path, capsys):
    code, out = _cli(capsys, str(tiny_model_dir), "model=tiny")
    assert code == 2 and "alignkit eval takes model from the model folder" in out.err
    code, out = _cli(capsys, str(tiny_model_dir), f"eval.reference={tmp_path / 'nope'}")
    assert code == 2 and "model folder not found" in out.err and "check eval.reference" in out.err
    code, out = _cli(capsys, str(tiny_model_dir), "eval.reward_function=no_such_fn")
    assert code == 2 and "eval.reward_function=no_such_fn" in out.err and "char_frequency" in out.err


def test_score_pairs_by_length_keeps_the_pairs_order():
    """Longest-first batches give every pair its own scores back, in the order of the features."""
    from alignkit.data.collate import collate

    class Tok:
        pad_token_id = 0

    lengths = [(3, 5), (9, 2), (1, 1), (6, 7), (4, 4)]  # (chosen, rejected) tokens of 5 pairs
    feats = [{"chosen_input_ids": list(range(1, c + 1)), "chosen_labels": list(range(1, c + 1)),
              "rejected_input_ids": list(range(1, r + 1)), "rejected_labels": list(range(1, r + 1))}
             for c, r in lengths]
    seen = []

    def scorer(b):  # the number of real tokens of each row, and the batch's padded width
        seen.append(b["chosen_input_ids"].shape[0])
        return {"n": (b["chosen_attention_mask"].sum(-1), b["rejected_attention_mask"].sum(-1))}

    table = score_pairs(feats, lambda c: collate(c, "preference", Tok()), {"s": scorer}, 2, "cpu",
                        progress=False, by_length=True)["s"]["n"]
    assert table.tolist() == [[3, 9, 1, 6, 4], [5, 2, 1, 7, 4]]
    assert seen == [2, 2, 1]
