"""Exact token ids and loss masks of small hand-made examples."""
import pytest
from omegaconf import OmegaConf

from alignkit.data.collate import collate
from alignkit.data.tokenize import STATS, render_prompt, reset_stats, tokenize_example

CFG = OmegaConf.create({"max_length": 64, "max_prompt_length": 32, "truncation": "truncate"})
EOS = 2


def test_preference_ids_and_masks_are_pinned(tiny_tokenizer):
    ex = {"prompt": [{"role": "user", "content": "Hi there"}], "chosen": "Hello!", "rejected": "Go away."}
    f = tokenize_example(ex, "preference", tiny_tokenizer, CFG)
    # "\n" "\n" "Human" ":" " H" "i" " there" "\n" "\n" "Assistant" ":" | " Hello" "!" <|eos|>
    prompt = [201, 201, 301, 28, 390, 75, 484, 201, 201, 304, 28]
    assert f["chosen_input_ids"] == prompt + [3218, 3, EOS]
    assert f["chosen_labels"] == [-100] * 11 + [3218, 3, EOS]
    assert f["rejected_input_ids"] == prompt + [1572, 972, 16, EOS]
    assert f["rejected_labels"] == [-100] * 11 + [1572, 972, 16, EOS]


def test_plain_text_sft_gets_eos_and_masked_prompt(tiny_tokenizer):
    f = tokenize_example({"prompt": "Q: 2+2?\nA:", "completion": " 4"}, "sft", tiny_tokenizer, CFG)
    assert f["input_ids"] == [51, 28, 1177, 13, 20, 33, 201, 35, 28, 2319, EOS]
    assert f["labels"] == [-100] * 9 + [2319, EOS]


def test_hh_rendering_round_trips(tiny_tokenizer):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert render_prompt(msgs, tiny_tokenizer) == "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"


def test_chat_template_is_used_when_present(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}")
    f = tokenize_example({"prompt": "hi", "completion": "yo"}, "sft", tok, CFG)
    text = tok.decode(f["input_ids"])
    assert text == "<|bos|>user\nhi<|eos|>\n<|bos|>assistant\nyo<|eos|>"  # no trailing newline after end of turn
    n_prompt = len(tok("<|bos|>user\nhi<|eos|>\n<|bos|>assistant\n", add_special_tokens=False)["input_ids"])
    assert f["labels"][:n_prompt] == [-100] * n_prompt
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:] and f["labels"][-1] == EOS


def test_truncation_keeps_prompt_end_and_counts(tiny_tokenizer):
    reset_stats()
    cfg = OmegaConf.create({"max_length": 12, "max_prompt_length": 6, "truncation": "truncate"})
    ex = {"prompt": "one two three four five six seven eight", "completion": " nine ten eleven twelve thirteen"}
    f = tokenize_example(ex, "sft", tiny_tokenizer, cfg)
    full_prompt = tiny_tokenizer("one two three four five six seven eight", add_special_tokens=False)["input_ids"]
    assert len(f["input_ids"]) == 12
    assert f["input_ids"][:6] == full_prompt[-6:]  # prompt cut from the left
    assert f["labels"][:6] == [-100] * 6
    assert f["labels"][-1] != EOS  # a cut response gets no EOS
    assert STATS["prompt_truncated"] == 1 and STATS["response_truncated"] == 1


def test_drop_policy_counts(tiny_tokenizer):
    reset_stats()
    cfg = OmegaConf.create({"max_length": 5, "max_prompt_length": 4, "truncation": "drop"})
    assert tokenize_example({"prompt": "a b c d e f", "completion": " g"}, "sft", tiny_tokenizer, cfg) is None
    assert STATS["dropped"] == 1


def test_prompt_examples_keep_the_raw_prompt_next_to_rendered_ids(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "hi"}]
    f = tokenize_example({"prompt": msgs, "reference": None}, "prompt", tok, CFG)
    assert tok.decode(f["prompt_input_ids"]) == "<|bos|>user\nhi<|eos|>\n<|bos|>assistant\n"
    assert f["prompt"] == msgs  # reward functions and other tokenizers see the data's prompt, not the template
    b = collate([f, tokenize_example({"prompt": "yo"}, "prompt", tok, CFG)], "prompt", tok)
    assert b["prompts"] == [msgs, "yo"]


def test_collate_shapes_and_padding(tiny_tokenizer):
    ex = [{"prompt": "a", "chosen": " b", "rejected": " c d e"}, {"prompt": "a b c", "chosen": " x", "rejected": " y"}]
    feats = [tokenize_example(e, "preference", tiny_tokenizer, CFG) for e in ex]
    b = collate(feats, "preference", tiny_tokenizer)
    T = max(len(f[k]) for f in feats for k in ("chosen_input_ids", "rejected_input_ids"))
    assert b["chosen_input_ids"].shape == b["rejected_input_ids"].shape == (2, T)
    n = len(feats[0]["chosen_input_ids"])
    assert b["chosen_attention_mask"][0].tolist() == [1] * n + [0] * (T - n)
    assert b["chosen_labels"][0, n:].eq(-100).all()
    p = collate([{"prompt_input_ids": [5, 6], "prompt": "x"}, {"prompt_input_ids": [7], "prompt": "y"}], "prompt",
                tiny_tokenizer)
    assert p["prompt_input_ids"].tolist() == [[5, 6], [0, 7]]  # left padded for generation
    assert p["prompt_attention_mask"].tolist() == [[1, 1], [0, 1]]


def test_ranked_collate(tiny_tokenizer):
    ex = {"prompt": "q", "responses": [" a", " b b", " c"], "scores": [0.1, 0.9, 0.5]}
    f = tokenize_example(ex, "ranked", tiny_tokenizer, CFG)
    g = tokenize_example({**ex, "responses": [" a", " b"], "scores": [1.0, 0.0]}, "ranked", tiny_tokenizer, CFG)
    b = collate([f, g], "ranked", tiny_tokenizer)
    assert b["input_ids"].shape[:2] == (2, 3)
    assert b["valid"].tolist() == [[True, True, True], [True, True, False]]
    assert b["scores"][0].tolist() == pytest.approx([0.1, 0.9, 0.5])
