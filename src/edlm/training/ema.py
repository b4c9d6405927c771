"""Exponential moving average of weights with warm-up: decay_n = min(decay, (1 + n) / (10 + n)).

The shadow is float32. ``update`` runs as two multi-tensor kernels (``_foreach_mul_`` then ``_foreach_add_``),
the same arithmetic as a per-tensor ``mul_(decay).add_(value, alpha=1 - decay)``, so both give identical
shadows; ``foreach=False`` keeps the per-tensor loop for the throughput bench's comparison.
"""

from __future__ import annotations

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float, foreach: bool = True):
        self.decay = decay
        self.foreach = foreach
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, num_updates: int) -> None:
        decay = min(self.decay, (1 + num_updates) / (10 + num_updates))
        state = model.state_dict()
        if not self.foreach:
            for name, value in state.items():
                if value.dtype.is_floating_point:
                    self.shadow[name].mul_(decay).add_(value.float(), alpha=1 - decay)
                else:
                    self.shadow[name].copy_(value)
            return
        shadows, values = [], []
        for name, value in state.items():
            if value.dtype.is_floating_point:
                shadows.append(self.shadow[name])
                values.append(value.float())
            else:
                self.shadow[name].copy_(value)
        if shadows:
            torch._foreach_mul_(shadows, decay)
            torch._foreach_add_(shadows, values, alpha=1 - decay)
