"""The frozen reference model of DPO, PPO and friends."""
from __future__ import annotations

import contextlib
import copy

import torch

from alignkit import modeling


class ReferenceModel:
    """A frozen copy of the starting policy, or — under LoRA — the policy's own
    base weights with the adapters disabled (no second copy in memory)."""

    def __init__(self, policy):
        self.shares_policy = hasattr(policy, "disable_adapter")
        if self.shares_policy:
            self.model = policy
        else:
            self.model = copy.deepcopy(modeling.unwrap(policy)).eval().requires_grad_(False)

    def _ctx(self):
        return self.model.disable_adapter() if self.shares_policy else contextlib.nullcontext()

    def to(self, device):
        if not self.shares_policy:
            self.model.to(device)
        return self

    @torch.no_grad()
    def token_logprobs(self, input_ids, attention_mask, labels, **kw):
        with self._ctx():
            return modeling.token_logprobs(self.model, input_ids, attention_mask, labels, **kw)

    @torch.no_grad()
    def sequence_logprobs(self, input_ids, attention_mask, labels, **kw):
        with self._ctx():
            return modeling.sequence_logprobs(self.model, input_ids, attention_mask, labels, **kw)
