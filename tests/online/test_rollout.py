"""Generation (left-padded prompts, stop at EOS, re-packing, masks aligned with
token_logprobs) and reward scoring (functions, reward model, per-example determinism)."""
from types import SimpleNamespace

import inspect

import pytest
import torch

from alignkit.models.tiny import load_tiny_tokenizer, tiny_llama_config
from alignkit.plugins import rewards
from alignkit.rollout import RewardScorer, generate, generate_from_prompts, stop_token_ids

DATA = SimpleNamespace(max_length=96, max_prompt_length=48, truncation="truncate")


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaForCausalLM

    tok = load_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_llama_config(len(tok), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval(), tok


PROMPTS = ["Hello there, how are you doing today?", "Hi", [{"role": "user", "content": "Tell me a story"}]]


def test_generate_repacks_left_aligned_with_aligned_masks(tiny):
    model, tok = tiny
    ro = generate_from_prompts(model, tok, PROMPTS, DATA, max_new_tokens=6, temperature=1.0, num_samples=2)
    assert len(ro) == 6 and ro.group_size == 2
    assert ro.prompts == [p for p in PROMPTS for _ in range(2)]
    for i in range(len(ro)):
        p, r = int(ro.prompt_lengths[i]), int(ro.response_lengths[i])
        assert ro.attention_mask[i].tolist() == [1] * (p + r) + [0] * (ro.input_ids.shape[1] - p - r)
        assert (ro.labels[i, :p] == -100).all() and (ro.labels[i, p + r:] == -100).all()
        assert torch.equal(ro.labels[i, p:p + r], ro.input_ids[i, p:p + r])
        assert 1 <= r <= 6
    # mask entry t is True where token t + 1 is a response token (token_logprobs alignment)
    assert torch.equal(ro.mask, ro.labels[:, 1:] != -100)
    assert ro.mask.sum(1).tolist() == ro.response_lengths.tolist()


def test_greedy_tokens_are_argmax_at_repacked_positions(tiny):
    """Re-packing must keep the positions generate used: each greedy token is the argmax of a
    plain forward of the left-aligned sequence."""
    model, tok = tiny
    ro = generate_from_prompts(model, tok, PROMPTS[:2], DATA, max_new_tokens=5, temperature=0.0)
    with torch.no_grad():
        logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask).logits
    pred = logits[:, :-1].argmax(-1)  # [N, T-1] prediction of token t + 1
    assert torch.equal(pred[ro.mask], ro.input_ids[:, 1:][ro.mask])


def test_stop_at_eos_and_decoded_completion(tiny):
    model, tok = tiny
    greedy = generate_from_prompts(model, tok, ["Hi"], DATA, max_new_tokens=6, temperature=0.0)
    assert not bool(greedy.has_eos[0]) and int(greedy.response_lengths[0]) == 6
    p = int(greedy.prompt_lengths[0])
    third = int(greedy.input_ids[0, p + 2])  # make the 3rd greedy token a stop token
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = third
    try:
        assert third in stop_token_ids(model, tok)
        ro = generate_from_prompts(model, tok, ["Hi"], DATA, max_new_tokens=6, temperature=0.0)
    finally:
        model.generation_config.eos_token_id = old
    assert bool(ro.has_eos[0]) and int(ro.response_lengths[0]) == 3
    assert ro.completions[0] == tok.decode(greedy.input_ids[0, p:p + 2].tolist(), skip_special_tokens=True)
    sub = ro.select([0])
    assert sub.input_ids.shape[1] == p + 3


def test_select_keeps_rows_and_trims(tiny):
    model, tok = tiny
    ro = generate_from_prompts(model, tok, PROMPTS, DATA, max_new_tokens=4, num_samples=2)
    sub = ro.select(torch.tensor([5, 0]))
    assert sub.prompts == [ro.prompts[5], ro.prompts[0]] and sub.group_size == 1
    assert torch.equal(sub.labels[0, : sub.labels.shape[1]], ro.labels[5, : sub.labels.shape[1]])
    assert ro.select(torch.arange(6)).group_size == 2


def test_reward_functions_are_per_example_and_deterministic():
    comps = ["eee", "", "the cat sat on the mat", "thanks, glad to help"]
    prompts = ["p"] * len(comps)
    for name, f in rewards.alignkit_register_reward_functions().items():
        refs = {"references": ["12"] * len(comps)} if "references" in inspect.signature(f).parameters else {}
        one = {"references": ["12"]} if refs else {}
        batch = f(prompts, comps, **refs)
        alone = [f(["p"], [c], **one)[0] for c in comps]
        assert batch == alone == f(prompts, comps, **refs), name
    assert rewards.char_frequency(["p"], ["eEa", ""]) == [2 / 3, 0.0]
    assert rewards.length_target(["p"] * 2, ["abcd", "a b"], target=2) == [-1.0, 0.5 - 1.0]
    assert rewards.length_target(["p"], ["a b"], target=2, unit="words") == [0.0]
    assert rewards.distinct_words(["p"], ["the cat the dog"]) == [0.75]
    assert rewards.lexicon(["p"], ["thanks a lot, great"]) == [0.5]


def test_scorer_with_function():
    scorer = RewardScorer(function=rewards.length_target, kwargs={"target": 4})
    out = scorer(["a", "b"], ["abcd", "ab"])
    assert out.dtype == torch.float32 and out.tolist() == [0.0, -0.5]
    with pytest.raises(ValueError, match="prompts"):
        scorer(["a"], ["x", "y"])


def test_scorer_with_reward_model_ids_text_and_determinism(tiny, tmp_path):
    from transformers import LlamaForSequenceClassification

    model, tok = tiny
    torch.manual_seed(1)
    rm = LlamaForSequenceClassification(tiny_llama_config(len(tok), hidden_size=32, num_layers=2, num_heads=2,
                                                          intermediate_size=64, pad_token_id=tok.pad_token_id))
    rm.config.num_labels = 1
    rm.score = torch.nn.Linear(32, 1, bias=False)
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    run = SimpleNamespace(device=torch.device("cpu"), cfg=SimpleNamespace(data=DATA), tokenizer=tok)
    reward_cfg = SimpleNamespace(function=None, model_path=str(tmp_path / "rm"), kwargs={}, batch_size=2)
    scorer = RewardScorer.from_config(reward_cfg, run)
    assert scorer.shares_tokenizer
    ro = generate_from_prompts(model, tok, PROMPTS[:2], DATA, max_new_tokens=5, num_samples=2)
    by_ids = scorer(ro.prompts, ro.completions, input_ids=ro.input_ids, attention_mask=ro.attention_mask)
    alone = torch.cat([scorer([ro.prompts[i]], [ro.completions[i]], input_ids=ro.input_ids[i:i + 1],
                              attention_mask=ro.attention_mask[i:i + 1]) for i in range(len(ro))])
    assert torch.allclose(by_ids, alone, atol=1e-5)
    # the text path tokenises like the data pipeline; for responses that ended with EOS (or
    # decode/re-encode to the same ids) it gives the same scores
    by_text = scorer(ro.prompts, ro.completions)
    assert by_text.shape == (4,) and torch.isfinite(by_text).all()
    with pytest.raises(ValueError, match="exactly one"):
        RewardScorer()
