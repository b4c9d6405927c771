"""One optimiser step's loss and gradients, and the watch for non-finite values that never waits for the host."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from edlm.device import autocast_for
from edlm.errors import EdlmError
from edlm.parallel import DistInfo, all_reduce_flag
from edlm.training.batches import GlobalBatch
from edlm.training.objectives import Objective


class TrainingError(EdlmError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume); the message says why."""


def to_device(batch: GlobalBatch, device: torch.device) -> GlobalBatch:
    """Copy a batch to ``device``; on CUDA through pinned memory without blocking the host."""
    if device.type != "cuda":
        return batch.to(device)

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.pin_memory().to(device, non_blocking=True)

    return GlobalBatch(move(batch.x0), move(batch.t), move(batch.uniforms))


def forward_backward(module, objective: Objective, batch: GlobalBatch, grad_accum: int, info: DistInfo,
                     precision: str, cuda_graphs: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and gradients of one optimiser step over ``grad_accum`` micro-batches.

    ``cuda_graphs``: the module is compiled with CUDA graphs (``train.compile_mode=reduce-overhead``); each
    micro-step is marked as a new graph iteration, as torch.compile asks of training loops.
    Returns the step's mean loss as a 0-dim float32 tensor on the device (not read back) and the extras.
    """
    loss_sum, extras = torch.zeros((), device=info.device), {}
    for micro in range(grad_accum):
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        part = batch.shard(micro, grad_accum)
        sync = micro == grad_accum - 1 or info.world == 1
        context = module.no_sync() if not sync else nullcontext()
        with context, autocast_for(info.device, precision):
            per_sequence, extras = objective(module, part)
            loss = per_sequence.float().mean() / grad_accum
        loss.backward()
        loss_sum = loss_sum + loss.detach()
    return loss_sum, extras


class Health:
    """The first non-finite step since the start, recorded on the device (no host synchronisation)."""

    def __init__(self, device: torch.device):
        self.step = torch.full((), -1, dtype=torch.int64, device=device)
        self.loss = torch.zeros((), device=device)
        self.norm = torch.zeros((), device=device)

    def record(self, step: int, loss: torch.Tensor, norm: torch.Tensor) -> None:
        first = ~(torch.isfinite(loss) & torch.isfinite(norm)) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.float(), self.loss)
        self.norm = torch.where(first, norm.float(), self.norm)

    def raise_if_bad(self, info: DistInfo, run_dir: Path) -> None:
        bad_step = int(self.step)
        if all_reduce_flag(bad_step >= 0, info):
            where = f"at step {bad_step}" if bad_step >= 0 else "on another rank"
            raise TrainingError(f"non-finite loss ({float(self.loss)}) or gradient norm ({float(self.norm)}) "
                                f"{where}; stopped without saving, the last good checkpoint in "
                                f"{run_dir / 'checkpoints'} is untouched (train.on_nonfinite=skip to skip "
                                f"such steps)")
