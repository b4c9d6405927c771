"""Float64 categorical sampling by inverse CDF (docs/method.md §2: never float32/bf16 Gumbel noise).

One uniform per draw, in float64, against a float64 cumulative distribution: no truncated noise tail, so no
silent temperature drop however many steps the sampler takes.
"""

from __future__ import annotations

import torch


def sampling_probs(log_probs: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Tempered, nucleus-filtered probabilities in float64. The nucleus is ReMDM's (kuleshov-group/remdm, used for
    its OpenWebText numbers at p = 0.9): the tokens whose cumulative probability, most likely first, is <= top_p,
    plus the most likely token (so the token that crosses top_p is dropped).

    Args: log_probs (..., V) float (may hold -inf). Returns (..., V) float64 summing to 1 on the last axis.
    """
    logits = log_probs.double()
    if temperature != 1.0:
        logits = logits / temperature
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # ReMDM's nucleus: keep the tokens whose cumulative probability is <= top_p, and always the top token
        keep = sorted_probs.cumsum(-1) <= top_p
        keep[..., 0] = True
        sorted_probs = sorted_probs.masked_fill(~keep, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw categories by inverse CDF.

    Args:
        probs: (B, L, V) float64, rows summing to 1.
        uniforms: (B, L, n) float64 in [0, 1): n independent draws per row (no copies of ``probs`` are made).
    Returns: (B, L, n) int64 indices.
    """
    cdf = probs.cumsum(-1)  # (B, L, V)
    index = torch.searchsorted(cdf, uniforms * cdf[..., -1:], right=True)  # (B, L, n)
    return index.clamp_(max=probs.shape[-1] - 1)
