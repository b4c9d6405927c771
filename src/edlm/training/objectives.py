"""Training objectives, one per model kind. Each maps (model, x0 batch, batch randomness) -> per-sequence loss.

Batch randomness (t, masking uniforms) is drawn for the *global* batch from (seed, step) by
``training.batches`` and sliced per rank, so the loss trajectory does not depend on the number of processes.
"""

from __future__ import annotations

from typing import Callable

import torch

from edlm.config import RunConfig
from edlm.diffusion.schedule import LogLinearSchedule, schedule_for
from edlm.diffusion.subs import corrupt, nelbo_terms, subs_log_probs
from edlm.models.ar import ar_loss
from edlm.training.batches import GlobalBatch


def mdlm_loss(model, x0: torch.Tensor, t: torch.Tensor, uniforms: torch.Tensor,
              schedule: LogLinearSchedule, mask_id: int) -> torch.Tensor:
    """Continuous-time NELBO per sequence (B,), nats per token (docs/method.md §1)."""
    x_t = corrupt(x0, t, schedule, mask_id, uniforms)
    logits = model(x_t, schedule.sigma(t))
    return nelbo_terms(subs_log_probs(logits, x_t, mask_id), x0, x_t, t, schedule, mask_id)


Objective = Callable[[torch.nn.Module, GlobalBatch], tuple[torch.Tensor, dict[str, float]]]


def make_objective(config: RunConfig, denoiser: torch.nn.Module | None = None) -> Objective:
    """Per-sequence loss for the configured model kind (``model.kind``: mdlm, ar, nce; the config checked it).

    ``denoiser``: the frozen MDLM whose samples are the NCE negatives (``nce`` only)."""
    schedule = schedule_for(config)
    mask_id = config.model.mask_id
    if config.model.kind == "ar":
        return lambda model, b: (ar_loss(model, b.x0, mask_id), {})
    if config.model.kind == "nce":
        from edlm.training.nce import make_nce_objective

        return make_nce_objective(config, denoiser, schedule)
    return lambda model, b: (mdlm_loss(model, b.x0, b.t, b.uniforms, schedule, mask_id), {})
