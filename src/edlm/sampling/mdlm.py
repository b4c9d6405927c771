"""The ancestral MDLM step and the plain factorised x0 proposal (docs/method.md §2).

One reverse step t -> s: draw x0 from the proposal, then every masked position is revealed with probability
(alpha_s - alpha_t) / (1 - alpha_t) (float64) to x0's token; visible positions are copied.

Random stream per step: the proposal consumes its uniforms, then one (B, L) float64 uniform decides the
reveals. The loop's cached and uncached modes consume the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edlm.diffusion.categorical import sampling_probs
from edlm.diffusion.posterior import draw_candidates, reveal, reveal_probability
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import Proposal, StepOutput, per_row


@dataclass
class FactorizedProposal:
    """Plain MDLM: x0 drawn from the factorised denoiser mu_theta (float64, tempered / top-p if asked)."""

    mask_id: int
    temperature: float = 1.0
    top_p: float = 1.0

    def __call__(self, log_probs, x_t, t, generator):
        return self.candidates(log_probs, x_t, 1, generator)[:, 0]

    def candidates(self, log_probs: torch.Tensor, x_t: torch.Tensor, num: int,
                   generator: torch.Generator, probs: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` i.i.d. draws per row: (B, num, L) int64 (consumes B * num * L uniforms); ``probs``: the
        proposal's probabilities when already computed (``q_probs``)."""
        return draw_candidates(log_probs, x_t, self.mask_id, num, generator, self.temperature, self.top_p,
                               probs=probs)

    def q_probs(self, log_probs: torch.Tensor) -> torch.Tensor:
        """The distribution the draws come from: (B, L, V + 1) float64 after temperature and top-p."""
        return sampling_probs(log_probs, self.temperature, self.top_p)

    def log_q(self, log_probs: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probs of the distribution the draws actually come from (after temperature and top-p);
        (B, L, V + 1) float64 (the input itself when neither is set). ``probs``: ``q_probs`` if already computed."""
        if self.temperature == 1.0 and self.top_p >= 1.0:
            return log_probs
        return (self.q_probs(log_probs) if probs is None else probs).log()

    def reuse_allowed(self, t: float) -> bool:
        return False  # keeps the random stream identical between the ancestral and the cached sampler

    def stats(self) -> dict[str, float]:
        return {}


@dataclass
class AncestralStep:
    """x_s ~ q(x_s | x_t, x0) with x0 from the proposal: the MDLM ancestral step."""

    schedule: LogLinearSchedule
    mask_id: int
    proposal: Proposal
    reuses_x0: bool = True  # the reveal uniforms are drawn independently of x0

    def plan_steps(self, steps: int, length: int) -> int:
        return steps

    def step(self, log_probs, x_t, t, s, generator) -> StepOutput:
        B, L = x_t.shape
        t, s = per_row(t, B, x_t.device), per_row(s, B, x_t.device)
        x0 = self.proposal(log_probs, x_t, float(t.max()), generator)
        uniforms = torch.rand((B, L), generator=generator, dtype=torch.float64, device=x_t.device)
        probability = reveal_probability(self.schedule, t, s)[:, None]  # (B, 1) float64
        x_s = reveal(x_t, x0, probability, uniforms, self.mask_id)
        return StepOutput(x_s, x0, (x_s != x_t).any(-1), s)
