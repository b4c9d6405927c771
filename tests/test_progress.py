"""Progress of long loops: a bar on a terminal, a plain line every few seconds elsewhere, nothing when off."""

from __future__ import annotations

import io

import edlm.progress as progress_module
from edlm.progress import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_a_line_every_few_seconds(monkeypatch):
    clock = iter(range(0, 1000, 2))  # 2 s per item
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: float(next(clock)))
    stream = io.StringIO()
    assert list(progress(range(6), "edlm likelihood", stream=stream, every=5.0, unit="batches")) == list(range(6))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and 1 <= len(lines) <= 3, lines  # every 5 s of 12, not per item
    assert lines[0].startswith("edlm likelihood: 3/6 batches (50%)") and "left" in lines[0], lines


def test_nothing_when_disabled_and_a_bar_on_a_terminal():
    stream = io.StringIO()
    assert list(progress(range(3), "x", enabled=False, stream=stream)) == [0, 1, 2]
    assert stream.getvalue() == ""
    terminal = FakeTerminal()
    assert list(progress(range(3), "bar", stream=terminal)) == [0, 1, 2]
    assert "bar" in terminal.getvalue()  # tqdm drew on it
