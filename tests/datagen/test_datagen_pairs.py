"""pairs: best-of-n pairs and ranked lists with a reward function, trainable by DPO and PRO as written."""
import json

import pytest

from alignkit.datagen.pairs import clean_list, make_pairs, ranked_list

from datagen_helpers import SEEDS, Interrupt, read_jsonl


def test_clean_list_drops_and_counts():
    from collections import Counter

    counts = Counter()
    out = clean_list(["b", "", "a", "b", "c", "d"], [0.2, 0.9, 0.5, 0.2, float("nan"), 0.5], counts)
    assert out == [("a", 0.5), ("d", 0.5), ("b", 0.2)]  # best first, ties in sampling order
    assert counts == Counter({"empty_response": 1, "repeated_response": 1, "unscored_response": 1})


def test_pairing_by_hand():
    ranked = [("a", 3.0), ("b", 2.0), ("c", 2.0), ("d", 1.5)]
    best_worst = make_pairs("p", ranked, "best_worst", 0.0)
    assert [(r["chosen"], r["rejected"], r["chosen_score"], r["rejected_score"]) for r in best_worst] == [
        ("a", "d", 3.0, 1.5)]
    every = make_pairs("p", ranked, "all", 0.0)
    assert [(r["chosen"], r["rejected"]) for r in every] == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"),
                                                             ("c", "d")]  # b-c tie: no pair
    assert [(r["chosen"], r["rejected"]) for r in make_pairs("p", ranked, "all", 0.6)] == [
        ("a", "b"), ("a", "c"), ("a", "d")]  # gaps 1.0, 1.0, 1.5 > 0.6; 0.5 is not
    assert make_pairs("p", [("a", 1.0), ("b", 1.0)], "best_worst", 0.0) == []
    assert make_pairs("p", [("a", 1.0)], "all", 0.0) == []


def test_ranked_lists_drop_ties_unless_kept():
    ranked = [("a", 3.0), ("b", 2.0), ("c", 2.0), ("d", 1.5)]
    assert ranked_list("p", ranked, keep_ties=False) == {"prompt": "p", "responses": ["a", "b", "d"],
                                                         "scores": [3.0, 2.0, 1.5]}
    assert ranked_list("p", ranked, keep_ties=True)["responses"] == ["a", "b", "c", "d"]
    assert ranked_list("p", [("a", 1.0), ("b", 1.0)], keep_ties=False) is None


PAIRS_ARGS = [f"input={SEEDS}", "scorer=reward", "reward.function=char_frequency", "num_samples=4",
              "generation.max_new_tokens=12", "batch_size=8"]


def test_pairs_with_a_reward_function(run_step, registry, tmp_path):
    out, ranked_out = tmp_path / "pairs.jsonl", tmp_path / "ranked.jsonl"
    step = run_step("pairs", *PAIRS_ARGS, f"output={out}", f"ranked_output={ranked_out}")
    pairs, ranked = read_jsonl(out), read_jsonl(ranked_out)
    fn = registry.reward_function("char_frequency")
    for p in pairs:  # the written scores are the reward function's, and the chosen one wins
        expected = fn([p["prompt"]] * 2, [p["chosen"], p["rejected"]])
        assert [p["chosen_score"], p["rejected_score"]] == pytest.approx(expected)
        assert p["chosen_score"] > p["rejected_score"]
    by_prompt = {r["prompt"]: r for r in ranked}
    for p in pairs:  # best vs worst of that prompt's list
        assert (p["chosen"], p["rejected"]) == (by_prompt[p["prompt"]]["responses"][0],
                                                by_prompt[p["prompt"]]["responses"][-1])
    for r in ranked:
        assert r["scores"] == sorted(r["scores"], reverse=True) and len(set(r["scores"])) == len(r["scores"]) >= 2
    c = step.counts
    assert c["prompts"] == 16 and c["pairs"] == len(pairs) and c["ranked_lists"] == len(ranked)
    assert c["pairs"] + c["prompts_without_pair"] == 16
    responses = 16 * 4 - c["empty_response"] - c["unscored_response"] - c["repeated_response"]
    assert responses >= sum(len(r["responses"]) for r in ranked)
    prov = json.loads((tmp_path / "pairs.provenance.json").read_text())
    assert set(prov["outputs"]) == {"output", "ranked_output"} and prov["outputs"]["output"]["rows"] == len(pairs)

    # the pairs are DPO's preference format and the lists PRO's ranked format, as written
    from alignkit.config.schema import DataSource
    from alignkit.data.load import load_source

    formats = step.formats()
    train, _ = load_source(DataSource(path=str(out), eval_size=0), formats, "preference", 0)
    assert len(train) == len(pairs)
    lists, _ = load_source(DataSource(path=str(ranked_out), eval_size=0), formats, "ranked", 0)
    assert len(lists) == len(ranked)


def test_dpo_and_pro_train_on_the_written_files(run_step, tmp_path):
    from alignkit.trainer import train
    from alignkit.config.compose import compose_config

    out, ranked_out = tmp_path / "pairs.jsonl", tmp_path / "ranked.jsonl"
    run_step("pairs", *PAIRS_ARGS, f"output={out}", f"ranked_output={ranked_out}")
    for algo, path in (("dpo", out), ("pro", ranked_out)):
        written = len(read_jsonl(path))
        cfg = compose_config([f"algo={algo}", "model=tiny", "logger=none", "trainer.progress=false",
                              "trainer.max_steps=1", "trainer.batch_size=2", "trainer.eval_steps=0",
                              "trainer.num_threads=1", "data=hh-rlhf-small", f"data.sources.0.path={path}",
                              "data.sources.0.format=auto", "data.sources.0.eval_size=2",
                              "data.sources.0.max_examples=null", f"trainer.output_dir={tmp_path}"])
        result = train(cfg, run_dir=str(tmp_path / algo))
        stats = json.loads((tmp_path / algo / "data_stats.json").read_text())
        # every written example is used: none dropped by the data pipeline (PRO: no tie errors either)
        assert stats["train"]["examples"] + stats["eval"]["examples"] == written
        assert "train/loss" in result.metrics


def test_pairs_resume_after_an_interrupt(run_step, tmp_path, monkeypatch):
    args = [*PAIRS_ARGS, "batch_size=4"]
    run_step("pairs", *args, f"output={tmp_path / 'whole.jsonl'}")
    Interrupt(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        run_step("pairs", *args, f"output={tmp_path / 'cut.jsonl'}")
    monkeypatch.undo()
    step = run_step("pairs", *args, f"output={tmp_path / 'cut.jsonl'}")
    assert step.resumed_from == 8
    assert read_jsonl(tmp_path / "cut.jsonl") == read_jsonl(tmp_path / "whole.jsonl")


def test_pairs_without_a_reward_is_a_one_line_error(run_step, tmp_path):
    from alignkit.errors import UserError

    with pytest.raises(UserError, match="scorer=reward needs a reward model or a reward function"):
        run_step("pairs", f"input={SEEDS}", f"output={tmp_path / 'p.jsonl'}", "scorer=reward")
    with pytest.raises(UserError, match="unknown reward function 'nope'; choose one of: char_frequency"):
        run_step("pairs", f"input={SEEDS}", f"output={tmp_path / 'p.jsonl'}", "scorer=reward",
                 "reward.function=nope")
    with pytest.raises(UserError, match="model folder not found: runs/none"):
        run_step("pairs", f"input={SEEDS}", f"output={tmp_path / 'p.jsonl'}", "scorer=reward",
                 "reward.model_path=runs/none/final")
