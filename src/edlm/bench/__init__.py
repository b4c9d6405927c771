"""Benchmarks behind ``edlm bench NAME [args]``; each writes JSON + markdown (+ PNG) into its --out folder."""

from __future__ import annotations

import importlib

BENCHES = {
    "throughput": "edlm.bench.throughput",
    "sampling": "edlm.bench.sampling_speed",
    "learning-curve": "edlm.bench.learning_curve",
    "quality": "edlm.bench.quality",
    "likelihood": "edlm.bench.likelihood",
    "scaling": "edlm.bench.scaling",
}


def run_bench(name: str, argv: list[str]) -> int:
    if name not in BENCHES:
        raise ValueError(f"edlm bench {name!r}: unknown benchmark (valid: {', '.join(BENCHES)})")
    return importlib.import_module(BENCHES[name]).main(argv) or 0
