"""Confidence-ordered unmasking (MaskGIT / LLaDA style; docs/method.md §2).

Each step draws x0 from the proposal, scores every masked position, and reveals the n_t best-scored ones to x0's
tokens. n_t follows the schedule in expectation: n_t = floor(m p + u) (stochastic rounding, u ~ U(0, 1)) with m
the row's masked count and p = (alpha_s - alpha_t) / (1 - alpha_t), the ancestral step's reveal probability,
so the number of tokens revealed per step matches the ancestral sampler on average; which ones is no longer
random. This is a heuristic: it does not sample the model's distribution (it favours likely tokens).

Scores (``order``): ``max-prob`` = log mu_i(x0_i | x_t), the probability of the token that would be revealed;
``margin`` = top-1 minus top-2 probability; ``entropy`` = minus the entropy of mu_i. ``order_temp`` > 0 adds
order_temp * Gumbel noise to the scores (0 = greedy order).

Random stream per step: the proposal's uniforms, (B,) float64 for the rounding, then (B, L) for the Gumbel noise
when order_temp > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edlm.diffusion.posterior import reveal_probability
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import Proposal, StepOutput, per_row

ORDERS = ("max-prob", "margin", "entropy")


def confidence_scores(log_probs: torch.Tensor, x0: torch.Tensor, order: str) -> torch.Tensor:
    """log_probs (B, L, V + 1) SUBS log-probs, x0 (B, L) -> (B, L) float64 scores (higher = reveal first)."""
    log_probs = log_probs.double()
    if order == "max-prob":
        return log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    probs = log_probs.exp()
    if order == "margin":
        top = probs.topk(2, dim=-1).values  # (B, L, 2)
        return top[..., 0] - top[..., 1]
    if order == "entropy":
        return (probs * log_probs.clamp(min=-1e30)).sum(-1)  # -H; 0 * log 0 -> 0
    raise ValueError(f"unknown order {order!r} (valid: {', '.join(ORDERS)})")


@dataclass
class ConfidenceStep:
    schedule: LogLinearSchedule
    mask_id: int
    proposal: Proposal
    order: str = "max-prob"
    order_temp: float = 0.0
    reuses_x0: bool = False  # max-prob scores read x0: the reveal decision depends on it

    def plan_steps(self, steps: int, length: int) -> int:
        return steps

    def step(self, log_probs, x_t, t, s, generator) -> StepOutput:
        B, L = x_t.shape
        t, s = per_row(t, B, x_t.device), per_row(s, B, x_t.device)
        x0 = self.proposal(log_probs, x_t, float(t.max()), generator)
        masked = x_t == self.mask_id  # (B, L)
        count = masked.sum(-1).double()  # (B,)
        rounding = torch.rand(B, generator=generator, dtype=torch.float64, device=x_t.device)
        reveal_count = (count * reveal_probability(self.schedule, t, s) + rounding).floor()
        reveal_count = torch.minimum(reveal_count, count).long()  # (B,) n_t
        scores = confidence_scores(log_probs, x0, self.order)  # (B, L)
        if self.order_temp > 0:
            uniforms = torch.rand((B, L), generator=generator, dtype=torch.float64, device=x_t.device)
            gumbel = -torch.log(-torch.log(uniforms.clamp(min=1e-300)))
            scores = scores + self.order_temp * gumbel
        scores = scores.masked_fill(~masked, float("-inf"))
        order = scores.sort(dim=-1, descending=True, stable=True).indices  # (B, L)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(L, device=x_t.device).expand(B, L))
        chosen = masked & (rank < reveal_count[:, None])  # (B, L)
        x_s = torch.where(chosen, x0, x_t)
        return StepOutput(x_s, x0, chosen.any(-1), s)
