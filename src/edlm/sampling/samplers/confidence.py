"""Confidence-ordered unmasking (MaskGIT / LLaDA style; docs/method.md §2).

Each step scores every masked position of x_t, and reveals the n_t best-scored ones to x0's
tokens. n_t follows the schedule in expectation: n_t = floor(m p + u) (stochastic rounding, u ~ U(0, 1)) with m
the row's masked count and p = (alpha_s - alpha_t) / (1 - alpha_t), the ancestral step's reveal probability,
so the number of tokens revealed per step matches the ancestral sampler on average; which ones is no longer
random. This is a heuristic: it does not sample the model's distribution (it favours likely tokens).

Scores (``order``): ``max-prob`` = log mu_i(x0_i | x_t), the probability of the token that would be revealed;
``margin`` = top-1 minus top-2 probability; ``entropy`` = minus the entropy of mu_i. ``order_temp`` > 0 adds
order_temp * Gumbel noise to the scores (0 = greedy order).

Random stream per step: x0's uniforms, (B,) float64 for the rounding, then (B, L) for the Gumbel noise
when order_temp > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from edlm.config import raise_first_error
from edlm.diffusion.posterior import reveal_probability
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import GridStep, Plan, write_plan
from edlm.sampling.registry import SamplerSpec, register

ORDERS = ("max-prob", "margin", "entropy")


@dataclass(frozen=True)
class ConfidenceOptions:
    order: Literal["max-prob", "margin", "entropy"] = field(default="max-prob", metadata={
        "help": "score of a masked position: the probability of its drawn x0 token (max-prob: the positions depend "
                "on x0, so importance sampling weighs whole rows), the top-2 margin, or minus the entropy"})
    order_temp: float = field(default=0.0, metadata={
        "help": "Gumbel noise scale on the scores (0 = greedy order)"})

    def __post_init__(self):
        raise_first_error(self, [(self.order_temp >= 0, "order_temp", "must be >= 0")])


def confidence_scores(log_probs: torch.Tensor, x0: torch.Tensor | None, order: str) -> torch.Tensor:
    """log_probs (B, L, V + 1) SUBS log-probs, x0 (B, L) (read by max-prob only) -> (B, L) float64 scores
    (higher = reveal first)."""
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
class ConfidenceStep(GridStep):
    schedule: LogLinearSchedule
    mask_id: int
    order: str = "max-prob"
    order_temp: float = 0.0

    @property
    def plans_before_x0(self) -> bool:
        return self.order != "max-prob"  # max-prob scores read the drawn x0

    def plan(self, log_probs, x_t, t, s, generator) -> Plan:
        B, L = x_t.shape
        masked = x_t == self.mask_id  # (B, L)
        count = masked.sum(-1).double()  # (B,)
        rounding = torch.rand(B, generator=generator, dtype=torch.float64, device=x_t.device)
        reveal_count = (count * reveal_probability(self.schedule, t, s) + rounding).floor()
        reveal_count = torch.minimum(reveal_count, count).long()  # (B,) n_t
        noise = None
        if self.order_temp > 0:
            uniforms = torch.rand((B, L), generator=generator, dtype=torch.float64, device=x_t.device)
            noise = self.order_temp * -torch.log(-torch.log(uniforms.clamp(min=1e-300)))  # Gumbel
        extra = {"count": reveal_count, "noise": noise, "log_probs": log_probs}
        if not self.plans_before_x0:
            return Plan(None, extra=extra)
        return Plan(self._best(confidence_scores(log_probs, None, self.order), masked, extra))

    def apply(self, x_t, x0, plan, t, s, generator):
        reveal = plan.reveal
        if reveal is None:
            scores = confidence_scores(plan.extra["log_probs"], x0, self.order)
            reveal = self._best(scores, x_t == self.mask_id, plan.extra)
        return write_plan(x_t, x0, plan, self.mask_id, s, reveal)

    def _best(self, scores: torch.Tensor, masked: torch.Tensor, extra: dict) -> torch.Tensor:
        """The n_t best-scored masked positions (B, L) bool (noise added when order_temp > 0)."""
        B, L = masked.shape
        if extra["noise"] is not None:
            scores = scores + extra["noise"]
        scores = scores.masked_fill(~masked, float("-inf"))
        order = scores.sort(dim=-1, descending=True, stable=True).indices  # (B, L)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(L, device=masked.device).expand(B, L))
        return masked & (rank < extra["count"][:, None])


register(SamplerSpec("confidence", "reveals the masked positions with the highest score first (MaskGIT / LLaDA)",
                     ConfidenceOptions, lambda schedule, mask_id, options, sample: ConfidenceStep(
                         schedule, mask_id, options.order, options.order_temp)))
