"""Methods alignkit adds to vLLM's workers (``--worker-extension-cls
alignkit.rollout.vllm_worker.WeightSync``), called through ``collective_rpc``.

Imported inside vLLM's worker processes; it needs nothing of alignkit but this module.
"""
from __future__ import annotations

import torch

__all__ = ["WeightSync"]


class WeightSync:
    """Mixed into vLLM's worker class: load the trainer's weights and reseed sampling."""

    def _alignkit_model(self):
        runner = self.model_runner
        return runner.get_model() if hasattr(runner, "get_model") else runner.model

    def alignkit_ping(self) -> str:
        return "ok"

    def alignkit_load_weights(self, named_tensors: list) -> int:
        """Load ``[(hf_name, tensor), ...]`` into the engine's model in place; returns how many
        tensors. vLLM's in-place reload redoes what it did after the first load (fused, repacked
        or quantised layouts, e.g. its CPU backend's linear layers), which a bare
        ``model.load_weights`` would skip."""
        runner = self.model_runner
        if hasattr(runner, "reload_weights"):
            runner.reload_weights(weights_iterator=iter(named_tensors), is_checkpoint_format=True)
        else:
            self._alignkit_model().load_weights(weights=named_tensors)
        return len(named_tensors)

    def alignkit_load_weights_file(self, path: str) -> int:
        """Load a safetensors file of Hugging Face-named weights (written by the trainer)."""
        from safetensors.torch import load_file

        return self.alignkit_load_weights(list(load_file(str(path)).items()))

    def alignkit_seed(self, seed) -> None:
        """Seed the sampler's generator (vLLM's CPU backend draws from torch's global RNG)."""
        torch.manual_seed(int(seed))
