"""The ancestral MDLM step (docs/method.md §2): ``ancestral`` (no cache, the reference) and ``cached``.

One reverse step t -> s: every masked position is revealed with probability (alpha_s - alpha_t) / (1 - alpha_t)
(float64) to x0's token; visible positions are copied. The positions are chosen before x0 is drawn.

Random stream per step: x0's uniforms (drawn by the loop), then one (B, L) float64 uniform for the reveals.
``cached`` consumes the same stream, so on CPU fp32 it reproduces ``ancestral`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edlm.diffusion.posterior import reveal_probability
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import GridStep, Plan
from edlm.sampling.registry import SamplerSpec, register


@dataclass
class AncestralStep(GridStep):
    """x_s ~ q(x_s | x_t, x0): the MDLM ancestral step."""

    schedule: LogLinearSchedule
    mask_id: int

    def plan(self, log_probs, x_t, t, s, generator) -> Plan:
        uniforms = torch.rand(x_t.shape, generator=generator, dtype=torch.float64, device=x_t.device)  # (B, L)
        probability = reveal_probability(self.schedule, t, s)[:, None]  # (B, 1) float64
        return Plan((x_t == self.mask_id) & (uniforms < probability))


@dataclass(frozen=True)
class NoOptions:
    """A sampler without knobs."""


def _build(schedule, mask_id, options, sample):
    return AncestralStep(schedule, mask_id)


register(SamplerSpec("ancestral", "MDLM's step without the cache: the reference", NoOptions, _build, cached=False))
register(SamplerSpec("cached", "MDLM's step; skips the network for rows whose input did not change (same samples)",
                     NoOptions, _build))
