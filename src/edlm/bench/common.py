"""Shared benchmark plumbing: output folders, environment record, markdown tables, matmul peak, plots, host-sync
counting. The 95% intervals of repeated timings are in ``edlm.stats``."""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from edlm.stats import Interval


def environment(device: torch.device | str | None = None) -> dict:
    """Where a benchmark ran: torch version, threads, CPU, and the GPU (name, CUDA version) when one is used."""
    record = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "processor": platform.processor() or platform.uname().machine,
              "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        record.update(device_name=torch.cuda.get_device_name(device), cuda_version=torch.version.cuda)
    else:
        record["device_name"] = f"cpu ({record['threads']} threads)"
    return record


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (timings on CUDA must bracket it); a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def write_results(out: Path, name: str, payload: dict, table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {out / (name + '.json')} and {out / (name + '.md')}")


def markdown_table(rows: list[dict], columns: list[str], formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if isinstance(value, float) and column in formats:
                value = format(value, formats[column])
            elif isinstance(value, float):
                value = f"{value:.4g}"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu", size: int = 2048,
                seconds: float = 2.0) -> float:
    """Measured dense matmul rate in FLOP/s (best of repeated runs): the physical limit we compare to."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        synchronize(device)
        best = max(best, 4 * 2 * size ** 3 / (time.perf_counter() - start))
    return best


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing (plots are optional:
    every figure's numbers are in the JSON and markdown too)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def interval_plot(labels: list[str], estimates: list[Interval | None], path: Path, xlabel: str,
                  title: str) -> list[str]:
    """A point per label with its 95% interval as a whisker (a point without an interval has none), on a log
    axis: the intervals are multiplicative, and a few repeats can give a long upper whisker. Returns [path], or
    [] when matplotlib is missing (the JSON and markdown carry the same numbers)."""
    plt = pyplot()
    if plt is None:
        return []
    values = [e.estimate if e else float("nan") for e in estimates]
    errors = [[e.estimate - e.low if e else 0.0 for e in estimates],
              [e.high - e.estimate if e else 0.0 for e in estimates]]
    fig, axis = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.4))
    positions = list(range(len(labels)))[::-1]  # first label on top
    axis.errorbar(values, positions, xerr=errors, fmt="o", color="#4c72b0", ecolor="black", capsize=3)
    axis.set_xscale("log")
    axis.set_yticks(positions, labels, fontsize=8)
    axis.set_ylim(-0.7, len(labels) - 0.3)
    axis.set_xlabel(xlabel + ", log scale")
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", which="both", alpha=0.3)
    return save_figure(plt, fig, path)


def save_figure(plt, fig, path: Path) -> list[str]:
    """Lay out ``fig``, write it to ``path`` (folders created) at the benchmarks' resolution, close it; [path]."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


class HostSyncCounter(TorchDispatchMode):
    """Counts, while active, the operations that make the host wait for the device on a GPU: reading a value
    (``.item()``, ``if tensor``: ``_local_scalar_dense``/``is_nonzero``), ``nonzero``, and indexing or assigning
    with a boolean mask (its size must reach the host), and copying a tensor to the host (``.to("cpu")`` of a
    device tensor; on a CPU, where that is a no-op, the explicit ``.to("cpu", copy=True)`` that stands for it). A
    dispatch mode sees each op on any device, so the count is the same on a CPU as it would be on CUDA.
    ``counts``: {op: calls}.

        with HostSyncCounter() as syncs:
            generate(...)
        syncs.total
    """

    VALUE_OPS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select")
    MASK_OPS = ("aten.index", "aten.index_put_", "aten.index_put")

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in self.VALUE_OPS:
            self.counts[name] += 1
        elif name in self.MASK_OPS and len(args) > 1 and any(
                isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in args[1] or []):
            self.counts[f"{name} (boolean mask)"] += 1
        elif name in ("aten._to_copy", "aten.copy_") and _copies_to_host(name, args, kwargs or {}):
            self.counts[f"{name} (to the host)"] += 1
        return func(*args, **(kwargs or {}))


def _copies_to_host(name: str, args, kwargs) -> bool:
    """A copy into host memory: from a device tensor, or a plain copy (same dtype) of a CPU tensor to the CPU."""
    if name == "aten.copy_":
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    target = kwargs.get("device")
    if target is None or torch.device(target).type != "cpu":
        return False
    source = args[0]
    return source.device.type != "cpu" or kwargs.get("dtype") in (None, source.dtype)
