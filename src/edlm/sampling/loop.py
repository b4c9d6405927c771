"""The sampling loop: the time grid, the denoiser calls and the per-row cache around any step (docs/method.md §2).

``cached=True`` reuses the denoiser output of every row whose x_t did not change since its last call (decided
per row). If the step's reveal decision ignores x0 (``Step.reuses_x0``) and the proposal allows it
(``Proposal.reuse_allowed``), the x0 of an unchanged row is reused too: conditioned on "nothing revealed", x0 is
still a draw from p(x0 | x_t). A time-conditioned denoiser turns both off.

Cached == uncached bit for bit holds where evaluating a subset of rows gives the same floats as evaluating the
whole batch: CPU fp32 (tested). Under bf16 autocast or on a GPU the kernels may differ with the batch shape, so
the two agree in distribution only (tested by enumeration on a toy).
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch

from edlm.diffusion.posterior import time_grid
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import DenoiserFn, Proposal, SampleResult, Step
from edlm.sampling.mdlm import AncestralStep, FactorizedProposal


class ReusedX0:
    """Proposal wrapper the loop installs when caching: rows unchanged since the last step keep their x0.

    Before each step the loop sets ``fresh``: the indices (n,) int64 of the rows whose x_t changed (the same rows
    whose denoiser output it recomputed), or None for all rows; only those draw a new x0.
    """

    def __init__(self, inner: Proposal):
        self.inner = inner
        self.x0: torch.Tensor | None = None  # (B, L) last step's x0
        self.fresh: torch.Tensor | None = None  # (n,) rows that need a new x0; None: all

    def __call__(self, log_probs, x_t, t, generator):
        fresh = self.fresh
        if self.x0 is None or fresh is None or fresh.numel() == x_t.shape[0] or not self.inner.reuse_allowed(t):
            return self.inner(log_probs, x_t, t, generator)
        x0 = self.x0.clone()
        if fresh.numel():
            x0.index_copy_(0, fresh, self.inner(log_probs.index_select(0, fresh), x_t.index_select(0, fresh), t,
                                                generator))
        return x0

    def update(self, x0: torch.Tensor) -> None:
        self.x0 = x0

    def reuse_allowed(self, t: float) -> bool:
        return self.inner.reuse_allowed(t)

    def stats(self) -> dict[str, float]:
        return self.inner.stats()


class MaskedDiffusionSampler:
    """Runs a step from a template x_T (masked positions = mask_id, fixed tokens stay as given) to x_0.

    ``step`` defaults to the ancestral MDLM step with ``proposal`` (default: ``FactorizedProposal``). After the
    last step, positions still masked (grid ends at t_min > 0) are filled greedily from the denoiser.
    """

    def __init__(self, denoiser: DenoiserFn, schedule: LogLinearSchedule, mask_id: int, steps: int,
                 proposal: Proposal | None = None, cached: bool = True, t_min: float = 1e-5,
                 step: Step | None = None):
        self.denoiser, self.schedule, self.mask_id = denoiser, schedule, mask_id
        self.steps, self.t_min = steps, t_min
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", False))
        self.cached = cached and not self.time_conditioned
        self.step = step or AncestralStep(schedule, mask_id, proposal or FactorizedProposal(mask_id))

    @property
    def proposal(self) -> Proposal:
        return self.step.proposal

    @torch.no_grad()
    def sample(self, x_init: torch.Tensor, generator: torch.Generator,
               progress: Callable[[int], None] | None = None) -> SampleResult:
        """x_init (B, L) int64 -> SampleResult with tokens (B, L) int64; ``progress(index)`` after each step."""
        start = time.perf_counter()
        x_t = x_init.clone()
        B, L = x_t.shape
        step, reuse = self.step, None
        if self.cached and step.reuses_x0:
            reuse = ReusedX0(step.proposal)
            step = copy.copy(step)
            step.proposal = reuse
        iterations = step.plan_steps(self.steps, L)
        grid = time_grid(iterations, self.t_min).to(x_t.device)
        t = torch.ones(B, dtype=torch.float64, device=x_t.device)  # (B,) each row's current time
        log_probs: torch.Tensor | None = None  # (B, L, V + 1) cache
        stale: torch.Tensor | None = None  # (n,) rows whose cache is out of date; None: all of them
        nfe, rows = 0, 0
        for index in range(iterations):
            if not (x_t == self.mask_id).any():
                break  # nothing left to reveal: further steps would change nothing
            log_probs, calls, evaluated = self._denoise(x_t, t, log_probs, stale)
            nfe, rows = nfe + calls, rows + evaluated
            if reuse is not None:
                reuse.fresh = stale  # the rows whose x_t changed are also the rows that need a new x0
            out = step.step(log_probs, x_t, t, grid[index + 1].expand(B), generator)
            # one host sync per step for the cache: the changed rows' indices, used by the denoiser call and x0
            stale = out.changed_rows.nonzero().squeeze(1) if self.cached else None
            if reuse is not None:
                reuse.update(out.x0)
            x_t, t = out.x_s, out.t_s
            if progress is not None:
                progress(index)
        remaining = (x_t == self.mask_id).any(-1)
        if remaining.any():  # greedy fill of whatever is still masked
            needed = None if stale is None else stale[remaining.index_select(0, stale)]  # stale and still masked
            log_probs, calls, evaluated = self._denoise(x_t, t, log_probs, needed)
            nfe, rows = nfe + calls, rows + evaluated
            greedy = log_probs.argmax(-1)
            x_t = torch.where(x_t == self.mask_id, greedy, x_t)
        return SampleResult(x_t, nfe, rows / B, time.perf_counter() - start, dict(step.proposal.stats()))

    def _call(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x_t, t) if self.time_conditioned else self.denoiser(x_t)

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, cache: torch.Tensor | None,
                 stale: torch.Tensor | None):
        """Recompute the denoiser for the rows ``stale`` (n,) int64 only (None: every row). Returns (log_probs,
        calls, rows evaluated). Index tensors, not boolean masks: a mask costs a host sync per use on a GPU."""
        if cache is None or not self.cached or stale is None or stale.numel() == x_t.shape[0]:
            return self._call(x_t, t), 1, x_t.shape[0]
        if stale.numel() == 0:
            return cache, 0, 0
        # in place: the sampler holds no other reference
        cache.index_copy_(0, stale, self._call(x_t.index_select(0, stale), t.index_select(0, stale)))
        return cache, 1, stale.numel()
