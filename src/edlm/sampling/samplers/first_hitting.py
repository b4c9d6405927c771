"""First-hitting sampler: exact masked-diffusion sampling, one revealed token per network call (docs/method.md §2).

Under the forward process each masked position of x_t is revealed, going backwards, at an independent time with
P(still masked at s | masked at t) = (1 - alpha_s) / (1 - alpha_t). With m masked positions the first of them is
revealed at s with ((1 - alpha_s) / (1 - alpha_t))^m = u, u ~ U(0, 1); for the log-linear schedule
(1 - alpha_t proportional to t) that is s = t * u^(1/m). The revealed position is uniform among the m, and its
token is x0's (the loop's draw from p(x0 | x_t)). So each row moves on its own clock, one token per call,
L calls in all, with the distribution of the ancestral sampler as T -> infinity (no two tokens ever share a
step). The grid's s is ignored.

The x0 draw sees one time for the batch, the largest row clock: with importance sampling, the window
(t >= 1 - window) is open while any row is inside it (outside the window IS is still a valid correction; the
window only bounds its cost). The formula for s assumes the log-linear schedule (the only one in the registry).

The revealed position is chosen before x0 is drawn, so reveal-set importance sampling weighs that one token.

Random stream per step: x0's uniforms, then (B,) float64 for the times, then (B,) for the positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import GridStep, Plan
from edlm.sampling.registry import SamplerSpec, register
from edlm.sampling.samplers.ancestral import NoOptions


@dataclass
class FirstHittingStep(GridStep):
    schedule: LogLinearSchedule
    mask_id: int
    own_clock = True  # each row on its own clock: the grid's s is ignored

    def iterations(self, steps: int, x_init: torch.Tensor) -> int:
        return x_init.shape[1]  # one reveal per row and call; ``steps`` does not apply

    def plan(self, log_probs, x_t, t, s, generator) -> Plan:
        B = x_t.shape[0]
        masked = x_t == self.mask_id  # (B, L)
        count = masked.sum(-1)  # (B,) m
        time_uniforms = torch.rand(B, generator=generator, dtype=torch.float64, device=x_t.device)
        position_uniforms = torch.rand(B, generator=generator, dtype=torch.float64, device=x_t.device)
        # log-linear schedule: (1 - alpha_s) / (1 - alpha_t) = s / t, so s = t * u^(1/m)
        t_s = torch.where(count > 0, t * time_uniforms.pow(1.0 / count.clamp(min=1).double()), t)  # (B,)
        # the j-th masked position (0-based) with j = floor(u * m), found from the running count of masks
        target = (position_uniforms * count).floor().long().clamp(max=(count - 1).clamp(min=0))  # (B,)
        rank = masked.long().cumsum(-1) - 1  # (B, L): index of each masked position among the masked
        chosen = masked & (rank == target[:, None]) & (count[:, None] > 0)  # (B, L) one True per open row
        return Plan(chosen, t_s=t_s)


register(SamplerSpec("first-hitting", "exact: draws the next unmasking time per row, one token per network call",
                     NoOptions, lambda schedule, mask_id, options, sample: FirstHittingStep(schedule, mask_id),
                     own_clock=True))
