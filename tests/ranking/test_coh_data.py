"""Chain-of-Hindsight data: feedback sequences, loss masks, forgetful causal mask."""
import pytest
import torch

from alignkit import ops
from alignkit.plugins.coh.data import (
    FORMS,
    choose_form,
    forgetful_causal_mask,
    generation_prompt,
    prompt_text,
    tokenize_eval_pair,
    tokenize_feedback,
)
from alignkit.losses.coh import coh_loss
from alignkit.models.tiny import load_tiny_tokenizer, tiny_llama_config

EX = {"prompt": [{"role": "user", "content": "How do I bake bread?"},
                 {"role": "assistant", "content": "With flour."},
                 {"role": "user", "content": "And then?"}],
      "chosen": "Knead the dough and bake it.", "rejected": "No idea, go away."}


@pytest.fixture(scope="module")
def tok():
    return load_tiny_tokenizer()


def _loss_text(tok, f):
    return tok.decode([i for i, lab in zip(f["input_ids"], f["labels"]) if lab != -100])


@pytest.mark.parametrize("form", FORMS)
def test_feedback_forms_and_loss_mask(tok, form):
    f = tokenize_feedback(EX, tok, 512, form)
    full = tok.decode(f["input_ids"])
    good = " A helpful answer: Knead the dough and bake it.<|eos|>"
    bad = " An unhelpful answer: No idea, go away.<|eos|>"
    body = {"good": good, "bad": bad, "good_bad": good + bad, "bad_good": bad + good}[form]
    assert full == "User: How do I bake bread?\n\nAssistant: With flour.\n\nUser: And then?" + body
    # only the responses and their EOS are trained on, in the order they appear
    resp = {"good": [" Knead the dough and bake it.<|eos|>"], "bad": [" No idea, go away.<|eos|>"]}
    want = "".join(sum((resp[p] for p in form.split("_")), []))
    assert _loss_text(tok, f) == want
    assert f["labels"][-1] == tok.eos_token_id


def test_hh_dialogue_records_and_prompt_rendering(tok):
    raw = {"chosen": "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: Goodbye!",
           "rejected": "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: whatever"}
    f = tokenize_feedback(raw, tok, 512, "good_bad")
    assert tok.decode(f["input_ids"]) == ("User: hi there\n\nAssistant: hello\n\nUser: bye A helpful answer: Goodbye!"
                                          "<|eos|> An unhelpful answer: whatever<|eos|>")
    assert prompt_text("\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:") == \
        "hi there\n\nAssistant: hello\n\nUser: bye"
    assert generation_prompt("Tell me a joke") == "User: Tell me a joke A helpful answer:"


def test_eval_pair_uses_helpful_prompt(tok):
    f = tokenize_eval_pair(EX, tok, 512)
    assert tok.decode(f["chosen_input_ids"]).endswith("And then? A helpful answer: Knead the dough and bake it.<|eos|>")
    assert tok.decode(f["rejected_input_ids"]).endswith("And then? A helpful answer: No idea, go away.<|eos|>")
    assert _loss_text(tok, {"input_ids": f["rejected_input_ids"], "labels": f["rejected_labels"]}) == \
        " No idea, go away.<|eos|>"


def test_truncation_cuts_prompt_first(tok):
    long = dict(EX, prompt="blah " * 400)
    f = tokenize_feedback(long, tok, 64, "good_bad")
    assert len(f["input_ids"]) <= 64
    assert _loss_text(tok, f) == " Knead the dough and bake it.<|eos|> No idea, go away.<|eos|>"


def test_form_choice_is_deterministic_and_covers_forms():
    exs = [dict(EX, chosen=f"answer {i}") for i in range(40)]
    picks = [choose_form(e, FORMS) for e in exs]
    assert picks == [choose_form(e, FORMS) for e in exs]
    assert set(picks) == set(FORMS)
    assert {choose_form(e, ["good"]) for e in exs} == {"good"}


def test_coh_loss_ignores_logits_at_prompt_and_marker_positions(tok):
    """Logits at position t score token t+1: perturbing every position whose target is a prompt
    or marker token leaves the loss unchanged; perturbing one that predicts a response token does not."""
    f = tokenize_feedback(EX, tok, 512, "bad_good")
    ids = torch.tensor([f["input_ids"]])
    labels = torch.tensor([f["labels"]])
    V = len(tok)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, ids.shape[1], V, generator=g, dtype=torch.float64)

    def loss_of(lg):
        targets = labels[:, 1:]
        logp = ops.logprobs(lg[:, :-1], targets)
        return coh_loss(logp, targets != -100)[0]

    base = loss_of(logits)
    context = (labels[0, 1:] == -100).nonzero().flatten()  # positions predicting prompt / marker tokens
    assert len(context) > 10
    bumped = logits.clone()
    bumped[0, context] += 5 * torch.randn(len(context), V, generator=g, dtype=torch.float64)
    bumped[0, -1] += 100.0  # the last position predicts nothing
    assert loss_of(bumped).item() == pytest.approx(base.item(), abs=1e-12)
    response_pos = (labels[0, 1:] != -100).nonzero().flatten()[0]
    bumped[0, response_pos] += 5 * torch.randn(V, generator=g, dtype=torch.float64)
    assert loss_of(bumped).item() != pytest.approx(base.item(), abs=1e-6)


def test_forgetful_causal_mask_structure():
    am = torch.ones(3, 200, dtype=torch.long)
    am[2, 150:] = 0
    m = forgetful_causal_mask(am, 0.05, generator=torch.Generator().manual_seed(0))
    assert m.shape == (3, 1, 200, 200)
    keep = m[:, 0] == 0
    assert not keep.triu(1).any()  # never the future
    assert keep[:, :, 0].all()  # position 0 always visible
    assert not keep[2, :, 150:].any()  # padding keys hidden
    past = torch.ones(200, 200, dtype=torch.bool).tril()
    frac = 1 - keep[:2][:, past].float().mean()
    assert 0.0 < frac < 0.06  # ~U(0, 0.05) of past pairs dropped
    plain = forgetful_causal_mask(am, 0.0)[:, 0] == 0
    assert torch.equal(plain[0], past)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_forgetful_mask_works_with_hf_llama(tok, attn):
    from transformers import LlamaForCausalLM

    cfg = tiny_llama_config(len(tok), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(3, 4000, (2, 12))
    am = torch.ones(2, 12, dtype=torch.long)
    am[1, 9:] = 0
    ref = model(input_ids=ids, attention_mask=am).logits
    same = model(input_ids=ids, attention_mask=forgetful_causal_mask(am, 0.0)).logits
    assert torch.allclose(ref[am.bool()], same[am.bool()], atol=1e-5)
    fcm_mask = forgetful_causal_mask(am, 0.5, generator=torch.Generator().manual_seed(1))
    fcm = model(input_ids=ids, attention_mask=fcm_mask).logits
    assert torch.isfinite(fcm).all()
    assert not torch.allclose(ref[am.bool()], fcm[am.bool()], atol=1e-3)
