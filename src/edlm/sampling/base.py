"""The sampler step API (docs/method.md §2), in the manner of a diffusers scheduler.

A sampler is three parts, each replaceable on its own:

- a **proposal** draws the clean sequence x0 ~ p(x0 | x_t) that a step consumes (``FactorizedProposal``:
  plain MDLM; ``importance.ImportanceProposal``: EDLM, wrapping any proposal of the factorised kind);
- a **step** turns (denoiser log-probs, x_t, t, s) into x_s using the proposal (``mdlm.AncestralStep``,
  ``first_hitting.FirstHittingStep``, ``confidence.ConfidenceStep``, ...);
- the **loop** (``loop.MaskedDiffusionSampler``) walks the time grid, calls the denoiser, keeps the per-row
  cache, and hands each step's output to the next.

Times are per row: t and s are (B,) float64 tensors (grid steps pass equal rows; first-hitting moves each row
on its own clock). A proposal sees one float t: the largest time among the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

DenoiserFn = Callable[..., torch.Tensor]
"""x_t (B, L) int64 -> SUBS log-probs (B, L, V + 1) float32 (see ``diffusion.subs.subs_log_probs``).

A denoiser whose output depends on t carries the attribute ``time_conditioned = True`` and is called as
``denoiser(x_t, t)`` with t (B,) float64; the loop then recomputes every row at every step (no cache, no x0
reuse), since an unchanged x_t no longer means an unchanged output."""


@dataclass
class StepOutput:
    x_s: torch.Tensor  # (B, L) int64: the sequence at the new time
    x0: torch.Tensor  # (B, L) int64: the proposal's x0 the step used
    changed_rows: torch.Tensor  # (B,) bool: rows where x_s != x_t somewhere (the loop recomputes those)
    t_s: torch.Tensor  # (B,) float64: the time each row has reached (grid steps: s)


class Proposal(Protocol):
    """Draws the x0 used by one reverse step. The loop and the steps call exactly these three members.

    Contract: ``x0`` must equal ``x_t`` at every visible position (x_t != mask id) and hold a real token
    (never the mask id) at every masked one. Draw randomness only from ``generator``.
    """

    def __call__(self, log_probs: torch.Tensor, x_t: torch.Tensor, t: float,
                 generator: torch.Generator) -> torch.Tensor:
        """log_probs (B, L, V + 1) SUBS log-probs, x_t (B, L) int64, t the (largest) current time
        -> x0 (B, L) int64."""

    def reuse_allowed(self, t: float) -> bool:
        """True if, for a row whose x_t did not change since the last step, the x0 drawn then may be used again
        at time t (the loop asks only when it caches and the step's reveal decision ignores x0). A proposal
        that is a draw from a distribution depending on x_t only may say True; False is always safe."""

    def stats(self) -> dict[str, float]:
        """Counters to report with the samples (e.g. energy calls); {} if none."""


class Step(Protocol):
    """One reverse move x_t -> x_s. Steps hold their proposal; the loop may swap it for a caching wrapper."""

    proposal: Proposal
    #: True when which positions are revealed does not depend on x0 (ancestral, first-hitting): then an x0 drawn
    #: for an unchanged row is still a valid draw, and the loop may reuse it (``Proposal.reuse_allowed``).
    reuses_x0: bool

    def plan_steps(self, steps: int, length: int) -> int:
        """Loop iterations for a request of ``steps`` on sequences of ``length`` (grid steps: ``steps``)."""

    def step(self, log_probs: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
             generator: torch.Generator) -> StepOutput:
        """log_probs (B, L, V + 1), x_t (B, L) int64, t and s (B,) float64 with s < t (the grid's next time;
        a step with its own clock may ignore s) -> StepOutput. Must never change a visible position."""


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, L) int64
    nfe: int  # batched denoiser calls
    nfe_rows: float  # denoiser row evaluations divided by B (network evaluations per sequence)
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


def per_row(value: torch.Tensor | float, rows: int, device: torch.device) -> torch.Tensor:
    """A float or a (B,) tensor as (B,) float64 on ``device``."""
    return torch.as_tensor(value, dtype=torch.float64, device=device).expand(rows)
