"""SUBS parameterisation, forward corruption and the continuous-time NELBO (docs/method.md §1).

All functions are pure; the network never sees any of this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edlm.diffusion.schedule import LogLinearSchedule


def subs_log_probs(logits: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Turn raw denoiser logits into log mu_theta(x0_i | x_t) under SUBS.

    Args:
        logits: (B, L, V + 1) raw network output, any float dtype.
        x_t: (B, L) int64 noisy tokens; ``mask_id`` marks masked positions.
    Returns:
        (B, L, V + 1) float32 log-probabilities: the [MASK] column is -inf everywhere, masked positions hold
        log-softmax over the real tokens, visible positions are exactly one-hot on the observed token
        (log 1 = 0, -inf elsewhere: carry-over).
    """
    logits = logits.float()
    logits[..., mask_id] = float("-inf")  # 1. never predict [MASK] as clean data
    log_probs = F.log_softmax(logits, dim=-1)  # 2. normalise over the vocabulary
    visible = x_t != mask_id  # 3. carry-over for visible positions
    one_hot = torch.full_like(log_probs, float("-inf"))
    one_hot.scatter_(-1, x_t.unsqueeze(-1), 0.0)
    return torch.where(visible.unsqueeze(-1), one_hot, log_probs)


def stratified_times(
    batch_size: int, generator: torch.Generator, eps_t: float = 1e-3, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Low-discrepancy ("antithetic") times: u_i = (U + i) / B mod 1, t = eps_t + (1 - eps_t) u.

    Returns (B,) float32 on ``device``. ``generator`` must live on the CPU; one uniform is consumed.
    """
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    u = (offset + torch.arange(batch_size, dtype=torch.float64) / batch_size) % 1.0
    return (eps_t + (1.0 - eps_t) * u).float().to(device)


def corrupt(x0: torch.Tensor, t: torch.Tensor, schedule: LogLinearSchedule, mask_id: int,
            uniforms: torch.Tensor) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x0): each token is masked independently with probability 1 - alpha_t.

    Args:
        x0: (B, L) int64; t: (B,) float; uniforms: (B, L) float in [0, 1) supplied by the caller so that the
        random stream is explicit (training derives it from (seed, step), see ``training.batches``).
    Returns: (B, L) int64.
    """
    mask_prob = 1.0 - schedule.alpha(t)  # (B,)
    return torch.where(uniforms < mask_prob[:, None], torch.full_like(x0, mask_id), x0)


def masked_token_nll(log_probs: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Per-sequence sum over masked positions of -log mu_i(x0_i | x_t).

    Args: log_probs (B, L, V + 1) from ``subs_log_probs``; x0, x_t (B, L). Returns (B,) float32.
    Visible positions contribute exactly 0 by SUBS carry-over; they are excluded explicitly to avoid 0 * inf.
    """
    token_log_probs = log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (B, L)
    masked = x_t == mask_id
    return -(token_log_probs * masked).sum(-1)


def nelbo_terms(log_probs: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                schedule: LogLinearSchedule, mask_id: int) -> torch.Tensor:
    """Single-sample continuous-time NELBO per sequence, in nats per token (divided by all L tokens).

    w(t) * sum_{i masked} -log mu_i(x0_i | x_t) / L with w(t) = -alpha'_t / (1 - alpha_t) (= 1/t).
    With t ~ U[eps_t, 1] this is an unbiased estimate of (1 / (1 - eps_t)) * integral_{eps_t}^1 of the
    integrand; the omitted [0, eps_t] sliver is O(eps_t) nats and is the same approximation as MDLM's.
    Returns (B,) float32.
    """
    return schedule.weight(t) * masked_token_nll(log_probs, x0, x_t, mask_id) / x0.shape[1]
