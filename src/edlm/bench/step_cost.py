"""What a sampling step costs against one forward pass of the same batch, with the default loop and the
capture-friendly one (``--static-shapes``, ``--cuda-graphs``).

    edlm bench step-cost [--device cuda] [--preset char-small] [--layers 8] [--hidden 512] [--heads 8]
                         [--num 64] [--length 256] [--steps 256] [--prefix 64] [--k 4] [--reveal-k 4,16]
                         [--fills 4] [--modes eager,graphs] [--repeats 3] [--precision bf16] [--out DIR]

Rows, each under every mode (``eager``: the default loop; ``static``: ``--static-shapes``; ``graphs``:
``--cuda-graphs``, CUDA only), on a randomly initialised denoiser of the given size (which rows change at a step
does not depend on the weights, so the costs hold for a trained model too):

- forward: one denoiser call on the whole all-[MASK] batch (B, L): the unit of the targets;
- ancestral, cached: MDLM steps without and with the per-row cache;
- cached IS k=K: importance sampling over whole rows (the paper's), window 1 (every step), energy: a
  random-init AR model of the denoiser's size (coAR);
- cached reveal k=K: importance sampling aimed at the reveal set (``--is-target reveal``, ``--fills`` shared fills).

A timed run is the first ``--prefix`` steps of a T = ``--steps`` run (that run's grid; the loop is stopped after
the prefix), the device synchronised before and after; a forward row times ``--prefix`` calls. Before timing, the
graphs mode captures every batch shape the static loop can use, and every row runs once. Rows are then timed
``--repeats`` times, interleaved (repeat 1 of every row, then repeat 2, ...). ms/step is a geometric mean with the
exponentiated 95% t-interval of the mean log (repeats - 1 df); ratios are paired by repeat (exp of the mean log
ratio, its t-interval exponentiated; "no significant difference" when it contains 1). Targets: a plain step
<= 2x one forward pass of the same mode; the cached step not significantly slower than the ancestral one. Host
reads per step come from one separate short run per row under ``bench.common.HostSyncCounter``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from edlm.bench import BenchError
from edlm.bench.common import HostSyncCounter, environment, markdown_table, synchronize, write_results
from edlm.config import get_preset
from edlm.device import resolve_device
from edlm.diffusion.schedule import schedule_for
from edlm.energy.ar import AREnergy
from edlm.flags import OneLineParser, positive_int, positive_ints
from edlm.models import build_model
from edlm.models.denoiser import make_denoiser_fn
from edlm.sampling.config import SampleConfig
from edlm.sampling.generate import build_sampler
from edlm.sampling.graphs import ShapeGraphs
from edlm.sampling.loop import bucket_size
from edlm.stats import Interval, format_interval, format_ratio, geometric_interval, paired_ratio

MODES = ("eager", "static", "graphs")


def loop_modes(text: str | None, cuda: bool) -> list[str]:
    """``--modes``: comma-separated ``MODES`` (default eager,graphs on CUDA, eager,static on a CPU); BenchError for
    an unknown mode or graphs without CUDA."""
    modes = [m.strip() for m in (text or ("eager,graphs" if cuda else "eager,static")).split(",")]
    if any(m not in MODES for m in modes) or ("graphs" in modes and not cuda):
        raise BenchError(f"--modes {','.join(modes)}: expected eager, static, graphs (graphs on CUDA only)")
    return modes


def parse_timing_flags(parser: OneLineParser, argv: list[str] | None) -> tuple[argparse.Namespace, torch.device]:
    """Add the last flags of step-cost and vs-mdlm (--repeats, --precision, --out), parse ``argv``; (args with
    ``--modes`` checked by ``loop_modes``, the device of ``--device``)."""
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of every row (at least 2)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="network autocast")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    args.modes = loop_modes(args.modes, device.type == "cuda")
    return args, device


class PrefixDone(Exception):
    """Raised by the progress callback to stop a run after its timed prefix."""


def run_prefix(run, prefix: int | None, on_step=None) -> int:
    """Call ``run(progress)`` (a sampling run that calls ``progress(index)`` after each step), stopped after
    ``prefix`` steps (None: to the end); ``on_step(index)`` is called after each step. Returns the steps run."""
    done = []

    def progress(index: int) -> None:
        done.append(index)
        if on_step is not None:
            on_step(index)
        if prefix is not None and index + 1 >= prefix:
            raise PrefixDone

    try:
        run(progress)
    except PrefixDone:
        pass
    return len(done)


def timed(device: torch.device, function) -> tuple[float, object]:
    """(seconds, result) of ``function()``, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def target_verdict(ratio: Interval, limit: float, at_least: bool = False) -> str:
    """Met / not met / undecided for a ratio's 95% interval against ``limit`` (``at_least``: the ratio must reach
    it; else stay at or below it)."""
    if (ratio.low >= limit) if at_least else (ratio.high <= limit):
        return f"met ({ratio.estimate:.2f}x, 95% CI {ratio.low:.2f}..{ratio.high:.2f})"
    if (ratio.high < limit) if at_least else (ratio.low > limit):
        short = limit / ratio.estimate if at_least else ratio.estimate / limit
        return f"not met: {ratio.estimate:.2f}x (95% CI {ratio.low:.2f}..{ratio.high:.2f}), {short:.2f}x short"
    return f"undecided: {ratio.estimate:.2f}x, the 95% CI {ratio.low:.2f}..{ratio.high:.2f} contains {limit}"


def loop_denoiser(model, mask_id: int, precision: str, mode: str, template: torch.Tensor):
    """The denoiser function of loop ``mode``; under ``graphs``, every batch shape the static loop can use for
    ``template`` (B, L) is captured here, before any timing."""
    denoiser = make_denoiser_fn(model, mask_id, precision)
    if mode == "graphs":
        denoiser = ShapeGraphs(denoiser)
        batch = template.shape[0]
        for size in sorted({bucket_size(n, batch) for n in range(1, batch + 1)}):
            denoiser(template[:size])
    return denoiser


def time_rows(rows: dict, args, device: torch.device) -> dict:
    """{key: [ms per step of each repeat]}: every row run once (warm-up: kernels, allocator, the energy's
    shapes), then its first ``--prefix`` steps timed ``--repeats`` times, interleaved."""
    for run in rows.values():
        run_prefix(run, min(4, args.prefix or args.steps))
    times = {key: [] for key in rows}
    for _ in range(args.repeats):
        for key, run in rows.items():
            seconds, steps = timed(device, lambda: run_prefix(run, args.prefix))
            times[key].append(1e3 * seconds / max(steps, 1))
    return times


def settings(k: int, reveal_k: list[int], fills: int, steps: int) -> dict[str, SampleConfig | None]:
    """Row name -> SampleConfig of its sampler (None: the forward row)."""
    base = dict(steps=steps, window=1.0, fills=fills, seed=0)
    rows = {"forward": None, "ancestral": SampleConfig(sampler="ancestral", k=1, **base),
            "cached": SampleConfig(sampler="cached", k=1, **base),
            f"cached IS k={k}": SampleConfig(k=k, is_target="row", **base)}  # the paper's whole-row weights
    for count in reveal_k:
        rows[f"cached reveal k={count}"] = SampleConfig(k=count, is_target="reveal", **base)
    return rows


def build_rows(model, config, args, device) -> dict:
    """{(row, mode): a function of ``progress`` that runs it (the forward row: --prefix calls)}."""
    mask_id = config.model.mask_id
    schedule = schedule_for(config)
    template = torch.full((args.num, args.length), mask_id, dtype=torch.long, device=device)
    torch.manual_seed(1)
    ar_model = build_model(dataclasses.replace(config.model, kind="ar")).to(device).eval()
    energy = AREnergy(ar_model, mask_id, "coar", precision=args.precision)
    rows = {}
    for mode in args.modes:
        denoiser = loop_denoiser(model, mask_id, args.precision, mode, template)
        for name, sample in settings(args.k, args.reveal_k, args.fills, args.steps).items():
            if sample is None:
                rows[(name, mode)] = (lambda progress, d=denoiser: [(d(template), progress(i))
                                                                    for i in range(args.prefix or args.steps)])
                continue
            sample = dataclasses.replace(sample, static_shapes=mode == "static", cuda_graphs=mode == "graphs")
            sampler = build_sampler(denoiser, schedule, mask_id, sample, energy if sample.k > 1 else None)
            rows[(name, mode)] = (lambda progress, s=sampler: s.sample(
                template, torch.Generator(device=device).manual_seed(0), progress=progress))
    return rows


def measure(rows: dict, args, device) -> tuple[dict, dict]:
    """({(row, mode): [ms per step of each repeat]}, {(row, mode): host reads per step})."""
    times = time_rows(rows, args, device)
    reads = {}
    for key, run in rows.items():  # reads between the ends of consecutive steps: what one step costs
        marks = []
        with HostSyncCounter() as syncs:
            run_prefix(run, min(9, args.prefix or args.steps), lambda _: marks.append(syncs.total))
        reads[key] = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else float("nan")
    return times, reads


def comparisons(times: dict, args) -> list[dict]:
    """The paired ratios behind the targets and the graphs' speed-ups."""
    out = []

    def add(label: str, numerator, denominator, verdict=None):
        ratio = paired_ratio(times[numerator], times[denominator])
        out.append({"comparison": label, "ratio": ratio.estimate, "ratio_ci95": [ratio.low, ratio.high],
                    "reads": format_ratio(ratio), "verdict": verdict(ratio) if verdict else ""})

    plain = ["ancestral", "cached"]
    for mode in args.modes:
        for name in plain:
            add(f"{name} step / forward ({mode})", (name, mode), ("forward", mode),
                lambda r: target_verdict(r, 2.0))
        add(f"cached step / ancestral step ({mode})", ("cached", mode), ("ancestral", mode),
            lambda r: "met (not significantly slower)" if r.low <= 1.0 else
            f"not met: {r.estimate:.2f}x slower (95% CI {r.low:.2f}..{r.high:.2f})")
        for name in [n for n in settings(args.k, args.reveal_k, args.fills, args.steps) if "k=" in n]:
            add(f"{name} / cached plain ({mode})", (name, mode), ("cached", mode))
    for mode in args.modes[1:]:
        for name in settings(args.k, args.reveal_k, args.fills, args.steps):
            add(f"{name}: eager / {mode} (speed-up)", (name, args.modes[0]), (name, mode))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench step-cost")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--preset", default="char-small", help="model preset")
    parser.add_argument("--layers", type=positive_int("--layers"), help="model.n_layers (default: 8 on CUDA)")
    parser.add_argument("--hidden", type=positive_int("--hidden"), help="model.hidden (default: 512 on CUDA)")
    parser.add_argument("--heads", type=positive_int("--heads"), help="model.n_heads (default: 8 on CUDA)")
    parser.add_argument("--num", type=positive_int("--num"), help="batch B (default: 64 on CUDA, 8 on CPU)")
    parser.add_argument("--length", type=positive_int("--length"), help="L (default: 256 on CUDA, 64 on CPU)")
    parser.add_argument("--steps", type=positive_int("--steps"), help="T of the run (default: 256 on CUDA, 64)")
    parser.add_argument("--prefix", type=positive_int("--prefix"), help="timed steps per run (default: all T)")
    parser.add_argument("--k", type=int, default=4, help="candidates of the whole-row IS row")
    parser.add_argument("--reveal-k", type=positive_ints("--reveal-k"), default="4,16",
                        help="candidates of the reveal-set IS rows, comma-separated")
    parser.add_argument("--fills", type=positive_int("--fills"), default=4, help="reveal-set IS fills M")
    parser.add_argument("--modes", help="comma-separated of eager, static, graphs (default: eager,graphs on "
                                        "CUDA, eager,static on CPU); the first is the reference")
    args, device = parse_timing_flags(parser, argv)
    cuda = device.type == "cuda"
    if args.repeats < 2 or args.k < 2:
        raise BenchError(f"--repeats {args.repeats} / --k {args.k}: need at least 2 of each")
    config = get_preset(args.preset)
    model_config = dataclasses.replace(config.model, n_layers=args.layers or (8 if cuda else config.model.n_layers),
                                       hidden=args.hidden or (512 if cuda else config.model.hidden),
                                       n_heads=args.heads or (8 if cuda else config.model.n_heads))
    config = dataclasses.replace(config, model=model_config)
    args.num = args.num or (64 if cuda else 8)
    args.length = min(args.length or (256 if cuda else 64), model_config.seq_len)
    args.steps = args.steps or (256 if cuda else 64)
    torch.manual_seed(0)
    model = build_model(model_config).to(device).eval()
    rows = build_rows(model, config, args, device)
    times, reads = measure(rows, args, device)
    table_rows = []
    for (name, mode), values in times.items():
        estimate = geometric_interval(values)
        table_rows.append({"row": name, "mode": mode, "ms_per_step": estimate.estimate,
                           "ms_per_step_ci95": [estimate.low, estimate.high], "ms_repeats": values,
                           "host_reads_per_step": reads[(name, mode)],
                           "ms/step (95% CI)": format_interval(estimate, ".3f"),
                           "host reads/step": f"{reads[(name, mode)]:.2f}"})
    compared = comparisons(times, args)
    prefix = args.prefix or args.steps
    text = (f"Step cost: {model_config.n_layers} x {model_config.hidden} denoiser (random init), B = {args.num}, "
            f"L = {args.length}, T = {args.steps} (the first {prefix} steps timed; forward rows: {prefix} calls), "
            f"{args.precision}; device {environment(device)['device_name']}, torch {torch.__version__}. Every row "
            f"timed {args.repeats} times, interleaved; geometric means with exponentiated 95% t-intervals; ratios "
            f"paired by repeat. IS rows: window 1, random-init AR energy of the same size (coAR); reveal rows M = "
            f"{args.fills} fills.\n\n"
            + markdown_table(table_rows, ["row", "mode", "ms/step (95% CI)", "host reads/step"])
            + "\n\nTargets and comparisons (ratio of ms per step, paired by repeat):\n\n"
            + markdown_table(compared, ["comparison", "reads", "verdict"]))
    write_results(Path(args.out), "step_cost", {"rows": table_rows, "comparisons": compared,
                                                "settings": {k: v for k, v in vars(args).items()},
                                                "environment": environment(device)}, text)
    return 0
