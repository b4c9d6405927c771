"""Training objectives, one per model kind. Each maps (model, x0 batch, batch randomness) -> per-sequence loss.

Batch randomness (t, masking uniforms) is drawn for the *global* batch from (seed, step) by
``training.batches`` and sliced per rank, so the loss trajectory does not depend on the number of processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import corrupt, nelbo_terms, subs_log_probs


def mdlm_loss(model, x0: torch.Tensor, t: torch.Tensor, uniforms: torch.Tensor,
              schedule: LogLinearSchedule, mask_id: int) -> torch.Tensor:
    """Continuous-time NELBO per sequence (B,), nats per token (notes, section 1)."""
    x_t = corrupt(x0, t, schedule, mask_id, uniforms)
    logits = model(x_t, schedule.sigma(t))
    return nelbo_terms(subs_log_probs(logits, x_t, mask_id), x0, x_t, t, schedule, mask_id)


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
