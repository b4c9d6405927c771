"""The reverse posterior q(x_s | x_t, x0) of masked diffusion and its building blocks (docs/method.md §2).

One reverse step t -> s is "draw x0 ~ p(x0 | x_t), then x_s ~ q(x_s | x_t, x0)": every masked position is
revealed with probability (alpha_s - alpha_t) / (1 - alpha_t) to x0's token, visible positions are copied.
All probabilities are float64: at large T, 1 - alpha_t and alpha_s - alpha_t cancel in float32.
"""

from __future__ import annotations

import torch

from edlm.diffusion.categorical import inverse_cdf, sampling_probs
from edlm.diffusion.schedule import LogLinearSchedule


def time_grid(steps: int, t_min: float = 1e-5) -> torch.Tensor:
    """t_0 = 1 > t_1 > ... > t_T = t_min, uniform; (T + 1,) float64."""
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)


def reveal_probability(schedule: LogLinearSchedule, t: torch.Tensor | float, s: torch.Tensor | float
                       ) -> torch.Tensor:
    """(alpha_s - alpha_t) / (1 - alpha_t) in float64; t, s floats or tensors of one shape (result: that shape)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    s = torch.as_tensor(s, dtype=torch.float64, device=t.device)
    return schedule.reveal_probability(t, s)


def draw_candidates(log_probs: torch.Tensor, x_t: torch.Tensor, mask_id: int, num: int,
                    generator: torch.Generator | None, temperature: float = 1.0, top_p: float = 1.0,
                    uniforms: torch.Tensor | None = None, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Draw ``num`` independent x0 ~ mu(. | x_t) per row in float64; visible positions copied from x_t.

    Args: log_probs (B, L, V + 1); x_t (B, L); ``uniforms`` (B, num, L) float64 to use instead of drawing
    from ``generator``; ``probs`` the (B, L, V + 1) float64 ``sampling_probs`` of ``log_probs`` when the caller
    already has them. Returns (B, num, L) int64.
    Consumes exactly B * num * L float64 uniforms, generated in (B, num, L) order.
    """
    B, L = x_t.shape
    if uniforms is None:
        uniforms = torch.rand((B, num, L), generator=generator, dtype=torch.float64, device=x_t.device)
    if probs is None:
        probs = sampling_probs(log_probs, temperature, top_p)  # (B, L, V + 1) float64
    drawn = inverse_cdf(probs, uniforms.transpose(1, 2).contiguous()).transpose(1, 2)  # (B, num, L)
    return torch.where(x_t[:, None, :] == mask_id, drawn, x_t[:, None, :])


def reveal(x_t: torch.Tensor, x0: torch.Tensor, reveal_prob: float | torch.Tensor, uniforms: torch.Tensor,
           mask_id: int) -> torch.Tensor:
    """x_s ~ q(x_s | x_t, x0): each masked position takes x0's token with probability ``reveal_prob``.

    Args: x_t, x0 (B, L) int64; reveal_prob a float or (B, 1) float64 (one per row); uniforms (B, L) float64.
    Returns (B, L) int64.
    """
    return torch.where((x_t == mask_id) & (uniforms < reveal_prob), x0, x_t)
