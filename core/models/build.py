"""Build the tokenizer and model a run's ``model`` config asks for."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(model_cfg) -> str | None:
    """Folder or hub name to load from (None for the random-init tiny preset)."""
    if model_cfg.source == "tiny":
        return None
    if model_cfg.source == "smollm2":
        from alignkit.models.smollm2 import converted_path

        return str(converted_path())
    if model_cfg.source == "hf":
        if not model_cfg.path:
            raise ValueError("model.path must name a hub model or a local folder when model.source=hf")
        return model_cfg.path
    raise ValueError(f"model.source must be tiny, smollm2 or hf, got {model_cfg.source!r}")


def build_tokenizer(model_cfg):
    path = resolve_model_path(model_cfg)
    if path is None:
        from alignkit.models.tiny import load_tiny_tokenizer

        return load_tiny_tokenizer()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def build_model(model_cfg, kind: str = "causal_lm", tokenizer=None):
    """A ``transformers`` model: causal LM, or (``kind="reward"``) a sequence
    classifier with a scalar head; LoRA-wrapped when ``model.lora.enabled``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaForSequenceClassification

    if kind not in ("causal_lm", "reward"):
        raise ValueError(f"model kind must be causal_lm or reward, got {kind!r}")
    tokenizer = tokenizer or build_tokenizer(model_cfg)
    dtype = _DTYPES.get(model_cfg.dtype)
    if dtype is None:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {model_cfg.dtype!r}")
    path = resolve_model_path(model_cfg)
    if path is None:
        from alignkit.models.tiny import tiny_llama_config

        t = model_cfg.tiny
        config = tiny_llama_config(len(tokenizer), t.hidden_size, t.num_layers, t.num_heads, t.intermediate_size,
                                   t.max_position_embeddings, tokenizer.pad_token_id, tokenizer.bos_token_id,
                                   tokenizer.eos_token_id)
        config._attn_implementation = model_cfg.attn_implementation
        if kind == "reward":
            config.num_labels = 1
            model = LlamaForSequenceClassification(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
        model = model.to(dtype)
    else:
        common = dict(dtype=dtype, attn_implementation=model_cfg.attn_implementation,
                      trust_remote_code=model_cfg.trust_remote_code)
        if kind == "reward":
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **common)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **common)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if model_cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lc = model_cfg.lora
        model = get_peft_model(model, LoraConfig(
            r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=list(lc.target_modules),
            task_type="SEQ_CLS" if kind == "reward" else "CAUSAL_LM"))
    n = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model %s (%s): %.2fM parameters, %.2fM trainable", model_cfg.name, kind, n / 1e6, n_train / 1e6)
    return model


def save_model(model, tokenizer, path) -> None:
    """Save in Hugging Face format (safetensors) so ``transformers`` loads it
    directly; LoRA adapters are merged into the saved weights and also kept
    under ``adapter/``. Written to a temporary folder then renamed, so a crash
    never leaves a half-written model behind."""
    import shutil
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):  # peft
        model.save_pretrained(tmp / "adapter")
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
