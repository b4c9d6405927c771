"""Ancestral and cached samplers for masked diffusion (notes, section 2), with a pluggable x0 proposal.

One reverse step t -> s is written as "draw x0 ~ p(x0 | x_t), then x_s ~ q(x_s | x_t, x0)": every masked
position is revealed with probability (alpha_s - alpha_t) / (1 - alpha_t) to x0's token, visible positions
are copied. The proposal (how x0 is drawn) is a separate object: ``FactorizedProposal`` draws from the
denoiser mu_theta (plain MDLM); ``edlm.sampling.importance.ImportanceProposal`` wraps it with an energy.

Random stream (identical for the ancestral and cached samplers): per step the proposal consumes its uniforms,
then one (B, L) float64 uniform decides the reveals. The cached sampler therefore reproduces the ancestral
sampler bit for bit; it only skips denoiser calls for rows whose x_t did not change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.categorical import inverse_cdf, sampling_probs

DenoiserFn = Callable[[torch.Tensor], torch.Tensor]
"""x_t (B, L) int64 -> SUBS log-probs (B, L, V + 1) float32 (see ``diffusion.subs.subs_log_probs``)."""


def time_grid(steps: int, t_min: float = 1e-5) -> torch.Tensor:
    """t_0 = 1 > t_1 > ... > t_T = t_min, uniform; (T + 1,) float64."""
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)


def draw_candidates(log_probs: torch.Tensor, x_t: torch.Tensor, mask_id: int, num: int,
                    generator: torch.Generator | None, temperature: float = 1.0, top_p: float = 1.0,
                    uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Draw ``num`` independent x0 ~ mu(. | x_t) per row in float64; visible positions copied from x_t.

    Args: log_probs (B, L, V + 1); x_t (B, L); ``uniforms`` (B, num, L) float64 to use instead of drawing
    from ``generator``. Returns (B, num, L) int64.
    Consumes exactly B * num * L float64 uniforms, generated in (B, num, L) order.
    """
    B, L = x_t.shape
    if uniforms is None:
        uniforms = torch.rand((B, num, L), generator=generator, dtype=torch.float64, device=x_t.device)
    probs = sampling_probs(log_probs, temperature, top_p)  # (B, L, V + 1) float64
    drawn = inverse_cdf(probs, uniforms.transpose(1, 2).contiguous()).transpose(1, 2)  # (B, num, L)
    return torch.where(x_t[:, None, :] == mask_id, drawn, x_t[:, None, :])


def reveal(x_t: torch.Tensor, x0: torch.Tensor, reveal_prob: float, uniforms: torch.Tensor,
           mask_id: int) -> torch.Tensor:
    """x_s ~ q(x_s | x_t, x0): each masked position takes x0's token with probability ``reveal_prob``.

    Args: x_t, x0 (B, L) int64; uniforms (B, L) float64. Returns (B, L) int64.
    """
    return torch.where((x_t == mask_id) & (uniforms < reveal_prob), x0, x_t)


class Proposal(Protocol):
    """Draws the x0 used by one reverse step."""

    def __call__(self, log_probs: torch.Tensor, x_t: torch.Tensor, t: float,
                 generator: torch.Generator) -> torch.Tensor:
        """log_probs (B, L, V + 1), x_t (B, L) -> x0 (B, L) int64."""

    def stats(self) -> dict[str, float]: ...


@dataclass
class FactorizedProposal:
    """Plain MDLM: x0 drawn from the factorised denoiser mu_theta (float64, tempered / top-p if asked)."""

    mask_id: int
    temperature: float = 1.0
    top_p: float = 1.0

    def __call__(self, log_probs, x_t, t, generator):
        return draw_candidates(log_probs, x_t, self.mask_id, 1, generator, self.temperature, self.top_p)[:, 0]

    def reuse_allowed(self, t: float) -> bool:
        return False  # keeps the random stream identical between the ancestral and the cached sampler

    def stats(self) -> dict[str, float]:
        return {}


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, L) int64
    nfe: int  # batched denoiser calls
    nfe_rows: float  # denoiser row evaluations divided by B (network evaluations per sequence)
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


class MaskedDiffusionSampler:
    """Runs T reverse steps from a template x_T (masked positions = mask_id, fixed tokens stay as given).

    ``cached=True`` reuses the denoiser output of every row whose x_t did not change since its last call
    (decided per row). With a proposal that allows it (``reuse_allowed``), the chosen x0 is reused as well
    while its row is unchanged: valid because the reveal decision is independent of x0, so conditioned on
    "nothing revealed" x0 is still a draw from p(x0 | x_t).
    """

    def __init__(self, denoiser: DenoiserFn, schedule: LogLinearSchedule, mask_id: int, steps: int,
                 proposal: Proposal | None = None, cached: bool = True, t_min: float = 1e-5):
        self.denoiser, self.schedule, self.mask_id = denoiser, schedule, mask_id
        self.steps, self.cached = steps, cached
        self.proposal = proposal or FactorizedProposal(mask_id)
        self.grid = time_grid(steps, t_min)

    @torch.no_grad()
    def sample(self, x_init: torch.Tensor, generator: torch.Generator,
               progress: Callable[[int], None] | None = None) -> SampleResult:
        start = time.perf_counter()
        x_t = x_init.clone()
        B, L = x_t.shape
        log_probs: torch.Tensor | None = None  # (B, L, V + 1) cache
        stale = torch.ones(B, dtype=torch.bool, device=x_t.device)  # rows whose cache is out of date
        x0_cache: torch.Tensor | None = None
        x0_valid = torch.zeros(B, dtype=torch.bool, device=x_t.device)
        nfe, rows = 0, 0
        for index in range(self.steps):
            t, s = float(self.grid[index]), float(self.grid[index + 1])
            log_probs, calls, evaluated = self._denoise(x_t, log_probs, stale)
            nfe, rows = nfe + calls, rows + evaluated
            if self.cached and x0_cache is not None and self.proposal.reuse_allowed(t) and x0_valid.any():
                fresh = self.proposal(log_probs[~x0_valid], x_t[~x0_valid], t, generator) \
                    if (~x0_valid).any() else None
                x0 = x0_cache.clone()
                if fresh is not None:
                    x0[~x0_valid] = fresh
            else:
                x0 = self.proposal(log_probs, x_t, t, generator)
            uniforms = torch.rand((B, L), generator=generator, dtype=torch.float64, device=x_t.device)
            x_s = reveal(x_t, x0, float(self.schedule.reveal_probability(torch.tensor(t), torch.tensor(s))),
                         uniforms, self.mask_id)
            changed = (x_s != x_t).any(-1)  # (B,)
            stale = changed if self.cached else torch.ones_like(changed)
            x0_cache, x0_valid = x0, ~changed
            x_t = x_s
            if progress is not None:
                progress(index)
        remaining = (x_t == self.mask_id).any(-1)
        if remaining.any():  # greedy fill of whatever is still masked
            log_probs, calls, evaluated = self._denoise(x_t, log_probs, stale & remaining)
            nfe, rows = nfe + calls, rows + evaluated
            greedy = log_probs.argmax(-1)
            x_t = torch.where(x_t == self.mask_id, greedy, x_t)
        extra = dict(self.proposal.stats())
        return SampleResult(x_t, nfe, rows / B, time.perf_counter() - start, extra)

    def _denoise(self, x_t: torch.Tensor, cache: torch.Tensor | None, stale: torch.Tensor):
        """Recompute the denoiser for stale rows only. Returns (log_probs, calls, rows evaluated)."""
        if cache is None or not self.cached or stale.all():
            return self.denoiser(x_t), 1, x_t.shape[0]
        if not stale.any():
            return cache, 0, 0
        cache[stale] = self.denoiser(x_t[stale])  # in place: the sampler holds no other reference
        return cache, 1, int(stale.sum())
