"""Training throughput in tokens/s and as a fraction of the bf16 matmul peak, one row per GPU lever.

    edlm bench throughput [--presets text8-paper,char-small] [--steps 10] [--blocks 3] [--device cuda]
                          [--no-compile] [--cuda-graphs] [--batch-sizes 64,256] [--out bench/results]

Each row times ``--blocks`` consecutive blocks of ``--steps`` optimiser steps of the MDLM objective after 3
warm-up steps (compilation excluded), the device synchronised before and after each block only (a sync per step
would undo the "no host sync" lever), with the training loop's own pieces (``training.loop``: batch drawing
and copy, forward/backward, gradient clipping, AdamW, EMA). The levers, each switchable in ``TrainConfig`` or
inherent to the loop:

- host sync: the old loop read the loss and gradient norm every step (``float(...)``), which stalls the host
  until the GPU has finished; the loop now reads them only on log/eval/save steps;
- fused: ``train.fused_adamw`` (CUDA only: on CPU the default AdamW kernel runs either way);
- foreach EMA: the EMA update as two multi-tensor kernels instead of two kernels per tensor;
- compile: ``train.compile`` (``torch.compile`` of the model; compile time is excluded from the rate);
- CUDA graphs: ``train.compile_mode=reduce-overhead`` (``--cuda-graphs`` adds the row; fewer kernel launches,
  which is what limits small models on a GPU);
- batch size: ``train.batch_size``.

Model FLOPs per token (training = 3 x forward): 6 * N_matmul + 12 * n_layers * L * H (attention scores and
values), where N_matmul counts parameters of per-token matrix multiplies (the embedding lookup and the
per-sequence adaLN/sigma conditioning excluded). Peaks are measured in the same run on the same device
(bf16 and fp32 matmuls of 2048^3, the size used in issue 9's baseline, and bf16 at 8192^3).

Intervals (95%, none with ``--blocks 1``): tokens/s is the mean of the per-block rates with a t-interval
(blocks - 1 df); TFLOP/s and the fractions of a peak scale that interval (the peak is treated as a constant).
"vs first row" is the speed-up of a row over the preset's first row (the old loop): exp(mean log rate - mean
log rate of the first row) with a Welch interval on the per-block log rates (Welch-Satterthwaite df),
exponentiated. The blocks of a row run back to back in one process, so the intervals cover block-to-block
noise, not what changes between runs (clocks, compilation, other jobs on the machine).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from edlm.bench import BenchError
from edlm.bench.common import (
    environment,
    interval_plot,
    markdown_table,
    matmul_peak,
    synchronize,
    write_results,
)
from edlm.config import RunConfig, get_preset
from edlm.device import resolve_device
from edlm.flags import OneLineParser, positive_ints
from edlm.models import build_model
from edlm.parallel import DistInfo
from edlm.stats import Interval, format_interval, format_ratio, geometric_interval, welch_ratio
from edlm.training.batches import global_batch
from edlm.training.ema import EMA
from edlm.training.objectives import make_objective
from edlm.training.optim import build_optimizer, configure_device, maybe_compile
from edlm.training.step import forward_backward, to_device


@dataclasses.dataclass(frozen=True)
class Lever:
    """One row's settings."""

    batch_size: int
    host_sync: bool = False
    fused: bool = True
    foreach_ema: bool = True
    compile: bool = False
    precision: str = "bf16"
    compile_mode: str = "default"  # "reduce-overhead": torch.compile with CUDA graphs

    @property
    def label(self) -> str:
        parts = ["sync/step" if self.host_sync else "no sync", "fused" if self.fused else "foreach AdamW",
                 "foreach EMA" if self.foreach_ema else "loop EMA",
                 ("compiled + CUDA graphs" if self.compile_mode == "reduce-overhead" else "compiled")
                 if self.compile else "eager"]
        return ", ".join(parts)


def flops_per_token(model, config) -> float:
    per_sequence = ("vocab_embed", "adaLN_modulation", "sigma_map")  # lookups and per-sequence conditioning
    matmul = sum(p.numel() for name, p in model.named_parameters()
                 if p.ndim == 2 and not any(part in name for part in per_sequence))
    return 6 * matmul + 12 * config.n_layers * config.seq_len * config.hidden


def levers_for(batch_sizes: list[int], compile_rows: bool, cuda_graphs: bool = False) -> list[Lever]:
    """Rows from the old loop to all levers on, one lever added at a time (CUDA graphs last, when asked for),
    then batch size (and fp32)."""
    first = batch_sizes[0]
    rows = [Lever(first, host_sync=True, fused=False, foreach_ema=False),
            Lever(first, fused=False, foreach_ema=False),
            Lever(first, foreach_ema=False),
            Lever(first)]
    if compile_rows:
        rows.append(Lever(first, compile=True))
        if cuda_graphs:
            rows.append(Lever(first, compile=True, compile_mode="reduce-overhead"))
    for size in batch_sizes[1:]:
        rows.append(Lever(size, compile=compile_rows))
    rows.append(Lever(first, precision="fp32"))
    return rows


def measure(config: RunConfig, lever: Lever, steps: int, device: torch.device,
            blocks: int = 1) -> tuple[list[float], float]:
    """(tokens/s of each of ``blocks`` consecutive blocks of ``steps`` training steps, model FLOPs per token)
    with ``lever``'s settings; the device is synchronised at block boundaries only."""
    train = dataclasses.replace(config.train, batch_size=lever.batch_size, precision=lever.precision,
                                fused_adamw=lever.fused, compile=lever.compile, compile_mode=lever.compile_mode)
    config = dataclasses.replace(config, train=train)
    if lever.compile:
        torch._dynamo.reset()  # a fresh static-shape compile for this model and batch size
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    configure_device(config, device)
    optimizer = build_optimizer(model, config, device)
    ema = EMA(model, train.ema_decay, foreach=lever.foreach_ema)
    module = maybe_compile(model, lever.compile, lever.compile_mode)
    objective = make_objective(config)
    info = DistInfo(device=device)
    tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, 200_000, dtype=np.uint16)
    B, L = lever.batch_size, config.model.seq_len

    def step(index: int) -> None:
        batch = to_device(global_batch(tokens, L, B, 0, index, train.eps_t), device)
        loss, _ = forward_backward(module, objective, batch, 1, info, lever.precision,
                                    lever.compile and lever.compile_mode == "reduce-overhead")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        if lever.host_sync:
            float(loss), float(norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, index + 1)

    for index in range(3):  # warm-up (and compilation)
        step(index)
    rates = []
    synchronize(device)
    for block in range(blocks):
        start = time.perf_counter()
        for index in range(steps):
            step(3 + block * steps + index)
        synchronize(device)  # also the start of the next block
        rates.append(steps * B * L / (time.perf_counter() - start))
    return rates, flops_per_token(model, config.model)


def add_intervals(rows: list[dict], flops: dict[str, float], peaks: dict[str, float]) -> None:
    """Fill each measured row's means, 95% intervals and speed-up over its preset's first row (in place).

    ``rows`` hold ``tokens_per_s_blocks`` (per-block rates); ``flops`` maps a preset to model FLOPs per token;
    ``peaks`` maps "bf16" and "bf16_8192" to FLOP/s.
    """
    first = {}
    for row in rows:
        first.setdefault(row["preset"], row)
        if "tokens_per_s_blocks" not in row:  # a failed lever
            continue
        blocks = row["tokens_per_s_blocks"]
        rate = geometric_interval(blocks) if len(blocks) > 1 else None  # one block (a warm-up run): no interval
        per_token = flops[row["preset"]]
        for key, scale in (("tokens_per_s", 1.0), ("model_tflops", per_token / 1e12),
                           ("fraction_of_bf16_peak", per_token / peaks["bf16"]),
                           ("fraction_of_bf16_peak_8192", per_token / peaks["bf16_8192"])):
            row[key] = scale * (rate.estimate if rate else blocks[0])
            row[f"{key}_ci95"] = [scale * rate.low, scale * rate.high] if rate else None
        base = first[row["preset"]]
        if row is base:
            row["vs_first_row"] = "reference"
        elif rate is None:
            row["vs_first_row"] = "no interval (one block)"
        elif "tokens_per_s_blocks" not in base:
            row["vs_first_row"] = "n/a (first row failed)"
        else:
            speedup = welch_ratio(row["tokens_per_s_blocks"], base["tokens_per_s_blocks"])
            row.update(speedup_vs_first_row=speedup.estimate, speedup_vs_first_row_ci95=[speedup.low, speedup.high],
                       vs_first_row=format_ratio(speedup))


def table_row(row: dict) -> dict:
    """A row's markdown cells: each mean followed by its 95% interval."""
    cells = {key: row[key] for key in ("preset", "batch", "precision", "levers")}
    if "tokens_per_s" in row:
        for key, label, spec in (("tokens_per_s", "tokens/s (95% CI)", ",.0f"),
                                 ("model_tflops", "model TFLOP/s", ".4g"),
                                 ("fraction_of_bf16_peak", "of bf16 peak", ".1%"),
                                 ("fraction_of_bf16_peak_8192", "of bf16 peak 8192^3", ".1%")):
            interval = row[f"{key}_ci95"]
            cells[label] = (format_interval(Interval(row[key], *interval), spec) if interval
                            else format(row[key], spec))
        cells["vs first row"] = row["vs_first_row"]
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench throughput")
    parser.add_argument("--presets", "--preset", default="text8-paper,char-small",
                        help="comma-separated presets (default: text8-paper,char-small)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per block (after warm-up)")
    parser.add_argument("--blocks", type=int, default=3,
                        help="timed blocks of --steps steps per row, for the 95%% intervals (default 3; 1 gives "
                             "no interval, e.g. for a compile warm-up)")
    parser.add_argument("--batch-sizes", "--batch-size", type=positive_ints("--batch-sizes"),
                        help="comma-separated; the first is the base row (default: 64,256 on CUDA, 8 on CPU)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="add a row compiled with CUDA graphs (train.compile_mode=reduce-overhead) after the "
                             "compiled row (CUDA only)")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    args = parser.parse_args(argv)
    if args.blocks < 1:
        raise BenchError(f"--blocks {args.blocks}: need at least 1 timed block (2 or more for an interval)")
    if args.steps < 1:
        raise BenchError(f"--steps {args.steps}: need at least 1 timed step per block")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sizes = args.batch_sizes or ([64, 256] if cuda else [8])
    compile_rows = not args.no_compile and cuda  # compiling on a small CPU takes minutes
    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    configs = {name: get_preset(name) for name in presets}
    peaks = {"bf16": matmul_peak(torch.bfloat16, device), "fp32": matmul_peak(torch.float32, device)}
    peaks["bf16_8192"] = matmul_peak(torch.bfloat16, device, size=8192) if cuda else peaks["bf16"]
    rows, flops = [], {}
    for name in presets:
        for lever in levers_for(sizes, compile_rows, args.cuda_graphs):
            row = {"preset": name, "batch": lever.batch_size, "precision": lever.precision, "levers": lever.label}
            rows.append(row)
            try:
                rates, flops[name] = measure(configs[name], lever, args.steps, device, args.blocks)
            except Exception as error:  # one failing lever (e.g. compile) must not lose the other rows
                row["levers"] += f" -- failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
                continue
            row["tokens_per_s_blocks"] = rates
            mean = geometric_interval(rates).estimate if len(rates) > 1 else rates[0]
            shown = format_interval(geometric_interval(rates), ",.0f") if len(rates) > 1 else f"{mean:,.0f}"
            print(f"{name} B={lever.batch_size} {lever.precision} {lever.label}: {shown} tok/s, "
                  f"{mean * flops[name] / peaks['bf16']:.1%} of the bf16 peak", flush=True)
    add_intervals(rows, flops, peaks)
    table = markdown_table([table_row(row) for row in rows],
                           ["preset", "batch", "precision", "levers", "tokens/s (95% CI)", "model TFLOP/s",
                            "of bf16 peak", "of bf16 peak 8192^3", "vs first row"])
    header = (f"Training throughput (MDLM objective), per row {args.blocks} blocks of {args.steps} timed steps "
              f"after 3 warm-up steps, the device synchronised at block boundaries only; "
              f"device {environment(device)['device_name']}, torch {torch.__version__}.\n"
              f"Measured peaks: bf16 {peaks['bf16'] / 1e12:.1f} TFLOP/s (2048^3), "
              f"{peaks['bf16_8192'] / 1e12:.1f} TFLOP/s (8192^3); fp32 {peaks['fp32'] / 1e12:.1f} TFLOP/s "
              f"(2048^3, no TF32), each measured once in this run and treated as a constant.\n"
              + (f"Each value is the geometric mean over blocks with the exponentiated 95% t-interval of the mean log "
                 f"rate ({args.blocks - 1} df); TFLOP/s and "
                 f"the peak fractions scale the tokens/s interval. \"vs first row\" is the speed-up over the "
                 f"preset's first row (the old loop): ratio of the geometric means with a 95% Welch interval "
                 f"on the log rates, \"no significant difference\" when it contains 1. The blocks run back to back, "
                 f"so the intervals cover block-to-block noise within this run, not run-to-run variation.\n\n"
                 if args.blocks > 1 else "One timed block per row: no intervals, so no comparison between rows.\n\n"))
    measured = [row for row in rows if "tokens_per_s" in row]
    plots = interval_plot([f"{r['preset']} B={r['batch']} {r['precision']}: {r['levers']}" for r in measured],
                          [Interval(r["fraction_of_bf16_peak"], *r["fraction_of_bf16_peak_ci95"])
                           if r["fraction_of_bf16_peak_ci95"] else None for r in measured],
                          Path(args.out) / "throughput.png", "fraction of the bf16 matmul peak (95% CI)",
                          f"training throughput, {environment(device)['device_name']}")
    write_results(Path(args.out), "throughput",
                  {"presets": presets, "rows": rows, "peaks_flops": peaks, "flops_per_token": flops,
                   "plots": plots, "settings": vars(args), "environment": environment(device)}, header + table)
    return 0
