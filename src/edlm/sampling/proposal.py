"""The plain x0 proposal of masked diffusion: x0 drawn from the factorised denoiser mu_theta (docs/method.md §2).

Every draw is float64 inverse-CDF, after temperature and nucleus filtering (``diffusion.categorical``). The
importance sampler (``importance``) draws its candidates from the same proposal and weighs them with the log-probs
of the distribution they actually come from (``log_q``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edlm.diffusion.categorical import sampling_probs
from edlm.diffusion.posterior import draw_candidates


@dataclass(frozen=True)
class FactorizedProposal:
    """x0 ~ q(x0 | x_t) = prod_i q_i(x0_i | x_t), q = mu_theta tempered by ``temperature`` and nucleus-filtered
    by ``top_p``; visible positions copied from x_t."""

    mask_id: int
    temperature: float = 1.0
    top_p: float = 1.0

    def draw(self, log_probs: torch.Tensor, x_t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One x0 per row: (B, L) int64 (consumes B * L uniforms)."""
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
