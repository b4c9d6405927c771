"""Sampling cost: seconds per sample, denoiser and energy calls, float64 draw share, importance-sampling overhead.

    edlm bench sampling [--run RUN] [--energy-run AR_RUN] [--device cuda] [--num 64] [--length 256]
                        [--steps 256,1024] [--k 4] [--window 1.0] [--repeats 3] [--out bench/results]

For each T: the ancestral and the cached sampler, each plain (MDLM) and with importance sampling (EDLM, k
candidates scored by an AR energy in one batched call per step, window 1.0). Without ``--run`` a randomly
initialised char-small denoiser is timed, and without ``--energy-run`` a random AR model of the same size:
which rows change at a step does not depend on the weights, so call counts and time ratios hold for trained
models too (a trained model's cached sampler skips the same share of calls on average).

The float64 categorical draw (softmax in float64, cumulative sum, inverse CDF) is timed on its own, with the
device synchronised before and after, on the shapes one step draws (B, L, V + 1) for 1 and k candidates;
its share is that time over the measured (mean) seconds per ancestral step.

Intervals (95%): for each T every (sampler, proposal) setting is run ``--repeats`` times, interleaved (repeat 1 of
every setting, then repeat 2, ...) after one warm-up run each, all with the same seed (the same work each
repeat). Seconds and ms/step are geometric means with the exponentiated t-intervals of the mean log
(repeats - 1 df): an interval of a time stays positive. Ratios are paired by repeat: the
importance-sampling overhead is exp(mean_r log(IS seconds_r / plain seconds_r)) of the same sampler, and the
cached sampler's speed-up is exp(mean_r log(ancestral seconds_r / cached seconds_r)) of the same proposal, each
with the exponentiated t-interval of the mean log ratio; an interval containing 1 reads "no significant
difference". Defaults on CPU are smaller (4 x 64, T = 16, 64).

``--profile`` runs every setting once more under ``torch.profiler`` (after the timed runs, so the timings are
unaffected) and writes, per setting, the operators that took the most time (``profile-T-SAMPLER-PROPOSAL.txt``)
and, in the JSON, the host synchronisations per step (``bench.common.HostSyncCounter``: value reads, nonzero,
boolean-mask indexing; counted the same on any device): where the time goes on a GPU, where launches and
syncs, not FLOPs, bound a small model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from edlm.bench import BenchError
from edlm.bench.common import (
    HostSyncCounter,
    environment,
    interval_plot,
    markdown_table,
    synchronize,
    write_results,
)
from edlm.checkpoint import load_model, load_run_tokenizer
from edlm.config import get_preset
from edlm.device import resolve_device
from edlm.diffusion.posterior import draw_candidates
from edlm.energy.ar import AREnergy
from edlm.flags import OneLineParser, float_in, positive_int, positive_ints
from edlm.models import build_model
from edlm.sampling import SAMPLERS
from edlm.sampling.config import SampleConfig
from edlm.sampling.generate import generate
from edlm.stats import Interval, format_interval, format_ratio, geometric_interval, paired_ratio


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


def time_settings(model, config, energy, specs: dict[tuple[str, int], SampleConfig], repeats: int,
                  device: torch.device, tokenizer=None) -> tuple[dict, dict]:
    """Seconds of each setting's ``repeats`` runs, interleaved, after one short warm-up run of each.

    ``specs`` maps (sampler, k) to its SampleConfig (k = 1: plain); ``tokenizer``: the run's (None: the char
    alphabet), which decodes the samples. Returns ({setting: [seconds per repeat]}, {setting: the last run's
    SampleResult}).
    """
    for (_, k), spec in specs.items():  # warm-up (kernels, allocator)
        generate(model, config, dataclasses.replace(spec, steps=min(spec.steps, 8)), energy if k > 1 else None,
                 tokenizer=tokenizer)
    seconds, results = {setting: [] for setting in specs}, {}
    for _ in range(repeats):
        for setting, spec in specs.items():
            synchronize(device)
            started = time.perf_counter()
            _, results[setting] = generate(model, config, spec, energy if setting[1] > 1 else None,
                                           tokenizer=tokenizer)
            synchronize(device)
            seconds[setting].append(time.perf_counter() - started)
    return seconds, results


def profile_setting(model, config, energy, spec: SampleConfig, device: torch.device, path: Path,
                    tokenizer=None) -> dict:
    """One run of ``spec`` under torch.profiler (the top operators go to ``path``) and one under
    ``HostSyncCounter``; returns the file's name, operators per step and host syncs per step (by operation)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        generate(model, config, spec, energy, tokenizer=tokenizer)
        synchronize(device)
    averages = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(averages.table(sort_by=sort, row_limit=20) + "\n")
    with HostSyncCounter() as syncs:
        generate(model, config, spec, energy, tokenizer=tokenizer)
    return {"file": path.name, "ops_per_step": sum(event.count for event in averages) / spec.steps,
            "host_syncs_per_step": syncs.total / spec.steps,
            "host_syncs_by_op": {name: count / spec.steps for name, count in sorted(syncs.counts.items())}}


def table(rows: list[dict]) -> str:
    """The markdown table of the timing rows: means followed by their 95% intervals."""
    cells = []
    for row in rows:
        overhead = "reference"
        if "overhead_vs_plain" in row:
            overhead = format_ratio(Interval(row["overhead_vs_plain"], *row["overhead_vs_plain_ci95"]))
        cells.append({"T": row["T"], "sampler": row["sampler"], "proposal": row["proposal"],
                      "seconds (95% CI)": format_interval(Interval(row["seconds"], *row["seconds_ci95"]), ".3f"),
                      "s/sample": f"{row['seconds_per_sample']:.4f}", "denoiser_calls": row["denoiser_calls"],
                      "energy_calls": row["energy_calls"],
                      "ms/step (95% CI)": format_interval(Interval(row["ms_per_step"], *row["ms_per_step_ci95"]),
                                                          ".2f"),
                      "float64_draw_share": f"{row['float64_draw_share']:.1%}", "overhead vs plain": overhead})
    return markdown_table(cells, list(cells[0]) if cells else [])


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="edlm bench sampling")
    parser.add_argument("--run", help="denoiser run folder (default: random-init char-small)")
    parser.add_argument("--energy-run", help="AR run folder for the energy (default: random-init, same size)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--num", type=positive_int("--num"), help="samples (default: 64 on CUDA, 4 on CPU)")
    parser.add_argument("--length", type=positive_int("--length"),
                        help="sequence length (default: 256 on CUDA, 64 on CPU)")
    parser.add_argument("--steps", type=positive_ints("--steps"),
                        help="comma-separated T (default: 256,1024 on CUDA, 16,64 on CPU)")
    parser.add_argument("--samplers", default="ancestral,cached",
                        help=f"comma-separated samplers to time (valid: {', '.join(SAMPLERS)})")
    parser.add_argument("--k", type=int, default=4, help="importance-sampling candidates")
    parser.add_argument("--window", type=float_in("--window", 0.0, 1.0), default=1.0,
                        help="importance-sampling window (fraction of steps)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="autocast precision")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of every setting per T, interleaved, for the 95%% intervals "
                             "(at least 2)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the denoiser (SampleConfig.compile); the warm-up run pays the compile")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one run of every setting (top operators, host syncs per step)")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    return parser


def load_models(args, device: torch.device, num: int):
    """(run config, denoiser, its tokenizer or None for the char alphabet, the coAR energy): ``--run`` and
    ``--energy-run``, or random-init char-small models of the same size."""
    tokenizer = None
    if args.run:
        config, model = load_model(args.run, device=device)
        tokenizer = load_run_tokenizer(Path(args.run), config)
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
    return config, model, tokenizer, energy


def time_one_T(args, steps: int, models, device: torch.device, num: int, length: int, samplers: list[str],
               draw: dict) -> tuple[list[dict], list[dict]]:
    """Every (sampler, plain | IS) setting at ``steps``: its timing rows (printed as they come) and the cached
    vs ancestral comparisons."""
    config, model, tokenizer, energy = models
    proposal_name = {1: "plain", args.k: f"IS k={args.k}"}
    specs = {(sampler, k): SampleConfig(num=num, steps=steps, length=length, sampler=sampler, seed=0,
                                        batch_size=num, precision=args.precision, k=k, window=args.window,
                                        compile=args.compile, is_target="row")  # the paper's weights, as before
             for sampler in samplers for k in (1, args.k)}
    seconds, results = time_settings(model, config, energy, specs, args.repeats, device, tokenizer)
    profiles = {}
    for (sampler, k), spec in specs.items() if args.profile else ():
        name = f"profile-{steps}-{sampler}-{'plain' if k == 1 else f'is{k}'}.txt"
        profiles[(sampler, k)] = profile_setting(model, config, energy if k > 1 else None, spec, device,
                                                 Path(args.out) / name, tokenizer)
    rows = []
    for (sampler, k), times in seconds.items():
        mean = geometric_interval(times)
        per_step = mean.scaled(1e3 / steps)
        result = results[(sampler, k)]
        row = {"T": steps, "sampler": sampler, "proposal": proposal_name[k], "seconds_repeats": times,
               "seconds": mean.estimate, "seconds_ci95": [mean.low, mean.high],
               "seconds_per_sample": mean.estimate / num, "denoiser_calls": result.nfe,
               "energy_calls": result.energy_calls,
               "ms_per_step": per_step.estimate, "ms_per_step_ci95": [per_step.low, per_step.high],
               "float64_draw_share": draw[("float64", k)] / (mean.estimate / steps)}
        if (sampler, k) in profiles:
            row["profile"] = profiles[(sampler, k)]
        if k > 1:
            overhead = paired_ratio(times, seconds[(sampler, 1)])
            row.update(overhead_vs_plain=overhead.estimate, overhead_vs_plain_ci95=[overhead.low, overhead.high])
        rows.append(row)
        print(f"T={steps} {sampler} {row['proposal']}: {format_interval(mean, '.3f')} s, "
              f"{format_interval(per_step, '.2f')} ms/step, float64 draw {row['float64_draw_share']:.1%} "
              f"of a step" + (f", {format_ratio(overhead)} of plain" if k > 1 else ""), flush=True)
    comparisons = []
    for k in (1, args.k) if "ancestral" in samplers and "cached" in samplers else ():
        speedup = paired_ratio(seconds[("ancestral", k)], seconds[("cached", k)])
        comparisons.append({"T": steps, "proposal": proposal_name[k],
                            "comparison": "cached vs ancestral (ancestral seconds / cached seconds)",
                            "speedup": speedup.estimate, "speedup_ci95": [speedup.low, speedup.high],
                            "verdict": format_ratio(speedup)})
    return rows, comparisons


def report_text(args, num: int, length: int, shape: tuple, draw: dict, rows: list[dict], comparisons: list[dict],
                device: torch.device) -> str:
    """The markdown the benchmark writes: the setup, how the intervals were made, the tables."""
    text = (f"{num} samples x L = {length}, {args.precision}, importance sampling: AR energy (coar), window "
            f"{args.window}; device {environment(device)['device_name']}; denoiser "
            f"{args.run or 'random-init char-small'}, energy {args.energy_run or 'random-init AR, same size'}.\n"
            f"One step's categorical draw on {shape} (synchronised, mean of 20): "
            + ", ".join(f"{dtype} x{n}: {1e3 * value:.3f} ms" for (dtype, n), value in draw.items()) + ". "
            f"float64_draw_share = float64 draw time / mean measured time per step (ancestral: one denoiser call "
            f"per step).\nEvery setting ran {args.repeats} times per T, interleaved, with the same seed, after a "
            f"warm-up run; seconds and ms/step are geometric means with exponentiated 95% t-intervals of the mean log "
            f"({args.repeats - 1} df). Ratios are "
            f"paired by repeat: exp(mean log ratio) with the exponentiated 95% t-interval, \"no significant "
            f"difference\" when it contains 1.\n\n{table(rows)}")
    if comparisons:
        text += ("\n\nCached against ancestral sampler, same proposal (speed-up = ancestral seconds / cached "
                 "seconds, paired by repeat):\n\n"
                 + markdown_table(comparisons, ["T", "proposal", "verdict"]))
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 2:
        raise BenchError(f"--repeats {args.repeats}: need at least 2 timed runs for a confidence interval")
    if args.k < 2:
        raise BenchError(f"--k {args.k}: importance sampling needs at least 2 candidates")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    num = args.num or (64 if cuda else 4)
    steps_list = args.steps or ([256, 1024] if cuda else [16, 64])
    samplers = [name.strip() for name in args.samplers.split(",") if name.strip()]
    models = load_models(args, device, num)
    config = models[0]
    length = min(args.length or (256 if cuda else 64), config.model.seq_len)
    shape = (num, length, config.model.vocab_size + 1)
    draw = {(dtype, n): time_draw(shape, n, device, dtype) for dtype in ("float64", "float32") for n in (1, args.k)}
    rows, comparisons = [], []
    for steps in steps_list:
        more_rows, more_comparisons = time_one_T(args, steps, models, device, num, length, samplers, draw)
        rows += more_rows
        comparisons += more_comparisons
    text = report_text(args, num, length, shape, draw, rows, comparisons, device)
    plots = interval_plot([f"T={r['T']} {r['sampler']} {r['proposal']}" for r in rows],
                          [Interval(r["ms_per_step"], *r["ms_per_step_ci95"]) for r in rows],
                          Path(args.out) / "sampling.png", "milliseconds per step (95% CI)",
                          f"sampling {num} x {length}, {environment(device)['device_name']}")
    write_results(Path(args.out), "sampling", {"rows": rows, "cached_vs_ancestral": comparisons, "plots": plots,
                                               "draw_seconds": {f"{d}-x{n}": v for (d, n), v in draw.items()},
                                               "settings": vars(args), "environment": environment(device)}, text)
    return 0
