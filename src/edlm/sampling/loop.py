"""The sampling loop: the time grid, the denoiser calls, the x0 draw and the per-row cache around any step
(docs/method.md §2).

Per iteration: the denoiser gives log-probs (recomputed only for rows whose x_t changed, with ``cached``); the
step plans; the loop draws x0 once -- plainly, importance-sampled over the whole row, or over the plan's reveal
set (``importance``) -- and the step applies it. With the cache, the x0 drawn for an unchanged row is reused by an
active whole-row importance sampler whose step plans before x0 (conditioned on "nothing revealed", that x0 is still
a draw from p(x0 | x_t)); a time-conditioned denoiser turns the cache off.

Host reads: one before the first iteration and one after each (anything still masked? and, when the importance
window depends on it, the largest proposal time of the next iteration, read together), plus with the cache one index list of the changed rows (used
for the denoiser call and the x0 reuse), plus, for reveal-set importance sampling, the list of rows that reveal
something. Cached == uncached bit for bit holds where evaluating a subset of rows gives the same floats as
evaluating the whole batch: CPU fp32 (tested). Under bf16 autocast or on a GPU the kernels may differ with the
batch shape, so the two agree in distribution only (tested by enumeration on a toy).
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from edlm.diffusion.posterior import time_grid
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import DenoiserFn, SampleResult, Step
from edlm.sampling.importance import ImportanceSampler
from edlm.sampling.proposal import FactorizedProposal


class MaskedDiffusionSampler:
    """Runs a step from a template x_T (masked positions = mask_id, fixed tokens stay as given) to x_0.

    ``step`` defaults to the ancestral MDLM step; ``proposal`` (default: ``FactorizedProposal``) draws x0, through
    ``importance`` (EDLM) when given. After the last step, positions still masked (the grid ends at t_min > 0) are
    filled greedily from the denoiser.
    """

    def __init__(self, denoiser: DenoiserFn, schedule: LogLinearSchedule, mask_id: int, steps: int,
                 step: Step | None = None, proposal: FactorizedProposal | None = None,
                 importance: ImportanceSampler | None = None, cached: bool = True, t_min: float = 1e-5):
        from edlm.sampling.samplers.ancestral import AncestralStep

        self.denoiser, self.schedule, self.mask_id = denoiser, schedule, mask_id
        self.steps, self.t_min = steps, t_min
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", False))
        self.cached = cached and not self.time_conditioned
        self.step = step or AncestralStep(schedule, mask_id)
        self.proposal = proposal or FactorizedProposal(mask_id)
        self.importance = importance

    @torch.no_grad()
    def sample(self, x_init: torch.Tensor, generator: torch.Generator,
               progress: Callable[[int], None] | None = None) -> SampleResult:
        """x_init (B, L) int64 -> SampleResult with tokens (B, L) int64; ``progress(index)`` after each step."""
        start = time.perf_counter()
        x_t = x_init.clone()
        B = x_t.shape[0]
        step, importance = self.step, self.importance
        iterations = step.iterations(self.steps, x_t)
        grid = time_grid(iterations, self.t_min).to(x_t.device)
        t = torch.ones(B, dtype=torch.float64, device=x_t.device)  # (B,) each row's current time
        log_probs: torch.Tensor | None = None  # (B, L, V + 1) cache
        stale: torch.Tensor | None = None  # (n,) rows whose cache is out of date; None: all of them
        last_x0: torch.Tensor | None = None  # (B, L) the previous iteration's x0, for reuse
        nfe, rows, energy_calls, energy_rows, ran = 0, 0, 0, 0, 0
        masked_left, proposal_time = self._status(x_t, t)
        for index in range(iterations):
            if not masked_left:
                break  # nothing left to reveal: further steps would change nothing
            log_probs, calls, evaluated = self._denoise(x_t, t, log_probs, stale)
            nfe, rows, ran = nfe + calls, rows + evaluated, ran + 1
            s = grid[index + 1].expand(B)
            active = importance is not None and importance.active(proposal_time)
            if active and importance.aims_at_reveal_set and step.plans_before_x0:
                plan = step.plan(log_probs, x_t, t, s, generator)
                x0, scored = importance.draw_reveal(self.proposal, log_probs, x_t, plan.reveal, generator,
                                                    lambda x, rows: self._call(x, t.index_select(0, rows)))
            else:
                x0, scored = self._draw_x0(log_probs, x_t, generator, active, last_x0, stale)
                plan = step.plan(log_probs, x_t, t, s, generator)
            energy_calls, energy_rows = energy_calls + (scored > 0), energy_rows + scored
            out = step.apply(x_t, x0, plan, t, s, generator)
            # one host read for the cache: the changed rows' indices, used by the denoiser call and the x0 reuse
            stale = out.changed_rows.nonzero().squeeze(1) if self.cached else None
            last_x0 = x0 if self.cached and step.plans_before_x0 else None
            x_t, t = out.x_s, out.t_s
            masked_left, proposal_time = self._status(x_t, t)
            if progress is not None:
                progress(index)
        x_t, calls, evaluated = self._fill_greedily(x_t, t, log_probs, stale) if masked_left else (x_t, 0, 0)
        return SampleResult(x_t, nfe + calls, (rows + evaluated) / B, time.perf_counter() - start, ran,
                            energy_calls, energy_rows)

    def _status(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[bool, float]:
        """(anything still masked?, largest proposal time) in one host read; the time is read only when the
        importance sampler's window depends on it (else 1.0)."""
        masked = (x_t == self.mask_id).any()
        if self.importance is None or self.importance.time_free:
            return bool(masked), 1.0
        value = float(torch.where(masked, self.step.proposal_time(x_t, t).max(), -1.0))  # times are >= 0
        return value >= 0, value

    def _draw_x0(self, log_probs, x_t, generator, active: bool, last_x0, stale) -> tuple[torch.Tensor, int]:
        """Plain or whole-row importance-sampled x0 (B, L); with the cache an active sampler reuses the previous
        x0 for rows that did not change (``stale``: the rows that did). Returns (x0, energy rows scored)."""
        draw = ((lambda lp, x: self.importance.draw_row(self.proposal, lp, x, generator)) if active
                else (lambda lp, x: (self.proposal.draw(lp, x, generator), 0)))
        reuse = (active and last_x0 is not None and stale is not None and stale.numel() < x_t.shape[0]
                 and self.importance.reuse_allowed())
        if not reuse:
            return draw(log_probs, x_t)
        x0, scored = last_x0.clone(), 0
        if stale.numel():
            fresh, scored = draw(log_probs.index_select(0, stale), x_t.index_select(0, stale))
            x0.index_copy_(0, stale, fresh)
        return x0, scored

    def _fill_greedily(self, x_t, t, log_probs, stale) -> tuple[torch.Tensor, int, int]:
        """Positions still masked after the last step take the denoiser's most likely token."""
        remaining = (x_t == self.mask_id).any(-1)
        needed = None if stale is None else stale[remaining.index_select(0, stale)]  # stale and still masked
        log_probs, calls, evaluated = self._denoise(x_t, t, log_probs, needed)
        return torch.where(x_t == self.mask_id, log_probs.argmax(-1), x_t), calls, evaluated

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
