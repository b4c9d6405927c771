"""Training throughput in tokens/s and as a fraction of the bf16 matmul peak, one row per GPU lever.

    edlm bench throughput [--presets text8-paper,char-small] [--steps 10] [--device cuda] [--no-compile]
                          [--batch-sizes 64,256] [--out bench/results]

Each row times ``--steps`` optimiser steps of the MDLM objective after warm-up (compilation excluded) with the
training loop's own pieces (``training.loop``: batch drawing and copy, forward/backward, gradient clipping,
AdamW, EMA). The levers, each switchable in ``TrainConfig`` or inherent to the loop:

- host sync: the old loop read the loss and gradient norm every step (``float(...)``), which stalls the host
  until the GPU has finished; the loop now reads them only on log/eval/save steps;
- fused: ``train.fused_adamw`` (CUDA only: on CPU the default AdamW kernel runs either way);
- foreach EMA: the EMA update as two multi-tensor kernels instead of two kernels per tensor;
- compile: ``train.compile`` (``torch.compile`` of the model; compile time is excluded from the rate);
- batch size: ``train.batch_size``.

Model FLOPs per token (training = 3 x forward): 6 * N_matmul + 12 * n_layers * L * H (attention scores and
values), where N_matmul counts parameters of per-token matrix multiplies (the embedding lookup and the
per-sequence adaLN/sigma conditioning excluded). Peaks are measured in the same run on the same device
(bf16 and fp32 matmuls of 2048^3, the size used in issue 9's baseline, and bf16 at 8192^3).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from edlm.bench.common import (
    environment,
    markdown_table,
    matmul_peak,
    synchronize,
    write_results,
)
from edlm.config import RunConfig, get_preset
from edlm.device import resolve_device
from edlm.models import build_model
from edlm.parallel import DistInfo
from edlm.training.batches import global_batch
from edlm.training.ema import EMA
from edlm.training.loop import (
    _forward_backward,
    _to_device,
    build_optimizer,
    configure_device,
    make_objective,
    maybe_compile,
)


@dataclasses.dataclass(frozen=True)
class Lever:
    """One row's settings."""

    batch_size: int
    host_sync: bool = False
    fused: bool = True
    foreach_ema: bool = True
    compile: bool = False
    precision: str = "bf16"

    @property
    def label(self) -> str:
        parts = ["sync/step" if self.host_sync else "no sync", "fused" if self.fused else "foreach AdamW",
                 "foreach EMA" if self.foreach_ema else "loop EMA", "compiled" if self.compile else "eager"]
        return ", ".join(parts)


def flops_per_token(model, config) -> float:
    per_sequence = ("vocab_embed", "adaLN_modulation", "sigma_map")  # lookups and per-sequence conditioning
    matmul = sum(p.numel() for name, p in model.named_parameters()
                 if p.ndim == 2 and not any(part in name for part in per_sequence))
    return 6 * matmul + 12 * config.n_layers * config.seq_len * config.hidden


def levers_for(batch_sizes: list[int], compile_rows: bool) -> list[Lever]:
    """Rows from the old loop to all levers on, one lever added at a time, then batch size (and fp32)."""
    first = batch_sizes[0]
    rows = [Lever(first, host_sync=True, fused=False, foreach_ema=False),
            Lever(first, fused=False, foreach_ema=False),
            Lever(first, foreach_ema=False),
            Lever(first)]
    if compile_rows:
        rows.append(Lever(first, compile=True))
    for size in batch_sizes[1:]:
        rows.append(Lever(size, compile=compile_rows))
    rows.append(Lever(first, precision="fp32"))
    return rows


def measure(config: RunConfig, lever: Lever, steps: int, device: torch.device) -> tuple[float, float]:
    """(tokens/s, model FLOPs per token) of ``steps`` training steps with ``lever``'s settings."""
    train = dataclasses.replace(config.train, batch_size=lever.batch_size, precision=lever.precision,
                                fused_adamw=lever.fused, compile=lever.compile)
    config = dataclasses.replace(config, train=train)
    if lever.compile:
        torch._dynamo.reset()  # a fresh static-shape compile for this model and batch size
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    configure_device(config, device)
    optimizer = build_optimizer(model, config, device)
    ema = EMA(model, train.ema_decay, foreach=lever.foreach_ema)
    module = maybe_compile(model, lever.compile)
    objective = make_objective(config)
    info = DistInfo(device=device)
    tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, 200_000, dtype=np.uint16)
    B, L = lever.batch_size, config.model.seq_len

    def step(index: int) -> None:
        batch = _to_device(global_batch(tokens, L, B, 0, index, train.eps_t), device)
        loss, _ = _forward_backward(module, objective, batch, 1, info, lever.precision)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        if lever.host_sync:
            float(loss), float(norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, index + 1)

    for index in range(3):  # warm-up (and compilation)
        step(index)
    synchronize(device)
    start = time.perf_counter()
    for index in range(steps):
        step(3 + index)
    synchronize(device)
    return steps * B * L / (time.perf_counter() - start), flops_per_token(model, config.model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edlm bench throughput")
    parser.add_argument("--presets", "--preset", default="text8-paper,char-small",
                        help="comma-separated presets (default: text8-paper,char-small)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per row (after warm-up)")
    parser.add_argument("--batch-sizes", "--batch-size",
                        help="comma-separated; the first is the base row (default: 64,256 on CUDA, 8 on CPU)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sizes = [int(part) for part in (args.batch_sizes or ("64,256" if cuda else "8")).split(",")]
    compile_rows = not args.no_compile and cuda  # compiling on a small CPU takes minutes
    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    configs = {name: get_preset(name) for name in presets}
    peaks = {"bf16": matmul_peak(torch.bfloat16, device), "fp32": matmul_peak(torch.float32, device)}
    big_peak = matmul_peak(torch.bfloat16, device, size=8192) if cuda else peaks["bf16"]
    rows = []
    for name in presets:
        for lever in levers_for(sizes, compile_rows):
            row = {"preset": name, "batch": lever.batch_size, "precision": lever.precision, "levers": lever.label}
            try:
                tokens_per_s, flops = measure(configs[name], lever, args.steps, device)
            except Exception as error:  # one failing lever (e.g. compile) must not lose the other rows
                row["levers"] += f" -- failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
                rows.append(row)
                continue
            achieved = tokens_per_s * flops
            row.update(tokens_per_s=tokens_per_s, model_tflops=achieved / 1e12,
                       fraction_of_bf16_peak=achieved / peaks["bf16"],
                       fraction_of_bf16_peak_8192=achieved / big_peak)
            rows.append(row)
            print(f"{name} B={lever.batch_size} {lever.precision} {lever.label}: {tokens_per_s:,.0f} tok/s, "
                  f"{achieved / 1e12:.1f} TFLOP/s, {achieved / peaks['bf16']:.1%} of the bf16 peak", flush=True)
    table = markdown_table(rows, ["preset", "batch", "precision", "levers", "tokens_per_s", "model_tflops",
                                  "fraction_of_bf16_peak", "fraction_of_bf16_peak_8192"],
                           {"tokens_per_s": ",.0f", "fraction_of_bf16_peak": ".1%",
                            "fraction_of_bf16_peak_8192": ".1%", "model_tflops": ".2f"})
    header = (f"Training throughput (MDLM objective), {args.steps} timed steps per row after 3 warm-up steps, "
              f"device {environment(device)['device_name']}, torch {torch.__version__}.\n"
              f"Measured peaks: bf16 {peaks['bf16'] / 1e12:.1f} TFLOP/s (2048^3), "
              f"{big_peak / 1e12:.1f} TFLOP/s (8192^3); fp32 {peaks['fp32'] / 1e12:.1f} TFLOP/s (2048^3, no TF32). "
              f"Single runs of {args.steps} steps: differences under ~5% between rows are within run-to-run "
              f"noise (no repeated trials, so no confidence interval).\n\n")
    write_results(Path(args.out), "throughput",
                  {"presets": presets, "rows": rows, "peaks_flops": {**peaks, "bf16_8192": big_peak},
                   "settings": vars(args), "environment": environment(device)}, header + table)
    return 0
