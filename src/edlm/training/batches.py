"""Deterministic per-step randomness: everything a training step draws is a function of (seed, step).

Resuming therefore needs no RNG state, and a data-parallel run draws the same global batch as a
single-process run: rank r of W takes rows [r * B / W, (r + 1) * B / W) of every global tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edlm.diffusion.subs import stratified_times


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator unique to (seed, step, stream)."""
    mixed = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


@dataclass
class GlobalBatch:
    x0: torch.Tensor  # (B, L) int64
    t: torch.Tensor  # (B,) float32, stratified over the global batch
    uniforms: torch.Tensor  # (B, L) float32 masking noise

    def shard(self, rank: int, world: int) -> "GlobalBatch":
        size = self.x0.shape[0] // world
        rows = slice(rank * size, (rank + 1) * size)
        return GlobalBatch(self.x0[rows], self.t[rows], self.uniforms[rows])

    def to(self, device) -> "GlobalBatch":
        return GlobalBatch(self.x0.to(device), self.t.to(device), self.uniforms.to(device))


def global_batch(tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, step: int,
                 eps_t: float = 1e-3, t_range: tuple[float, float] | None = None) -> GlobalBatch:
    """Draw step ``step``'s global batch. ``t_range`` restricts t (NCE window); default [eps_t, 1]."""
    generator = step_generator(seed, step)
    offsets = torch.randint(0, len(tokens) - seq_len + 1, (batch_size,), generator=generator)
    x0 = torch.from_numpy(np.stack([tokens[o:o + seq_len] for o in offsets.tolist()]).astype(np.int64))
    t = stratified_times(batch_size, generator, eps_t)
    if t_range is not None:
        low, high = t_range
        t = low + (high - low) * (t - eps_t) / (1.0 - eps_t)
    uniforms = torch.rand((batch_size, seq_len), generator=generator)
    return GlobalBatch(x0, t, uniforms)
