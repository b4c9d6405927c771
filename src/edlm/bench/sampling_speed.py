"""Ancestral vs cached sampler: time and NFE for the same samples (same seed, same random stream).

    edlm bench sampling [--run RUN] [--num 16] [--steps 1024] [--length 256] [--out bench/results]

Without ``--run`` a randomly initialised char-small denoiser is timed: which rows change at a step does not
depend on the weights, so NFE and the time ratio are the same as for a trained model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edlm.bench.common import environment, markdown_table, write_results
from edlm.config import get_preset
from edlm.checkpoint import load_model
from edlm.models import build_model
from edlm.config import SampleConfig
from edlm.sampling.generate import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edlm bench sampling")
    parser.add_argument("--run")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if args.run:
        config, model = load_model(args.run)
    else:
        config = get_preset("char-small")
        torch.manual_seed(0)
        model = build_model(config.model).eval()
    rows, tokens = [], {}
    for sampler in ("ancestral", "cached"):
        spec = SampleConfig(num=args.num, steps=args.steps, length=args.length, sampler=sampler, seed=0,
                            batch_size=args.num, precision=args.precision)
        texts, result = generate(model, config, spec)
        tokens[sampler] = result.tokens
        rows.append({"sampler": sampler, "seconds": result.seconds, "nfe": result.nfe,
                     "nfe_per_sequence": result.nfe_rows, "tokens_per_s": args.num * args.length / result.seconds})
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    identical = bool(torch.equal(tokens["ancestral"], tokens["cached"]))
    table = markdown_table(rows, ["sampler", "seconds", "nfe", "nfe_per_sequence", "tokens_per_s"],
                           {"seconds": ".2f", "nfe_per_sequence": ".1f", "tokens_per_s": ",.0f"})
    text = (f"{args.num} samples, L = {args.length}, T = {args.steps}, {args.precision}, "
            f"{torch.get_num_threads()} threads, run {args.run or 'random-init char-small'}\n\n{table}\n\n"
            f"cached speed-up: {speedup:.2f}x; identical samples: {identical}")
    write_results(Path(args.out), "sampling", {"rows": rows, "speedup": speedup, "identical": identical,
                                               "settings": vars(args), "environment": environment()}, text)
    return 0
