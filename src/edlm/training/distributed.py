"""Data-parallel training helpers over torch.distributed (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK).

NCCL on GPUs, gloo on CPU. A single process (no torchrun) runs with rank 0 of 1 and no process group.
Process placement (``DistInfo``, ``init_distributed``) lives in ``edlm.parallel``, shared with sampling and
evaluation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from edlm.parallel import DistInfo, barrier, init_from_env

init_distributed = init_from_env

__all__ = ["DistInfo", "all_reduce_flag", "barrier", "cleanup", "init_distributed"]


def all_reduce_flag(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is True on any rank."""
    if info.world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def cleanup(info: DistInfo) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
