"""Processes launched by torchrun: which one am I, which work is mine, gathering results on rank 0, and the
collective checks of data-parallel training.

``torchrun --nproc_per_node N -m edlm sample|eval|eval-gen ...`` runs N copies of the command. Each joins the
process group (NCCL on GPUs, gloo on CPU), takes a contiguous block of whole batches (``shard``), and sends
its results to rank 0 (``gather_to_rank0``), which writes the output. Whole batches keep the batch
boundaries of a one-process run, so when each batch's randomness depends only on (seed, batch index) the
gathered output equals the one-process output. A plain ``python -m edlm`` is rank 0 of 1: no process group,
``shard`` returns everything and ``gather_to_rank0`` returns ``[obj]``. torchrun with one process joins a
process group of one (so a one-GPU NCCL run exercises the multi-GPU code path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edlm.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank of world, its local rank on the node, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False  # a process group is up (torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device | str | None = None) -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun), pick the device, join the process group.

    ``device``: ``None`` -> ``cuda:LOCAL_RANK`` when CUDA is present, else ``cpu``. With more than one process a
    CUDA request always becomes ``cuda:LOCAL_RANK`` (one GPU per process). Bad names raise ``DeviceError``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    chosen = resolve_device(None if device is None else str(device))
    if chosen.type == "cuda" and world > 1:
        chosen = resolve_device(f"cuda:{local_rank}", flag="LOCAL_RANK")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if launched_by_torchrun() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, chosen, dist.is_available() and dist.is_initialized())


def local_process(device: torch.device | str | None = None) -> DistInfo:
    """This process alone (rank 0 of 1, no process group) on ``device`` (None: CUDA when present, else CPU):
    what library code runs as unless its caller, which owns the processes, passes an ``init_from_env`` result."""
    chosen = resolve_device(None if device is None else str(device))
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    return DistInfo(device=chosen)


WORKER_ERRORS = "EDLM_WORKER_ERRORS"  # set by run_workers: the folder where its workers leave their user errors


def report_user_error(message: str) -> None:
    """Show a one-line user error: on stderr, or, in a worker of ``run_workers``, in its error folder (the
    launcher prints each distinct message once)."""
    import sys

    folder = os.environ.get(WORKER_ERRORS)
    if folder and os.path.isdir(folder):
        with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}.txt"), "w") as file:
            file.write(message)
    else:
        print(f"edlm: error: {message}", file=sys.stderr)


def run_workers(nproc: int, argv: list[str]) -> int:
    """``python -m edlm ARGV`` in ``nproc`` local worker processes joined in one process group, started the way
    ``torchrun --standalone --nproc_per_node NPROC`` starts them (torch's elastic launcher, called from this
    process), so ``edlm CMD --nproc N`` needs no torchrun in front (whose parser took edlm's ``--run`` for its
    ``--run-path``). Workers get this edlm on PYTHONPATH and, unless set, OMP_NUM_THREADS=1 (as torchrun).
    Returns 0, or the exit code of a failed worker. A worker's one-line user error goes to a file
    (``WORKER_ERRORS``) and this process prints each distinct one once, not once per worker."""
    import logging
    import sys
    import tempfile
    import uuid
    from pathlib import Path

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    import edlm

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    source = str(Path(edlm.__file__).resolve().parents[1])
    errors = tempfile.TemporaryDirectory(prefix="edlm-errors-")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), WORKER_ERRORS: errors.name}
    saved = {name: os.environ.get(name) for name in env}
    launcher_log = logging.getLogger("torch.distributed.elastic")
    level = launcher_log.level
    os.environ.update(env)
    launcher_log.setLevel(logging.CRITICAL)  # a failed worker prints its own one-line error
    try:
        elastic_launch(config, sys.executable)("-m", "edlm", *argv)
        return 0
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        messages = [path.read_text() for path in sorted(Path(errors.name).glob("rank*.txt"),
                                                         key=lambda path: int(path.stem[4:]))]
        for message in dict.fromkeys(messages):  # distinct, in rank order
            print(f"edlm: error: {message}", file=sys.stderr)
        return max(codes) if max(codes) > 0 else 1
    finally:
        errors.cleanup()
        launcher_log.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def launched_by_torchrun() -> bool:
    """torchrun (even ``--nproc_per_node 1``) sets these; a plain ``python -m edlm`` does not."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ)


def shard(n_items: int, rank: int, world: int, batch_size: int = 1) -> range:
    """Item indices of rank ``rank``: a contiguous block of whole batches of ``batch_size`` items.

    The ``ceil(n_items / batch_size)`` batches are split as evenly as possible (earlier ranks take one more
    when they do not divide); concatenating the ranges of ranks 0 .. world-1 gives ``range(n_items)``.
    """
    n_batches = -(-n_items // batch_size)
    per_rank, extra = divmod(n_batches, world)
    first = rank * per_rank + min(rank, extra)
    last = first + per_rank + (1 if rank < extra else 0)
    return range(min(first * batch_size, n_items), min(last * batch_size, n_items))


def gather_to_rank0(obj) -> list | None:
    """Every rank's ``obj`` (picklable, e.g. a list of strings or a CPU tensor) in rank order on rank 0;
    ``None`` on the other ranks. One process: ``[obj]``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    rank = dist.get_rank()
    gathered = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def batches_of(rows: range, batch_size: int) -> range:
    """Indices of the batches of ``batch_size`` that hold the items ``rows`` (a ``shard``, so whole batches)."""
    if len(rows) == 0:
        return range(0)
    return range(rows.start // batch_size, -(-rows.stop // batch_size))


def batch_seed(seed: int, batch_index: int) -> int:
    """A 63-bit seed from (seed, batch index) (splitmix64 mixing): batch b's draws depend on these two only,
    so batches can be split across processes and reproduce a one-process run."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + (batch_index + 1) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1


def all_reduce_flag(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is True on any rank (every rank must call it)."""
    if info.world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
