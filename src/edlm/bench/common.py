"""Shared benchmark plumbing: output folders, environment record, markdown tables, matmul peak."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch


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
