"""Build the tokenizer and model a run's ``model`` config asks for.

``model.path`` is checked before ``transformers`` sees it, so a wrong path is one
line saying what is wrong (:class:`alignkit.errors.UserError`): a local-looking
path (absolute, ``./``, ``../``, ``~``, or more separators than a hub name) that
does not exist, a folder without ``config.json``, or a hub name that is neither
cached nor reachable because the hub is offline.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from alignkit.data.load import hub_offline, looks_like_local_path, resolved_from
from alignkit.errors import UserError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_EXAMPLE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _check_local_folder(path: str, folder: Path, key: str) -> str:
    """An existing path must be a model folder holding ``config.json``."""
    if not folder.is_dir():
        raise UserError(f"{key} is a file, not a model folder: {path}", f"point {key} at the folder holding config.json")
    if not (folder / "config.json").is_file():
        raise UserError(f"model folder has no config.json: {path}",
                        f"point {key} at a folder written by save_pretrained (config.json, weights, tokenizer)")
    return str(folder)


def _check_hub_name(path: str, key: str) -> str:
    """A hub name must be well formed, and cached when the hub is offline."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError as exc:
        raise UserError(f"{key} is neither a local folder nor a valid hub name: {path}",
                        f"give an existing folder with config.json or a hub name such as {_HUB_EXAMPLE}") from exc
    offline = hub_offline("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if offline and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise UserError(f"{key}={path} is not a local folder, and the hub is offline ({offline} is set) "
                        f"with no cached copy", f"download it once online (hf download {path}), unset {offline}, "
                        f"or set {key} to a local folder")
    return path


def check_model_path(path: str, key: str = "model.path") -> str:
    """The local folder or hub name to load ``path`` from; a :class:`UserError` naming ``key``
    when it is neither an existing model folder nor a usable hub name."""
    local = os.path.expanduser(path)
    if os.path.exists(local):
        return _check_local_folder(path, Path(local), key)
    if looks_like_local_path(path):
        raise UserError(f"model folder not found: {path}{resolved_from(path, local)}",
                        f"check {key}: give an existing folder with config.json or a hub name such as {_HUB_EXAMPLE}")
    return _check_hub_name(path, key)


def resolve_model_path(model_cfg) -> str | None:
    """Folder or hub name to load from (None for the random-init tiny preset)."""
    if model_cfg.source == "tiny":
        return None
    if model_cfg.source == "smollm2":
        from alignkit.models.smollm2 import converted_path

        return str(converted_path())
    if model_cfg.source == "hf":
        if not model_cfg.path:
            raise UserError("model.path is not set", "give model.path=<hub name or local folder> with model.source=hf")
        return check_model_path(model_cfg.path)
    raise UserError(f"unknown model.source {model_cfg.source!r}", "set model.source to tiny, smollm2 or hf")


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
    if model_cfg.get("lean_activations", False):
        from alignkit.models.lean import apply_lean_activations

        lean = apply_lean_activations(model)
        log.info("model.lean_activations: %d RMSNorm and %d MLP modules keep fewer tensors for backward",
                 lean["norms"], lean["mlps"])
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


def save_model(model, tokenizer, path, state_dict: dict | None = None) -> None:
    """Save in Hugging Face format (safetensors) so ``transformers`` loads it
    directly; LoRA adapters are merged into the saved weights and also kept
    under ``adapter/``. ``state_dict``: the weights to write when the model does
    not hold them whole (gathered from FSDP shards). Written to a temporary folder then renamed, so a crash
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
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
