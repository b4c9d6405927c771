"""Benchmarks behind ``edlm bench NAME [args]``; each writes JSON + markdown (+ PNG) into its --out folder."""

from __future__ import annotations

import importlib

from edlm.errors import EdlmError


class BenchError(EdlmError, ValueError):
    """A bad benchmark name or benchmark flag; the message names it."""


BENCHES = {
    "throughput": "edlm.bench.throughput",
    "sampling": "edlm.bench.sampling_speed",
    "learning-curve": "edlm.bench.learning_curve",
    "quality": "edlm.bench.quality",
    "likelihood": "edlm.bench.likelihood",
    "scaling": "edlm.bench.scaling",
    "step-cost": "edlm.bench.step_cost",
    "vs-mdlm": "edlm.bench.vs_mdlm",
    "law-speed": "edlm.bench.law_speed",
    "oracle": "edlm.bench.oracle",
}


def run_bench(name: str, argv: list[str]) -> int:
    if name not in BENCHES:
        raise BenchError(f"edlm bench {name!r}: unknown benchmark (valid: {', '.join(BENCHES)})")
    return importlib.import_module(BENCHES[name]).main(argv) or 0
