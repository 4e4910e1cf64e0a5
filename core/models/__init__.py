"""Models: presets (tiny, smollm2-135m, any Hugging Face causal LM), LoRA, reference model."""
from alignkit.models.build import build_model, build_tokenizer, resolve_model_path, save_model  # noqa: F401
from alignkit.models.reference import ReferenceModel  # noqa: F401
