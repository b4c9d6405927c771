"""Semi-autoregressive block sampling (LLaDA, BD3-LM style; docs/method.md §2).

The sequence is cut into blocks of ``block`` positions, sampled left to right; inside the current block any
masked-diffusion step (``inner``: ancestral, first-hitting, confidence, remdm, threshold) runs from local time
1 to 0. Earlier blocks are frozen; later blocks stay [MASK] in the denoiser's input (as in LLaDA: the network
sees the whole sequence) and the loop draws x0 for the whole sequence, so importance sampling scores full
candidates (whole-row weighting) or fills the later blocks (reveal-set weighting), but only the current block's
positions are ever revealed.

How the inner step is confined: it plans and applies on a view of x_t whose later blocks' masked positions hold
a placeholder token (so it sees them as visible: it neither counts, scores, reveals nor remasks them), and is
handed x0 with the placeholder there. Its x_s gets the [MASK]s back. An inner ``remdm`` starts each block at
local t = 1, so the earlier blocks (visible then) count as fixed and are never remasked. The reveal set is the
inner step's.

Steps (as LLaDA): ``steps`` is split over the blocks that have something to generate (a block that is all prompt
takes none), as evenly as integers allow (the first ``steps % n`` of them take one more), at least 1 each, on the
local grid 1 = tau_0 > ... > tau_n = 0; so a prompt never changes the number of network calls. The last step of a
block goes to local time 0, which reveals every masked position left in it (the ancestral reveal probability is 1
there), so no block is left half done. Inner steps with their own clock (first-hitting, threshold) ignore the grid
and finish the block in at most its masked count of calls.

Clock (per row): the current block b is the first block that still has a masked position (decided from x_t,
so an all-prompt block is skipped and a block that finishes early hands over at once); the row's time encodes
its local time tau: t = (n_blocks - 1 - b + tau) / n_blocks, decoded each step and snapped to the local grid
(within 1e-9) against float rounding. A new block starts at tau = 1 exactly. The x0 draw (and so importance
sampling's window t >= 1 - window) sees the local time: each block has its own early, fully masked phase. A
time-conditioned denoiser is fed the encoded t, which is not the sequence's masked fraction: prefer a model
without time conditioning (MDLM's default) with this sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from edlm.config import ConfigError, raise_first_error
from edlm.sampling.base import Plan, Step, StepOutput
from edlm.sampling.registry import SAMPLERS, SamplerSpec, register


@dataclass(frozen=True)
class SemiAROptions:
    block: int = field(default=32, metadata={
        "help": "block length; blocks are sampled left to right, steps split among the blocks to generate"})
    inner: str = field(default="ancestral", metadata={
        "help": "the sampler run inside each block: any registered sampler except semi-ar and cached (the cache "
                "follows --sampler semi-ar itself)"})

    def __post_init__(self):
        raise_first_error(self, [(self.block >= 1, "block", "must be >= 1")])
        if self.inner in ("semi-ar", "cached") or (SAMPLERS and self.inner not in SAMPLERS):
            valid = [name for name in SAMPLERS if name not in ("semi-ar", "cached")]
            raise ConfigError(f"{self.inner!r}: expected one of {', '.join(valid)}", "inner")


@dataclass
class SemiAutoregressiveStep:
    mask_id: int
    inner: Step
    block: int = 32
    own_clock = True  # the time encodes the block
    # per block: its steps (0 for a block with nothing to generate) and its local grid, set by ``iterations``
    block_steps: torch.Tensor | None = field(default=None, init=False, repr=False)  # (n_blocks,) int64
    grids: torch.Tensor | None = field(default=None, init=False, repr=False)  # (n_blocks, max + 1) float64

    @property
    def plans_before_x0(self) -> bool:
        return self.inner.plans_before_x0

    def iterations(self, steps: int, x_init: torch.Tensor) -> int:
        L = x_init.shape[1]
        blocks = math.ceil(L / self.block)
        to_generate = torch.zeros(blocks, dtype=torch.bool)
        masked_positions = (x_init == self.mask_id).any(0).cpu()  # (L,) one host read, before the loop
        to_generate.index_fill_(0, masked_positions.nonzero().squeeze(1) // self.block, True)
        count = int(to_generate.sum())
        share = torch.zeros(blocks, dtype=torch.long)
        if count:
            extra = (torch.arange(count) < steps % count).long()
            share[to_generate] = torch.clamp(steps // count + extra, min=1)
        self.block_steps = share.to(x_init.device)
        width = int(share.max()) if count else 1
        self.grids = torch.stack([torch.nn.functional.pad(torch.linspace(1.0, 0.0, max(n, 1) + 1,
                                                                         dtype=torch.float64), (0, width - max(n, 1)))
                                  for n in share.tolist()]).to(x_init.device)  # (blocks, width + 1)
        block_template = x_init[:, :min(self.block, L)]
        return sum(self.inner.iterations(n, block_template) for n in share.tolist() if n)

    def proposal_time(self, x_t, t):
        return self._view(x_t, t)[1]

    def plan(self, log_probs, x_t, t, s, generator) -> Plan:
        hidden, tau, sigma, current = self._view(x_t, t)
        x_view = torch.where(hidden, self._placeholder(), x_t)
        inner = self.inner.plan(log_probs, x_view, tau, sigma, generator)
        return Plan(inner.reveal, inner.remask, extra={"inner": inner, "hidden": hidden, "tau": tau, "sigma": sigma,
                                                       "current": current, "x_view": x_view})

    def apply(self, x_t, x0, plan, t, s, generator) -> StepOutput:
        view = plan.extra
        hidden, current = view["hidden"], view["current"]
        x0_view = torch.where(hidden, self._placeholder(), x0)
        out = self.inner.apply(view["x_view"], x0_view, view["inner"], view["tau"], view["sigma"], generator)
        x_s = torch.where(hidden, self.mask_id, out.x_s)
        blocks = self.block_steps.shape[0]
        after = self._current_block(x_s == self.mask_id, blocks)  # (B,)
        local = torch.where(after == current, out.t_s, torch.ones_like(out.t_s))  # a new block starts at 1
        t_s = (blocks - 1 - after.double() + local) / blocks
        t_s = torch.where((x_t == self.mask_id).any(-1), t_s, t)  # finished rows keep their time
        return StepOutput(x_s, (x_s != x_t).any(-1), t_s)

    def _placeholder(self) -> int:
        return 1 if self.mask_id == 0 else 0

    def _view(self, x_t: torch.Tensor, t: torch.Tensor):
        """(hidden (B, L) bool: later blocks' masks, local tau (B,), next local grid time (B,), current (B,))."""
        blocks = self.block_steps.shape[0]
        masked = x_t == self.mask_id  # (B, L)
        current = self._current_block(masked, blocks)  # (B,)
        position_block = torch.arange(x_t.shape[1], device=x_t.device) // self.block  # (L,)
        hidden = masked & (position_block[None] != current[:, None])  # (B, L)
        tau, sigma = self._local_times(t * blocks - (blocks - 1 - current).double(), current.clamp(max=blocks - 1))
        return hidden, tau, sigma, current

    def _current_block(self, masked: torch.Tensor, blocks: int) -> torch.Tensor:
        """(B,) int64: the first block with a masked position (``blocks`` where none is left)."""
        position_block = torch.arange(masked.shape[1], device=masked.device) // self.block  # (L,)
        return torch.where(masked, position_block[None], blocks).min(-1).values

    def _local_times(self, tau: torch.Tensor, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded local time (B,) of rows in ``block`` (B,) -> (tau, next grid time) on that block's grid
        1, 1 - 1/n, ..., 0, snapped to it (n = the block's steps)."""
        n = self.block_steps.index_select(0, block).clamp(min=1)  # (B,)
        grid = self.grids.index_select(0, block)  # (B, width + 1)
        tau = tau.clamp(0.0, 1.0)
        index = torch.minimum(((1.0 - tau) * n).round().long().clamp(min=0), n - 1)  # (B,)
        at = grid.gather(1, index[:, None]).squeeze(1)
        snapped = torch.where((tau - at).abs() < 1e-9, at, tau)
        return snapped, grid.gather(1, (index + 1)[:, None]).squeeze(1)


def _build(schedule, mask_id, options, sample):
    inner = SAMPLERS[options.inner]
    return SemiAutoregressiveStep(mask_id, inner.build(schedule, mask_id, sample.options_for(options.inner), sample),
                                  options.block)


register(SamplerSpec("semi-ar", "blocks left to right, --inner inside each, earlier blocks frozen", SemiAROptions,
                     _build))
