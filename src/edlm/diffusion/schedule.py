"""Noise schedules for absorbing-state (masked) diffusion.

A schedule is a stateless object with exact formulas. ``alpha(t)`` is the probability that a token is still
visible at time ``t``; ``1 - alpha(t)`` the probability that it has been replaced by [MASK].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogLinearSchedule:
    """alpha_t = 1 - (1 - eps) t, so sigma(t) = -log(1 - (1 - eps) t)  (docs/method.md §1).

    The NELBO weight -alpha'_t / (1 - alpha_t) equals exactly 1 / t for every eps.
    """

    eps: float = 1e-3

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Keep probability at time t; any shape, same dtype as ``t``."""
        return 1.0 - (1.0 - self.eps) * t

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        """d alpha / dt; same shape as ``t``."""
        return torch.full_like(t, -(1.0 - self.eps))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Total noise sigma(t) = -log alpha_t (fed to the time embedding when time conditioning is on)."""
        return -torch.log1p(-(1.0 - self.eps) * t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous-time NELBO weight -alpha'_t / (1 - alpha_t) (= 1 / t)."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))

    def reveal_probability(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Probability that a position masked at time t is revealed by time s < t:
        (alpha_s - alpha_t) / (1 - alpha_t)."""
        return (self.alpha(s) - self.alpha(t)) / (1.0 - self.alpha(t))


SCHEDULES = {"loglinear": LogLinearSchedule}


def make_schedule(name: str = "loglinear", eps: float = 1e-3) -> LogLinearSchedule:
    """Build a schedule by registry name."""
    return SCHEDULES[name](eps=eps)


def schedule_for(config) -> LogLinearSchedule:
    """The schedule a model was trained with, from its ``RunConfig``: the one place sampling and scoring read it."""
    return make_schedule(eps=config.model.schedule_eps)
