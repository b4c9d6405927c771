"""Autoregressive helpers for the causal ``Transformer``: input shift, per-token log-probs, exact NLL.

Convention: the network input is ``[start, x0_0, ..., x0_{L-2}]`` with the [MASK] id as the start token, so the
logits at input position i predict x0_i and position 0 is scored too (a learned start state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ar_inputs(x0: torch.Tensor, start_id: int) -> torch.Tensor:
    """Shift right behind a start token so position 0 is scored too: (B, L) -> (B, L)."""
    start = torch.full_like(x0[:, :1], start_id)
    return torch.cat([start, x0[:, :-1]], dim=1)


def ar_log_probs(model, x0: torch.Tensor, mask_id: int) -> torch.Tensor:
    """log p_AR(x0_i = v | x0_<i) for every position and token: (B, L, V + 1) float32.

    The [MASK] id doubles as the start token, so the AR model shares the denoiser's embedding table size;
    its logit is set to -inf (never a data token).
    """
    logits = model(ar_inputs(x0, mask_id)).float()
    logits[..., mask_id] = float("-inf")
    return F.log_softmax(logits, dim=-1)


def ar_loss(model, x0: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Exact NLL per sequence (B,), nats per token."""
    token_lp = ar_log_probs(model, x0, mask_id).gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (B, L)
    return -token_lp.mean(-1)
