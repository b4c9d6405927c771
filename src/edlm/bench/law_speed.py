"""Speed of the exact law computations that drive sampling (``edlm.law``), and the default laws' entropy rates.

    edlm bench law-speed [--repeats 5] [--out bench/results] [--skip-slow]

For each law (Markov order 1 and 2 over 27 and 512 symbols, support 3; the HMM over 27 symbols with 4 hidden
states): the exact denoiser (posterior marginals of B = 64 rows of L = 128, half the positions masked, unsmoothed
and smoothed by 1e-3), ``subset_log_prob`` of N = 64 x 16 rows (visible half, subset a fifth of the rest, smoothed),
and ``log_prob`` of N = 1024 full rows (smoothed). Milliseconds per call, the geometric mean over ``--repeats``
timed calls after one warm-up, with its 95% interval. ``--skip-slow`` leaves out the subset marginals of the
large state spaces (order 2 over 512 symbols: several seconds per call).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from edlm.bench.common import environment, markdown_table, write_results
from edlm.flags import OneLineParser, positive_int
from edlm.stats import format_interval, geometric_interval

B, L, N = 64, 128, 64 * 16
LAWS = [("markov order 1, V 27", dict(kind="markov", vocab_size=27, order=1)),
        ("markov order 1, V 512", dict(kind="markov", vocab_size=512, order=1)),
        ("markov order 2, V 27", dict(kind="markov", vocab_size=27, order=2)),
        ("markov order 2, V 512", dict(kind="markov", vocab_size=512, order=2)),
        ("hmm, 4 hidden, V 27", dict(kind="hmm", vocab_size=27, hidden=4))]


def _time(call, repeats: int) -> dict:
    call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append((time.perf_counter() - started) * 1000)
    estimate = geometric_interval(seconds)
    return {"ms": estimate.estimate, "ci95": [estimate.low, estimate.high], "text": format_interval(estimate, ".1f")}


def measure(name: str, spec: dict, repeats: int, skip_slow: bool) -> dict:
    from edlm.law import make_law

    kind, vocab = spec["kind"], spec["vocab_size"]
    law = make_law(kind, vocab, 3, seed=0, order=spec.get("order", 1), hidden=spec.get("hidden", 4))
    generator = torch.Generator().manual_seed(0)
    x_t = law.sample(B, L, generator)
    x_t[torch.rand(B, L, generator=generator) < 0.5] = vocab
    rows = law.sample(N, L, generator)
    visible = torch.rand(N, L, generator=generator) < 0.5
    subset = ~visible & (torch.rand(N, L, generator=generator) < 0.2)
    row = {"law": name, "states": law.num_states, "entropy_rate": law.entropy_rate(),
           "denoiser": _time(lambda: law.posterior_log_probs(x_t, vocab), repeats),
           "denoiser_eps": _time(lambda: law.posterior_log_probs(x_t, vocab, 1e-3), repeats),
           "log_prob": _time(lambda: law.log_prob(rows, 1e-3), repeats)}
    slow = law.num_states > 1000
    row["subset"] = None if skip_slow and slow else _time(lambda: law.subset_log_prob(rows, visible, subset, 1e-3),
                                                          max(2, repeats // 2) if slow else repeats)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench law-speed", description=__doc__.split("\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=positive_int("--repeats"), default=5, help="timed calls per measurement")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    parser.add_argument("--skip-slow", action="store_true", help="no subset marginals for large state spaces")
    parser.add_argument("--device", default="cpu", choices=["cpu"],
                        help="the law's computations run on the CPU only (sequential, small, sparse float64 passes; "
                             "a denoiser built on them returns its output on the caller's device)")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (an interval needs two timings)")
    rows = [measure(name, spec, args.repeats, args.skip_slow) for name, spec in LAWS]
    table_rows = [{"law": r["law"], "states": r["states"], "entropy rate (nats/token)": r["entropy_rate"],
                   f"denoiser B={B} L={L} (ms)": r["denoiser"]["text"],
                   "same, eps 1e-3 (ms)": r["denoiser_eps"]["text"],
                   f"subset_log_prob N={N} (ms)": r["subset"]["text"] if r["subset"] else "skipped",
                   f"log_prob N={N} (ms)": r["log_prob"]["text"]} for r in rows]
    table = markdown_table(table_rows, list(table_rows[0]), {"entropy rate (nats/token)": ".4f"})
    write_results(Path(args.out), "law_speed", {"environment": environment(), "rows": rows}, table)
    return 0
