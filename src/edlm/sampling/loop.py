"""The sampling loop: the time grid, the denoiser calls, the x0 draw and the per-row cache around any step
(docs/method.md §2).

Per iteration: the denoiser gives log-probs (recomputed only for rows whose x_t changed, with ``cached``); the
step plans; the loop draws x0 once -- plainly, importance-sampled over the whole row, or over the plan's reveal
set (``importance``) -- and the step applies it. With the cache, the x0 drawn for an unchanged row is reused by an
active whole-row importance sampler whose step plans before x0 (conditioned on "nothing revealed", that x0 is still
a draw from p(x0 | x_t)); a time-conditioned denoiser turns the cache off.

Host reads: one before the first iteration and one after each (anything still masked? and, when the importance
window depends on it, the largest proposal time of the next iteration, read together), plus with the cache one
index list of the changed rows (used for the denoiser call and the x0 reuse), plus, for reveal-set importance
sampling, the list of rows that reveal something. Cached == uncached bit for bit holds where evaluating a subset of
rows gives the same floats as evaluating the whole batch: CPU fp32 (tested). Under bf16 autocast or on a GPU the
kernels may differ with the batch shape, so the two agree in distribution only (tested by enumeration on a toy).

``static=True`` is the capture-friendly mode (``SampleConfig.static_shapes``, implied by ``cuda_graphs``): exactly
one host read per iteration, and the denoiser sees a handful of batch shapes only, so that one CUDA graph per shape
can replay it (``sampling.graphs``). The changed rows are found without ``nonzero``: a stable argsort of the
changed flags puts them first, in row order, and their number rides in the status read (one device-to-host copy
of a few float64 values). The denoiser then evaluates the first ``bucket_size(n, B)`` rows of that order -- the n
changed rows padded with unchanged ones up to the next size of the form 2^j or 3 * 2^j -- and the cache takes all
of them back: an unchanged row recomputed from the same x_t gives the same floats on CPU fp32, so the samples equal
the eager loop's bit for bit there (tested for every sampler, with and without importance sampling), and are a
valid evaluation of the same network everywhere else. Reveal-set importance sampling scores every row instead of
listing the rows that reveal something (a row that reveals nothing keeps nothing of its x0), so ``energy_rows``
counts all of them -- except target "reveal-cond", whose random stream depends on that list: it keeps it, one more
host read per step; ``nfe_rows`` counts the padding rows too (the work done).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from edlm.diffusion.posterior import time_grid
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import DenoiserFn, SampleResult, Step
from edlm.sampling.importance import ImportanceSampler
from edlm.sampling.proposal import FactorizedProposal


def bucket_size(changed: int, batch: int) -> int:
    """The denoiser's batch for ``changed`` rows in static mode: the smallest 2^j or 3 * 2^j that is >= changed
    (1, 2, 3, 4, 6, 8, 12, 16, ...: at most 1.5x the rows needed, 2 log2(B) shapes in all), at most ``batch``."""
    if changed == 0:
        return 0
    power = 1 << (changed - 1).bit_length()  # the smallest power of two >= changed
    size = 3 * power // 4 if power >= 4 and 3 * power // 4 >= changed else power
    return min(size, batch)


@dataclass
class StaleRows:
    """The rows whose cached log-probs are out of date.

    ``rows`` (n,) int64, increasing: the rows that changed (the x0 reuse redraws these). ``padded`` (b,) int64: the
    rows the denoiser evaluates -- ``rows`` itself in the eager loop; in static mode ``rows`` followed by unchanged
    rows up to ``bucket_size(n, B)``."""

    rows: torch.Tensor
    padded: torch.Tensor


class MaskedDiffusionSampler:
    """Runs a step from a template x_T (masked positions = mask_id, fixed tokens stay as given) to x_0.

    ``step`` defaults to the ancestral MDLM step; ``proposal`` (default: ``FactorizedProposal``) draws x0, through
    ``importance`` (EDLM) when given. After the last step, positions still masked (the grid ends at t_min > 0) are
    filled greedily from the denoiser. ``static``: the capture-friendly mode (module docstring).
    """

    def __init__(self, denoiser: DenoiserFn, schedule: LogLinearSchedule, mask_id: int, steps: int,
                 step: Step | None = None, proposal: FactorizedProposal | None = None,
                 importance: ImportanceSampler | None = None, cached: bool = True, t_min: float = 1e-5,
                 static: bool = False):
        from edlm.sampling.samplers.ancestral import AncestralStep

        self.denoiser, self.schedule, self.mask_id = denoiser, schedule, mask_id
        self.steps, self.t_min = steps, t_min
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", False))
        # a replayed CUDA graph returns its output buffer, which its next call of that shape overwrites (another
        # call within the step may have it): the cache must be the loop's own copy
        self.copy_outputs = bool(getattr(denoiser, "reuses_output", False))
        self.cached = cached and not self.time_conditioned
        self.step = step or AncestralStep(schedule, mask_id)
        self.proposal = proposal or FactorizedProposal(mask_id)
        self.importance = importance
        self.static = static

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
        stale: StaleRows | None = None  # rows whose cache is out of date; None: all of them
        last_x0: torch.Tensor | None = None  # (B, L) the previous iteration's x0, for reuse
        nfe, rows, energy_calls, energy_rows, ran = 0, 0, 0, 0, 0
        masked_left, proposal_time, _ = self._status(x_t, t, None)
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
                                                    lambda x, rows: self._call(x, t.index_select(0, rows)),
                                                    every_row=self.static)
            else:
                x0, scored = self._draw_x0(log_probs, x_t, generator, active, last_x0, stale)
                plan = step.plan(log_probs, x_t, t, s, generator)
            energy_calls, energy_rows = energy_calls + (scored > 0), energy_rows + scored
            out = step.apply(x_t, x0, plan, t, s, generator)
            last_x0 = x0 if self.cached and step.plans_before_x0 else None
            x_t, t = out.x_s, out.t_s
            masked_left, proposal_time, stale = self._status(x_t, t, out.changed_rows if self.cached else None)
            if progress is not None:
                progress(index)
        x_t, calls, evaluated = self._fill_greedily(x_t, t, log_probs, stale) if masked_left else (x_t, 0, 0)
        return SampleResult(x_t, nfe + calls, (rows + evaluated) / B, time.perf_counter() - start, ran,
                            energy_calls, energy_rows)

    def _status(self, x_t: torch.Tensor, t: torch.Tensor, changed: torch.Tensor | None
                ) -> tuple[bool, float, StaleRows | None]:
        """(anything still masked?, largest proposal time, the stale rows of ``changed`` (B,) bool or None).

        The time is read only when the importance sampler's window depends on it (else 1.0). Eager: one host read
        for the status and, with ``changed``, one for the index list of the changed rows. Static: one in all."""
        masked = (x_t == self.mask_id).any()
        timed = self.importance is not None and not self.importance.time_free
        if self.static:
            return self._static_status(masked, x_t, t, changed, timed)
        stale = None
        if changed is not None:  # one host read for the cache: the changed rows, for the denoiser and the x0 reuse
            rows = changed.nonzero().squeeze(1)
            stale = StaleRows(rows, rows)
        if not timed:
            return bool(masked), 1.0, stale
        value = float(torch.where(masked, self.step.proposal_time(x_t, t).max(), -1.0))  # times are >= 0
        return value >= 0, value, stale

    def _static_status(self, masked, x_t, t, changed, timed: bool) -> tuple[bool, float, StaleRows | None]:
        """``_status`` in one device-to-host copy: [status value, number of changed rows] as float64 (exact for
        counts below 2^53), the changed rows found by a stable argsort instead of ``nonzero``."""
        value = torch.where(masked, self.step.proposal_time(x_t, t).max() if timed else 1.0, -1.0).double()
        if changed is None:
            values = value.reshape(1)
        else:
            order = torch.argsort((~changed).to(torch.uint8), stable=True)  # (B,) changed rows first, in row order
            values = torch.stack([value, changed.sum().double()])
        read = values.to("cpu", copy=True).tolist()  # the iteration's one host read
        stale = None
        if changed is not None:
            count = int(read[1])
            stale = StaleRows(order[:count], order[:bucket_size(count, x_t.shape[0])])
        return read[0] >= 0, read[0] if timed else 1.0, stale

    def _draw_x0(self, log_probs, x_t, generator, active: bool, last_x0, stale) -> tuple[torch.Tensor, int]:
        """Plain or whole-row importance-sampled x0 (B, L); with the cache an active sampler reuses the previous
        x0 for rows that did not change (``stale``: the rows that did). Returns (x0, energy rows scored)."""
        draw = ((lambda lp, x: self.importance.draw_row(self.proposal, lp, x, generator)) if active
                else (lambda lp, x: (self.proposal.draw(lp, x, generator), 0)))
        reuse = (active and last_x0 is not None and stale is not None and stale.rows.numel() < x_t.shape[0]
                 and self.importance.reuse_allowed())
        if not reuse:
            return draw(log_probs, x_t)
        x0, scored, rows = last_x0.clone(), 0, stale.rows
        if rows.numel():
            fresh, scored = draw(log_probs.index_select(0, rows), x_t.index_select(0, rows))
            x0.index_copy_(0, rows, fresh)
        return x0, scored

    def _fill_greedily(self, x_t, t, log_probs, stale) -> tuple[torch.Tensor, int, int]:
        """Positions still masked after the last step take the denoiser's most likely token."""
        if stale is not None and not self.static:  # static: recompute every stale row (no boolean mask, no read)
            remaining = (x_t == self.mask_id).any(-1)
            needed = stale.rows[remaining.index_select(0, stale.rows)]  # stale and still masked
            stale = StaleRows(needed, needed)
        log_probs, calls, evaluated = self._denoise(x_t, t, log_probs, stale)
        return torch.where(x_t == self.mask_id, log_probs.argmax(-1), x_t), calls, evaluated

    def _call(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x_t, t) if self.time_conditioned else self.denoiser(x_t)

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, cache: torch.Tensor | None, stale: StaleRows | None):
        """Recompute the denoiser for the rows ``stale.padded`` only (None: every row). Returns (log_probs, calls,
        rows evaluated). Index tensors, not boolean masks: a mask costs a host sync per use on a GPU."""
        if cache is None or not self.cached or stale is None or stale.padded.numel() == x_t.shape[0]:
            log_probs = self._call(x_t, t)
            if self.copy_outputs:
                log_probs = log_probs.clone() if cache is None else cache.copy_(log_probs)
            return log_probs, 1, x_t.shape[0]
        if stale.rows.numel() == 0:
            return cache, 0, 0
        rows = stale.padded
        # in place: the sampler holds no other reference
        cache.index_copy_(0, rows, self._call(x_t.index_select(0, rows), t.index_select(0, rows)))
        return cache, 1, rows.numel()
