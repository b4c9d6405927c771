"""The sampler step API (docs/method.md §2), in the manner of a diffusers scheduler.

A reverse step t -> s is a near-pure object in two halves, which the loop (``loop.MaskedDiffusionSampler``) calls
in order:

1. ``plan(log_probs, x_t, t, s, generator) -> Plan``: everything the step decides **before** seeing x0 -- which
   masked positions it reveals, which visible ones it sends back to [MASK], the times the rows reach. A step
   whose choice of positions reads the drawn x0 (confidence ordering by the drawn token's probability) leaves
   ``Plan.reveal`` as None and decides in ``apply``; its ``plans_before_x0`` is False.
2. ``apply(x_t, x0, plan, t, s, generator) -> StepOutput``: writes x0's tokens into the planned positions.

Between the two the loop draws x0 ~ p(x0 | x_t) once: from the factorised denoiser (MDLM), importance-sampled
over the whole row (EDLM, the paper's weighting) or over the plan's reveal set (``importance``). A plan never
reads x0, so where the reveal set is not needed the loop draws x0 *first* and plans after: that keeps every
sampler's random stream (x0's uniforms, then the step's) as it was before the step was split in two.

Times are per row: t and s are (B,) float64 tensors (grid steps pass equal rows; first-hitting and threshold
move each row on its own clock, semi-ar encodes the block). ``proposal_time`` maps a row's time to the time the
x0 draw sees (the importance-sampling window reads it): the identity unless a step remaps its clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

DenoiserFn = Callable[..., torch.Tensor]
"""x_t (B, L) int64 -> SUBS log-probs (B, L, V + 1) float (see ``diffusion.subs.subs_log_probs``).

A denoiser whose output depends on t carries the attribute ``time_conditioned = True`` and is called as
``denoiser(x_t, t)`` with t (B,) float64; the loop then recomputes every row at every step (no cache, no x0
reuse), since an unchanged x_t no longer means an unchanged output."""


@dataclass
class Plan:
    """What a step decided before x0 is drawn.

    ``reveal`` (B, L) bool: masked positions that take x0's token (None: decided in ``apply`` from x0).
    ``remask`` (B, L) bool: visible positions sent back to [MASK] (None: none).
    ``t_s`` (B,) float64: the time each row reaches (None: known only after ``apply``).
    ``extra``: anything else ``apply`` needs (e.g. the rounded reveal counts), private to the step.
    """

    reveal: torch.Tensor | None
    remask: torch.Tensor | None = None
    t_s: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepOutput:
    x_s: torch.Tensor  # (B, L) int64: the sequence at the new time
    changed_rows: torch.Tensor  # (B,) bool: rows where x_s != x_t somewhere (the loop recomputes those)
    t_s: torch.Tensor  # (B,) float64: the time each row has reached (grid steps: s)


class Step(Protocol):
    """One reverse move x_t -> x_s, in two halves (module docstring). Holds no proposal and no energy."""

    #: True when ``plan`` states the reveal set (``Plan.reveal`` not None): reveal-set importance sampling can
    #: then aim its weights at it, and an x0 drawn for a row that did not change is still a valid draw.
    plans_before_x0: bool
    #: True when rows move on their own clocks (the grid's s is ignored): the loop cannot know a row's time
    #: without reading it, and ``steps`` does not set the number of network calls.
    own_clock: bool

    def iterations(self, steps: int, x_init: torch.Tensor) -> int:
        """Loop iterations for a request of ``steps`` starting from the template x_init (B, L)."""

    def proposal_time(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,) float64: the time the x0 draw sees for rows at t (the importance window reads it)."""

    def plan(self, log_probs: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
             generator: torch.Generator) -> Plan:
        """log_probs (B, L, V + 1), x_t (B, L) int64, t and s (B,) float64 with s < t -> Plan. Never reads x0."""

    def apply(self, x_t: torch.Tensor, x0: torch.Tensor, plan: Plan, t: torch.Tensor, s: torch.Tensor,
              generator: torch.Generator) -> StepOutput:
        """x0 (B, L) int64 holds a real token at every position the plan reveals -> StepOutput. Must never change
        a visible position except where the plan remasks it."""


class GridStep:
    """Defaults of a step on the grid 1 = t_0 > ... > t_T (ancestral, confidence, remdm): ``steps`` iterations,
    the identity clock, and ``apply`` writing the planned positions."""

    plans_before_x0 = True
    own_clock = False

    def iterations(self, steps: int, x_init: torch.Tensor) -> int:
        return steps

    def proposal_time(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return t

    def apply(self, x_t, x0, plan, t, s, generator) -> StepOutput:
        return write_plan(x_t, x0, plan, self.mask_id, s)


def write_plan(x_t: torch.Tensor, x0: torch.Tensor, plan: Plan, mask_id: int, t_s: torch.Tensor,
               reveal: torch.Tensor | None = None) -> StepOutput:
    """x_s = x0 on the revealed positions (``reveal``, default ``plan.reveal``), [MASK] on the remasked ones,
    x_t elsewhere; the rows that changed are those with a revealed or remasked position. Shapes (B, L)."""
    reveal = plan.reveal if reveal is None else reveal
    x_s = torch.where(reveal, x0, x_t)
    changed = reveal
    if plan.remask is not None:
        x_s = torch.where(plan.remask, mask_id, x_s)
        changed = changed | plan.remask
    return StepOutput(x_s, changed.any(-1), plan.t_s if plan.t_s is not None else t_s)


@dataclass
class SampleResult:
    """One ``sample`` call. Costs are of this call only (a merged result sums them)."""

    tokens: torch.Tensor  # (B, L) int64
    nfe: int  # batched denoiser calls
    nfe_rows: float  # denoiser row evaluations divided by B (network evaluations per sequence)
    seconds: float
    iterations: int = 0  # loop iterations that ran (the steps actually taken; at most the plan's)
    energy_calls: int = 0  # batched energy calls
    energy_rows: int = 0  # sequences scored by the energy (candidates x fills x rows)

    def costs(self) -> dict[str, float]:
        """The cost counters as a flat dict (what `edlm sample` records)."""
        return {"nfe": self.nfe, "nfe_per_sequence": self.nfe_rows, "steps_run": self.iterations,
                "energy_calls": self.energy_calls, "energy_rows": self.energy_rows}
