"""Sampling speed of edlm against MDLM's own sampling loop, on the same network in the same process.

    edlm bench vs-mdlm [--device cuda] [--preset owt-paper] [--num 16] [--length 1024] [--steps 1024]
                       [--prefix 128] [--modes eager,graphs] [--gumbel float64] [--repeats 3] [--out DIR]

The network: a randomly initialised ``--preset`` denoiser (default ``owt-paper``: 12 x 768, L = 1024, the GPT-2
vocabulary; which rows change at a step does not depend on the weights). Rows:

- ``mdlm loop``: MDLM's cached ancestral loop (``bench.mdlm_loop``: its SUBS with boolean-mask indexing, its Gumbel
  argmax in ``--gumbel`` precision, the whole-batch cache check with one host read per step), the reference;
- ``edlm cached (MODE)``: ``edlm sample --sampler cached`` (float64 inverse-CDF draws, the per-row cache) with the
  default loop (``eager``), ``--static-shapes`` (``static``) or ``--cuda-graphs`` (``graphs``).

Both sample the same law (MDLM's ancestral step); the cost of a run is its network calls plus its per-step work. A
timed run is the first ``--prefix`` steps of a T = ``--steps`` run (stopped after the prefix), the device
synchronised before and after; tokens per second = B L / (ms per step x T), the rate of a whole run at that
per-step cost. Every row runs once (graphs: after capturing every batch shape), then ``--repeats`` times,
interleaved. Geometric means with exponentiated 95% t-intervals; the speed-up over MDLM's loop is paired by repeat.
Target: edlm >= 3x MDLM's loop.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edlm.bench import BenchError
from edlm.bench.common import environment, markdown_table, write_results
from edlm.bench.mdlm_loop import mdlm_sample
from edlm.bench.step_cost import loop_denoiser, parse_timing_flags, target_verdict, time_rows
from edlm.config import get_preset
from edlm.diffusion.schedule import schedule_for
from edlm.flags import OneLineParser, positive_int
from edlm.models import build_model
from edlm.sampling.config import SampleConfig
from edlm.sampling.generate import build_sampler
from edlm.stats import Interval, format_interval, format_ratio, geometric_interval, paired_ratio

REFERENCE = "mdlm loop"


def build_rows(model, config, args, device) -> dict:
    """{row name: a function of ``progress`` that runs the loop}."""
    mask_id = config.model.mask_id
    template = torch.full((args.num, args.length), mask_id, dtype=torch.long, device=device)
    rows = {REFERENCE: lambda progress: mdlm_sample(
        model, args.num, args.length, mask_id, args.steps, torch.Generator(device=device).manual_seed(0),
        args.precision, args.gumbel, progress=progress)}
    for mode in args.modes:
        denoiser = loop_denoiser(model, mask_id, args.precision, mode, template)
        sample = SampleConfig(sampler="cached", steps=args.steps, k=1, static_shapes=mode == "static",
                              cuda_graphs=mode == "graphs")
        sampler = build_sampler(denoiser, schedule_for(config), mask_id, sample)
        rows[f"edlm cached ({mode})"] = (lambda progress, s=sampler: s.sample(
            template, torch.Generator(device=device).manual_seed(0), progress=progress))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench vs-mdlm")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--preset", default="owt-paper", help="model preset")
    parser.add_argument("--num", type=positive_int("--num"), default=16, help="batch B")
    parser.add_argument("--length", type=positive_int("--length"), help="L (default: the preset's seq_len)")
    parser.add_argument("--steps", type=positive_int("--steps"), default=1024, help="T of a run")
    parser.add_argument("--prefix", type=positive_int("--prefix"), help="timed steps per run (default: all T)")
    parser.add_argument("--modes", help="edlm loops, comma-separated of eager, static, graphs (default: "
                                        "eager,graphs on CUDA, eager,static on CPU)")
    parser.add_argument("--gumbel", default="float64", choices=["float64", "float32"],
                        help="precision of MDLM's Gumbel draw (float64: ReMDM's fix, edlm's precision)")
    args, device = parse_timing_flags(parser, argv)
    if args.repeats < 2:
        raise BenchError(f"--repeats {args.repeats}: need at least 2 timed runs for a confidence interval")
    config = get_preset(args.preset)
    args.length = min(args.length or config.model.seq_len, config.model.seq_len)
    torch.manual_seed(0)
    model = build_model(config.model).to(device).eval()
    rows = build_rows(model, config, args, device)
    times = time_rows(rows, args, device)
    table_rows = []
    for name, values in times.items():
        per_step = geometric_interval(values)
        tokens = args.num * args.length / (args.steps / 1e3)  # tokens/s = tokens / ms per step: the ends swap
        rate = Interval(tokens / per_step.estimate, tokens / per_step.high, tokens / per_step.low)
        row = {"loop": name, "ms_per_step": per_step.estimate, "ms_per_step_ci95": [per_step.low, per_step.high],
               "ms_repeats": values, "tokens_per_s": rate.estimate, "tokens_per_s_ci95": [rate.low, rate.high],
               "ms/step (95% CI)": format_interval(per_step, ".2f"), "tokens/s (95% CI)": format_interval(rate, ",.0f")}
        if name != REFERENCE:
            speedup = paired_ratio(times[REFERENCE], values)
            row.update(speedup_vs_mdlm=speedup.estimate, speedup_vs_mdlm_ci95=[speedup.low, speedup.high],
                       **{"vs MDLM's loop": format_ratio(speedup), "target >= 3x": target_verdict(speedup, 3.0,
                                                                                                  at_least=True)})
        table_rows.append(row)
    model_config, prefix = config.model, args.prefix or args.steps
    text = (f"Sampling, edlm vs MDLM's loop: {args.preset} shape ({model_config.n_layers} x {model_config.hidden}, "
            f"V = {model_config.vocab_size}, random init), B = {args.num}, L = {args.length}, T = {args.steps} (the "
            f"first {prefix} steps timed; tokens/s = B L / (ms per step x T)), {args.precision}, MDLM's Gumbel in "
            f"{args.gumbel}; its DiT's flash-attn replaced by PyTorch's scaled_dot_product_attention; device "
            f"{environment(device)['device_name']}, torch {torch.__version__}. Every row timed {args.repeats} "
            f"times, interleaved; geometric means with exponentiated 95% t-intervals; speed-ups paired by repeat.\n\n"
            + markdown_table(table_rows, ["loop", "ms/step (95% CI)", "tokens/s (95% CI)", "vs MDLM's loop",
                                          "target >= 3x"]))
    write_results(Path(args.out), "vs_mdlm", {"rows": table_rows, "settings": dict(vars(args)),
                                              "environment": environment(device)}, text)
    return 0
