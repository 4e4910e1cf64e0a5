"""PPO's value function: a head on the policy's hidden states, or a separate model
initialised from the reward model (``algo.value_model``).

Values are per token and aligned with :func:`alignkit.modeling.token_logprobs`:
entry ``t`` is the value of the state after tokens ``0..t`` (the state in which
token ``t + 1`` is sampled).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from alignkit import ops
from alignkit.api import hidden_states, lm_head, unwrap_model


class ValueHead(nn.Module):
    """``Linear(H, 1)`` on the policy's final hidden states (init std ``1/sqrt(H+1)``, bias 0)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden_size + 1))
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, T]
        return self.linear(hidden.float()).squeeze(-1)


def policy_logprobs_and_values(policy: Any, head: ValueHead, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                               labels: torch.Tensor, *, temperature: float = 1.0):
    """One policy forward giving ``(logp, mask, entropy, values)``, all ``[B, T-1]``.

    The log-probs go through :func:`alignkit.ops.fused_linear_logprobs` on the final
    hidden states (as :func:`alignkit.modeling.token_logprobs` does), and the value head
    reads the same hidden states, so policy and value share one trunk pass.
    """
    h = hidden_states(policy, input_ids, attention_mask)[:, :-1]  # [B, T-1, H]
    targets = labels[:, 1:]  # [B, T-1]
    lm = lm_head(policy)
    B, Tm1, H = h.shape
    logp, ent = ops.fused_linear_logprobs(h.reshape(B * Tm1, H), lm.weight, targets.reshape(-1), bias=lm.bias,
                                          temperature=temperature, return_entropy=True)
    return logp.reshape(B, Tm1), targets != -100, ent.reshape(B, Tm1), head(h)


class SeparateValueModel(nn.Module):
    """A sequence classifier (loaded from the reward model's folder) whose scalar head is
    applied at every position: values ``[B, T-1]``."""

    def __init__(self, path: str):
        super().__init__()
        from alignkit.api import load_reward_model

        self.model, _ = load_reward_model(path)
        self.model.train().requires_grad_(True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = hidden_states(self.model, input_ids, attention_mask)[:, :-1]  # [B, T-1, H]
        return unwrap_model(self.model).score(h).squeeze(-1).float()
