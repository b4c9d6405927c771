"""Progress of long loops: a tqdm bar on a terminal, and elsewhere (a log file, a pipe, a batch job) a plain line
every few seconds, so a long evaluation is never silent until its end."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")
EVERY_SECONDS = 5.0  # seconds between two progress lines when the stream is not a terminal


def progress(items: Iterable[Item], desc: str, enabled: bool = True, total: int | None = None,
             stream: TextIO | None = None, every: float | None = None, unit: str = "batches") -> Iterable[Item]:
    """``items`` unchanged, reporting progress on ``stream`` (default: stderr) while they are consumed.

    On a terminal: a transient tqdm bar. Otherwise: "DESC: 3/6 batches (50%), 12s elapsed, about 12s left",
    at most one line per ``every`` seconds (default ``EVERY_SECONDS``). ``enabled=False``: nothing."""
    if not enabled:
        return items
    stream = stream or sys.stderr
    total = total if total is not None else len(items) if hasattr(items, "__len__") else None
    if stream.isatty():
        return tqdm(items, desc=desc, total=total, leave=False, file=stream)
    return _lines(items, desc, total, stream, EVERY_SECONDS if every is None else every, unit)


def _lines(items: Iterable[Item], desc: str, total: int | None, stream: TextIO, every: float,
           unit: str) -> Iterator[Item]:
    started = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item  # the caller's work on ``item`` happens before we get control back
        now = time.monotonic()
        if now - last < every:
            continue
        last, elapsed = now, now - started
        where = f"{done}/{total} {unit} ({done / total:.0%})" if total else f"{done} {unit}"
        left = f", about {_duration(elapsed * (total - done) / done)} left" if total else ""
        print(f"{desc}: {where}, {_duration(elapsed)} elapsed{left}", file=stream, flush=True)


def _duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
