"""Ranked lists built online: sampled by a model, scored, cached on disk."""
from types import SimpleNamespace

import pytest
import torch

from alignkit.ranking.lists import build_ranked_online, model_fingerprint, read_jsonl
from alignkit.models.tiny import load_tiny_tokenizer, tiny_llama_config

DATA = SimpleNamespace(max_length=128, max_prompt_length=64, truncation="truncate")
SAMPLING = {"max_new_tokens": 8, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


class LengthScorer:
    """Score = number of characters; counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompts, completions, references=None, **_):
        self.calls += 1
        return torch.tensor([float(len(c)) for c in completions])


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaForCausalLM

    tok = load_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_llama_config(len(tok), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    return LlamaForCausalLM(cfg), tok


def test_sample_score_and_cache(tiny, tmp_path):
    model, tok = tiny
    prompts = ["Hello there", [{"role": "user", "content": "How are you?"}], "Tell me a story"]
    extra = [["good answer", "bad"], ["fine", "meh"], ["once upon a time", "no"]]
    scorer = LengthScorer()
    kw = dict(k=3, sampling=SAMPLING, seed=1, reward_name="length", extra_responses=extra, cache_dir=tmp_path,
              batch_size=2)
    rows, path, cached = build_ranked_online(prompts, model, tok, DATA, scorer, **kw)
    assert not cached and path.exists() and path.parent == tmp_path
    assert [r["prompt"] for r in rows] == prompts
    for r, e in zip(rows, extra):
        assert len(r["responses"]) == 5 and r["responses"][:2] == e
        assert r["scores"] == [float(len(c)) for c in r["responses"]]
    assert read_jsonl(path) == rows
    assert scorer.calls == 2  # two prompt batches

    again, path2, cached2 = build_ranked_online(prompts, model, tok, DATA, scorer, **kw)
    assert cached2 and path2 == path and again == rows and scorer.calls == 2

    # a different sampling config, seed or model is a different cache entry
    _, path3, cached3 = build_ranked_online(prompts, model, tok, DATA, scorer, **{**kw, "seed": 2})
    assert not cached3 and path3 != path


def test_same_seed_same_lists_and_fingerprint(tiny, tmp_path):
    model, tok = tiny
    kw = dict(k=2, sampling=SAMPLING, seed=5, reward_name="length")
    a, _, _ = build_ranked_online(["Hi"], model, tok, DATA, LengthScorer(), cache_dir=tmp_path / "a", **kw)
    b, _, _ = build_ranked_online(["Hi"], model, tok, DATA, LengthScorer(), cache_dir=tmp_path / "b", **kw)
    assert a == b
    fp = model_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert model_fingerprint(model) != fp
    with torch.no_grad():
        next(model.parameters()).sub_(1.0)


def test_missing_eos_penalty(tiny, tmp_path):
    model, tok = tiny
    rows, _, _ = build_ranked_online(["Hi"], model, tok, DATA, LengthScorer(), k=4,
                                     sampling={**SAMPLING, "max_new_tokens": 2}, seed=0, reward_name="length",
                                     cache_dir=tmp_path, missing_eos_penalty=100.0)
    # a random model almost never emits EOS within 2 tokens: the penalty shows
    assert any(s < 0 for s in rows[0]["scores"])
