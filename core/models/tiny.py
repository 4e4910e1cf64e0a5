"""The ``tiny`` preset: a random-init Llama-style model and a tokenizer that needs no download.

The tokenizer is a byte-level BPE (vocabulary 4,096) trained once on the bundled
HH-RLHF sample by :func:`train_tiny_tokenizer` and shipped as
``alignkit/assets/tiny_tokenizer/tokenizer.json``, so token ids are stable
across machines and versions of ``tokenizers``.
"""
from __future__ import annotations

from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_tokenizer"
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>"]


def train_tiny_tokenizer(texts, vocab_size: int = 4096):
    """Train the byte-level BPE used by the ``tiny`` preset (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tiny_tokenizer():
    """The shipped tiny tokenizer as a ``PreTrainedTokenizerFast`` (no chat template)."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(ASSET_DIR / "tokenizer.json"),
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
    )
    tok.padding_side = "right"
    return tok


def tiny_llama_config(vocab_size: int, hidden_size: int = 96, num_layers: int = 2, num_heads: int = 4,
                      intermediate_size: int = 256, max_position_embeddings: int = 1024, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=False,
    )


if __name__ == "__main__":  # python -m alignkit.models.tiny  -> rebuilds the shipped tokenizer
    import gzip
    import json

    data = Path(__file__).resolve().parent.parent / "assets" / "hh_rlhf" / "harmless-base-dev.jsonl.gz"
    with gzip.open(data, "rt") as f:
        rows = [json.loads(line) for line in f]
    texts = [r[k] for r in rows for k in ("chosen", "rejected")]
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    train_tiny_tokenizer(texts).save(str(ASSET_DIR / "tokenizer.json"))
    print("wrote", ASSET_DIR / "tokenizer.json")
