"""Training objectives, one per model kind. Each maps (model, x0 batch, batch randomness) -> per-sequence loss.

Batch randomness (t, masking uniforms) is drawn for the *global* batch from (seed, step) by
``training.batches`` and sliced per rank, so the loss trajectory does not depend on the number of processes.
"""

from __future__ import annotations

import torch

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import corrupt, nelbo_terms, subs_log_probs


def mdlm_loss(model, x0: torch.Tensor, t: torch.Tensor, uniforms: torch.Tensor,
              schedule: LogLinearSchedule, mask_id: int) -> torch.Tensor:
    """Continuous-time NELBO per sequence (B,), nats per token (docs/method.md §1)."""
    x_t = corrupt(x0, t, schedule, mask_id, uniforms)
    logits = model(x_t, schedule.sigma(t))
    return nelbo_terms(subs_log_probs(logits, x_t, mask_id), x0, x_t, t, schedule, mask_id)
