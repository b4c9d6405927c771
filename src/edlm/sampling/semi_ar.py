"""Semi-autoregressive block sampling (LLaDA, BD3-LM style; docs/method.md §2).

The sequence is cut into blocks of ``block`` positions, sampled left to right; inside the current block any
masked-diffusion step (``inner``: ancestral, first-hitting, confidence, remdm, threshold) runs from local time
1 to 0. Earlier blocks are frozen; later blocks stay [MASK] in the denoiser's input (as in LLaDA: the network
sees the whole sequence) and the proposal draws x0 for the whole sequence, so importance sampling scores full
candidates, but only the current block's positions are ever revealed.

How the inner step is confined: it is handed x_t with the later blocks' masked positions replaced by a
placeholder token (so it sees them as visible: it neither counts, scores, reveals nor remasks them), and
draws x0 through ``BlockView``, which calls the real proposal on the real x_t and returns the placeholder
there. Its x_s gets the [MASK]s back. An inner ``remdm`` starts each block at local t = 1, so the earlier
blocks (visible then) count as fixed and are never remasked.

Steps: ``steps`` is split evenly, ``steps // n_blocks`` (at least 1) per block, on the local grid
1 = tau_0 > ... > tau_n = 0; the last step of a block goes to local time 0, which reveals every masked position
left in it (the ancestral reveal probability is 1 there), so no block is left half done. Inner steps with their
own clock (first-hitting, threshold) ignore the grid and finish the block in at most its masked count of calls.

Clock (per row): the current block b is the first block that still has a masked position (decided from x_t,
so an all-prompt block is skipped and a block that finishes early hands over at once); the row's time encodes
its local time tau: t = (n_blocks - 1 - b + tau) / n_blocks, decoded each step and snapped to the local grid
(within 1e-9) against float rounding. A new block starts at tau = 1 exactly. The proposal (and so importance
sampling's window t >= 1 - window) sees the local time: each block has its own early, fully masked phase. A
time-conditioned denoiser is fed the encoded t, which is not the sequence's masked fraction: prefer a model
without time conditioning (MDLM's default) with this sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from edlm.sampling.base import Proposal, Step, StepOutput, per_row


class BlockView:
    """The proposal an inner step draws through: the real proposal on the real x_t; hidden positions -> placeholder.

    ``bind`` is called by ``SemiAutoregressiveStep`` before every inner step; ``x0`` keeps the real draw."""

    def __init__(self, proposal: Proposal):
        self.target = proposal
        self.x_t: torch.Tensor | None = None  # (B, L) the real x_t
        self.hidden: torch.Tensor | None = None  # (B, L) bool: later blocks' masked positions
        self.placeholder = 0
        self.x0: torch.Tensor | None = None  # (B, L) the real draw of the last call

    def bind(self, target: Proposal, x_t: torch.Tensor, hidden: torch.Tensor, placeholder: int) -> None:
        self.target, self.x_t, self.hidden, self.placeholder, self.x0 = target, x_t, hidden, placeholder, None

    def __call__(self, log_probs, x_view, t, generator):
        self.x0 = self.target(log_probs, self.x_t, t, generator)
        return torch.where(self.hidden, self.placeholder, self.x0)

    def reuse_allowed(self, t: float) -> bool:
        return self.target.reuse_allowed(t)

    def stats(self) -> dict[str, float]:
        return self.target.stats()


@dataclass
class SemiAutoregressiveStep:
    mask_id: int
    proposal: Proposal
    inner: Step  # built on a ``BlockView`` of ``proposal``
    block: int = 32
    block_steps: int = 1  # grid steps per block, set by ``plan_steps``
    reuses_x0: bool = field(init=False)

    def __post_init__(self):
        if not isinstance(self.inner.proposal, BlockView):
            raise ValueError("semi-ar: the inner step must draw through a BlockView of the proposal")
        self.reuses_x0 = self.inner.reuses_x0  # x0 depends on x_t only, whichever block is current

    @classmethod
    def around(cls, make_inner, schedule, mask_id: int, proposal: Proposal, block: int, sample
               ) -> "SemiAutoregressiveStep":
        """Build with ``inner = make_inner(schedule, mask_id, BlockView(proposal), sample)`` (a registry entry)."""
        return cls(mask_id, proposal, make_inner(schedule, mask_id, BlockView(proposal), sample), block)

    def plan_steps(self, steps: int, length: int) -> int:
        blocks = math.ceil(length / self.block)
        self.block_steps = max(1, steps // blocks)
        return blocks * self.inner.plan_steps(self.block_steps, min(self.block, length))

    def step(self, log_probs, x_t, t, s, generator) -> StepOutput:
        B, L = x_t.shape
        blocks = math.ceil(L / self.block)
        t = per_row(t, B, x_t.device)
        masked = x_t == self.mask_id  # (B, L)
        position_block = torch.arange(L, device=x_t.device) // self.block  # (L,)
        current = self._current_block(masked, position_block, blocks)  # (B,)
        hidden = masked & (position_block[None] != current[:, None])  # (B, L) later blocks' masks
        tau, sigma = self._local_times(t * blocks - (blocks - 1 - current).double())  # (B,), (B,)
        placeholder = 1 if self.mask_id == 0 else 0
        x_view = torch.where(hidden, placeholder, x_t)
        view = self.inner.proposal
        view.bind(self.proposal, x_t, hidden, placeholder)
        out = self.inner.step(log_probs, x_view, tau, sigma, generator)
        x_s = torch.where(hidden, self.mask_id, out.x_s)
        after = self._current_block(x_s == self.mask_id, position_block, blocks)  # (B,)
        local = torch.where(after == current, out.t_s, torch.ones_like(out.t_s))  # a new block starts at 1
        t_s = (blocks - 1 - after.double() + local) / blocks
        t_s = torch.where(masked.any(-1), t_s, t)  # finished rows keep their time
        return StepOutput(x_s, view.x0, (x_s != x_t).any(-1), t_s)

    def _current_block(self, masked: torch.Tensor, position_block: torch.Tensor, blocks: int) -> torch.Tensor:
        """(B,) int64: the first block with a masked position (``blocks`` where none is left)."""
        return torch.where(masked, position_block[None], blocks).min(-1).values

    def _local_times(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded local time (B,) -> (tau, next grid time) snapped to the grid 1, 1 - 1/n, ..., 0 (n = block_steps)."""
        n = self.block_steps
        grid = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64, device=tau.device)  # (n + 1,)
        tau = tau.clamp(0.0, 1.0)
        index = ((1.0 - tau) * n).round().long().clamp(0, n - 1)  # (B,)
        snapped = torch.where((tau - grid[index]).abs() < 1e-9, grid[index], tau)
        return snapped, grid[index + 1]
