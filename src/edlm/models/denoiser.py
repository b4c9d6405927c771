"""A denoiser network as the function samplers and likelihood code call (``sampling.base.DenoiserFn``)."""

from __future__ import annotations

import torch

from edlm.device import autocast_for
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import subs_log_probs


def make_denoiser_fn(model: torch.nn.Module, mask_id: int, precision: str = "fp32",
                     schedule: LogLinearSchedule | None = None):
    """Wrap a denoiser network as x_t (B, L) [, t (B,) float64] -> SUBS log-probs (B, L, V + 1) float32.

    A time-conditioned model (``model.config.time_conditioning``) is fed sigma(t) from ``schedule`` (required
    then) and the returned function says so (``time_conditioned = True``); otherwise t is ignored (sigma = 0,
    as the model was trained).
    """
    device = next(model.parameters()).device
    time_conditioned = bool(getattr(getattr(model, "config", None), "time_conditioning", False))
    if time_conditioned and schedule is None:
        raise ValueError("make_denoiser_fn: a time-conditioned model needs the schedule (sigma(t))")

    @torch.no_grad()
    def denoise(x_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        sigma = None
        if time_conditioned:
            if t is None:
                raise ValueError("a time-conditioned denoiser must be called with t")
            t = torch.as_tensor(t, dtype=torch.float64, device=device).expand(x_t.shape[0])
            sigma = schedule.sigma(t).float()  # (B,)
        x_t = x_t.to(device)
        with autocast_for(device, precision):
            logits = model(x_t, sigma)
        return subs_log_probs(logits, x_t, mask_id)

    denoise.time_conditioned = time_conditioned
    return denoise
