"""Training throughput of a preset in tokens/s and as a fraction of the measured matmul peak.

    edlm bench throughput [--preset char-small] [--steps 20] [--out bench/results]

Model FLOPs per token (training = 3 x forward): 6 * N_matmul + 12 * n_layers * L * H (attention scores and
values), where N_matmul counts parameters of per-token matrix multiplies (the embedding lookup and the
per-sequence adaLN/sigma conditioning excluded).
Peaks are measured by the same script, on the same machine, in the same run (bf16 and fp32 2048^3 matmuls).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from edlm.bench.common import environment, markdown_table, matmul_peak, write_results
from edlm.config import get_preset
from edlm.diffusion.schedule import make_schedule
from edlm.device import autocast_for
from edlm.models import build_model
from edlm.training.batches import GlobalBatch
from edlm.training.objectives import mdlm_loss


def flops_per_token(model, config) -> float:
    per_sequence = ("vocab_embed", "adaLN_modulation", "sigma_map")  # lookups and per-sequence conditioning
    matmul = sum(p.numel() for name, p in model.named_parameters()
                 if p.ndim == 2 and not any(part in name for part in per_sequence))
    return 6 * matmul + 12 * config.n_layers * config.seq_len * config.hidden


def measure(config, precision: str, steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    schedule = make_schedule()
    B, L = config.train.batch_size, config.model.seq_len
    batch = GlobalBatch(torch.randint(0, 27, (B, L)), torch.rand(B), torch.rand(B, L)).to(device)

    def step():
        with autocast_for(device, precision):
            loss = mdlm_loss(model, batch.x0, batch.t, batch.uniforms, schedule, config.model.mask_id).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up
        step()
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device != "cpu":
        torch.cuda.synchronize()
    return steps * B * L / (time.perf_counter() - start), flops_per_token(model, config.model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edlm bench throughput")
    parser.add_argument("--preset", default="char-small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    config = get_preset(args.preset)
    if args.batch_size:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=args.batch_size))
    peaks = {p: matmul_peak(torch.bfloat16 if p == "bf16" else torch.float32, args.device)
             for p in ("bf16", "fp32")}
    rows = []
    for precision in ("bf16", "fp32"):
        tokens_per_s, flops = measure(config, precision, args.steps, args.device)
        achieved = tokens_per_s * flops
        rows.append({"precision": precision, "tokens_per_s": tokens_per_s, "model_tflops": achieved / 1e12,
                     "peak_tflops": peaks[precision] / 1e12, "fraction_of_peak": achieved / peaks[precision],
                     "fraction_of_bf16_peak": achieved / peaks["bf16"]})
    table = markdown_table(rows, ["precision", "tokens_per_s", "model_tflops", "peak_tflops",
                                  "fraction_of_peak", "fraction_of_bf16_peak"],
                           {"tokens_per_s": ",.0f", "fraction_of_peak": ".1%", "fraction_of_bf16_peak": ".1%",
                            "model_tflops": ".4f", "peak_tflops": ".4f"})
    header = (f"Training throughput, preset {args.preset} (batch {config.train.batch_size} x "
              f"{config.model.seq_len}), {args.steps} steps, device {args.device}, "
              f"{torch.get_num_threads()} threads\n\n")
    write_results(Path(args.out), f"throughput-{args.preset}",
                  {"preset": args.preset, "rows": rows, "environment": environment()}, header + table)
    return 0
