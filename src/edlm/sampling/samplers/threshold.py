"""Threshold parallel decoding (Fast-dLLM style; docs/method.md §2).

Each step reveals, to x0's tokens, every masked position whose confidence
c_i = max_v mu_i(v | x_t) (the denoiser's largest probability there) is at least ``threshold`` (Fast-dLLM's
``>=``), and at least one:
the most confident masked position (the first on ties). Confident positions go together, hard ones one at a
time; the number of network calls is data-dependent, between 1 and the number of masked positions (the loop
plans L iterations and stops once nothing is masked; ``steps`` does not apply). Fast-dLLM reveals the argmax
token; here the revealed token is x0's, so temperature, top-p and importance sampling act on it (at
temperature -> 0 the two agree). Like confidence ordering, this is a heuristic, not a sampler of the model's
distribution.

The positions chosen depend on the denoiser's probabilities only, never on x0's values, so with importance
sampling the revealed tokens come from the corrected x0 (reveal-set weighting applies) and the reuse of x0
across steps is valid (though a row
that has a masked position always changes, so nothing is ever reused).

Clock: the step returns t_s = t * m_after / m_before, so a row's time is the fraction of its initially masked
positions still masked (the time at which the log-linear forward process masks that fraction, in
expectation). Importance sampling's window reads this time.

Random stream per step: x0's uniforms only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edlm.config import raise_first_error
from edlm.sampling.base import GridStep, Plan
from edlm.sampling.registry import SamplerSpec, register


@dataclass(frozen=True)
class ThresholdOptions:
    threshold: float = field(default=0.9, metadata={
        "help": "reveal every masked position whose top probability is at least this (at least one per step)"})

    def __post_init__(self):
        raise_first_error(self, [(0.0 <= self.threshold <= 1.0, "threshold", "must be in [0, 1]")])


def top_probability(log_probs: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """max_v mu_i(v | x_t) at masked positions, -1 elsewhere; log_probs (B, L, V + 1) -> (B, L) float64."""
    best = log_probs.double().max(-1).values.exp()  # (B, L)
    return best.masked_fill(x_t != mask_id, -1.0)


@dataclass
class ThresholdStep(GridStep):
    mask_id: int
    threshold: float = 0.9
    own_clock = True

    def iterations(self, steps: int, x_init: torch.Tensor) -> int:
        return x_init.shape[1]  # at least one reveal per row and call

    def plan(self, log_probs, x_t, t, s, generator) -> Plan:
        masked = x_t == self.mask_id  # (B, L)
        scores = top_probability(log_probs, x_t, self.mask_id)  # (B, L)
        most_confident = torch.zeros_like(masked).scatter_(-1, scores.argmax(-1, keepdim=True), True)
        chosen = masked & ((scores >= self.threshold) | most_confident)  # (B, L)
        before = masked.sum(-1).double()  # (B,)
        after = before - chosen.sum(-1).double()
        return Plan(chosen, t_s=torch.where(before > 0, t * after / before.clamp(min=1.0), t))


register(SamplerSpec("threshold", "reveals every position at least --threshold confident (Fast-dLLM)",
                     ThresholdOptions, lambda schedule, mask_id, o, sample: ThresholdStep(mask_id, o.threshold),
                     own_clock=True))
