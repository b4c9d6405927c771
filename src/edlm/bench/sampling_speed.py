"""Sampling cost: seconds per sample, denoiser and energy calls, float64 draw share, importance-sampling overhead.

    edlm bench sampling [--run RUN] [--energy-run AR_RUN] [--device cuda] [--num 64] [--length 256]
                        [--steps 256,1024] [--k 4] [--window 1.0] [--out bench/results]

For each T: the ancestral and the cached sampler, each plain (MDLM) and with importance sampling (EDLM, k
candidates scored by an AR energy in one batched call per step, window 1.0). Without ``--run`` a randomly
initialised char-small denoiser is timed, and without ``--energy-run`` a random AR model of the same size:
which rows change at a step does not depend on the weights, so call counts and time ratios hold for trained
models too (a trained model's cached sampler skips the same share of calls on average).

The float64 categorical draw (softmax in float64, cumulative sum, inverse CDF) is timed on its own, with the
device synchronised before and after, on the shapes one step draws (B, L, V + 1) for 1 and k candidates;
its share is that time over the measured seconds per ancestral step.
Defaults on CPU are smaller (4 x 64, T = 16, 64).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from edlm.bench.common import environment, markdown_table, synchronize, write_results
from edlm.checkpoint import load_model
from edlm.config import SampleConfig, get_preset
from edlm.device import resolve_device
from edlm.diffusion.posterior import draw_candidates
from edlm.energy.ar import AREnergy
from edlm.models import build_model
from edlm.sampling.generate import generate


def time_draw(shape: tuple[int, int, int], num: int, device: torch.device, dtype_name: str = "float64",
              repeats: int = 20) -> float:
    """Seconds for one step's categorical draw of ``num`` candidates on (B, L, V) log-probs (synchronised)."""
    B, L, V = shape
    generator = torch.Generator(device=device).manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(B, L, V, device=device), -1)
    x_t = torch.full((B, L), V - 1, dtype=torch.long, device=device)
    if dtype_name == "float64":
        def draw():
            return draw_candidates(log_probs, x_t, V - 1, num, generator)
    else:  # the float32 alternative, for comparison only (not what the samplers do)
        def draw():
            probs = torch.softmax(log_probs, -1).cumsum(-1)  # (B, L, V)
            uniforms = torch.rand((B, L, num), generator=generator, device=device)
            return torch.searchsorted(probs, uniforms * probs[..., -1:], right=True)
    for _ in range(3):  # warm-up
        draw()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        draw()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edlm bench sampling")
    parser.add_argument("--run", help="denoiser run folder (default: random-init char-small)")
    parser.add_argument("--energy-run", help="AR run folder for the energy (default: random-init, same size)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--num", type=int, help="samples (default: 64 on CUDA, 4 on CPU)")
    parser.add_argument("--length", type=int, help="sequence length (default: 256 on CUDA, 64 on CPU)")
    parser.add_argument("--steps", help="comma-separated T (default: 256,1024 on CUDA, 16,64 on CPU)")
    parser.add_argument("--samplers", default="ancestral,cached", help="comma-separated (default: both)")
    parser.add_argument("--k", type=int, default=4, help="importance-sampling candidates")
    parser.add_argument("--window", type=float, default=1.0, help="importance-sampling window (fraction of steps)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="autocast precision")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    num = args.num or (64 if cuda else 4)
    length = args.length or (256 if cuda else 64)
    steps_list = [int(s) for s in (args.steps or ("256,1024" if cuda else "16,64")).split(",")]
    if args.run:
        config, model = load_model(args.run, device=device)
    else:
        config = get_preset("char-small")
        torch.manual_seed(0)
        model = build_model(config.model).to(device).eval()
    if args.energy_run:
        _, ar_model = load_model(args.energy_run, device=device)
    else:
        torch.manual_seed(1)
        ar_model = build_model(dataclasses.replace(config.model, kind="ar")).to(device).eval()
    energy = AREnergy(ar_model, config.model.mask_id, "coar", chunk_rows=num * args.k, precision=args.precision)
    length = min(length, config.model.seq_len)
    shape = (num, length, config.model.vocab_size + 1)
    draw = {(dtype, n): time_draw(shape, n, device, dtype) for dtype in ("float64", "float32") for n in (1, args.k)}

    rows = []
    for steps in steps_list:
        plain_seconds = {}
        for sampler in args.samplers.split(","):
            for k in (1, args.k):
                spec = SampleConfig(num=num, steps=steps, length=length, sampler=sampler, seed=0,
                                    batch_size=num, precision=args.precision, k=k, window=args.window)
                generate(model, config, dataclasses.replace(spec, steps=min(steps, 8)), energy if k > 1 else None)
                synchronize(device)  # warm-up above (kernels, allocator)
                started = time.perf_counter()
                _, result = generate(model, config, spec, energy if k > 1 else None)
                synchronize(device)
                seconds = time.perf_counter() - started
                if k == 1:
                    plain_seconds[sampler] = seconds
                per_step = seconds / steps
                draw_share = draw[("float64", k)] / per_step
                rows.append({"T": steps, "sampler": sampler, "proposal": "plain" if k == 1 else f"IS k={k}",
                             "seconds": seconds, "seconds_per_sample": seconds / num,
                             "denoiser_calls": result.nfe, "energy_calls": int(result.extra.get("energy_calls", 0)),
                             "ms_per_step": 1e3 * per_step, "float64_draw_share": draw_share,
                             "overhead_vs_plain": seconds / plain_seconds[sampler]})
                print(f"T={steps} {sampler} {rows[-1]['proposal']}: {seconds:.2f}s, {1e3 * per_step:.2f} ms/step, "
                      f"float64 draw {draw_share:.1%} of a step", flush=True)
    table = markdown_table(rows, ["T", "sampler", "proposal", "seconds", "seconds_per_sample", "denoiser_calls",
                                  "energy_calls", "ms_per_step", "float64_draw_share", "overhead_vs_plain"],
                           {"seconds": ".2f", "seconds_per_sample": ".4f", "ms_per_step": ".2f",
                            "float64_draw_share": ".1%", "overhead_vs_plain": ".2f"})
    draws = ", ".join(f"{dtype} x{n}: {1e3 * value:.3f} ms" for (dtype, n), value in draw.items())
    text = (f"{num} samples x L = {length}, {args.precision}, importance sampling: AR energy (coar), window "
            f"{args.window}; device {environment(device)['device_name']}; denoiser "
            f"{args.run or 'random-init char-small'}, energy {args.energy_run or 'random-init AR, same size'}.\n"
            f"One step's categorical draw on {shape} (synchronised, mean of 20): {draws}. "
            f"float64_draw_share = float64 draw time / measured time per step (ancestral: one denoiser call "
            f"per step). Single runs: no confidence intervals; ratios within ~5% are not distinguishable.\n\n"
            f"{table}")
    write_results(Path(args.out), "sampling", {"rows": rows, "draw_seconds": {f"{d}-x{n}": v for (d, n), v in
                                                                              draw.items()},
                                               "settings": vars(args), "environment": environment(device)}, text)
    return 0
