"""Data-parallel scaling: N processes vs 1 process, same global batch, tokens/s (CPU with gloo, or GPUs with NCCL).

    edlm bench scaling --data DATA [--preset char-small] [--steps 60] [--nproc 2] [--out bench/results]
                       [--device cpu|cuda] [--no-threads-baseline] [overrides ...]

Each configuration is a real ``edlm train --nproc N`` run (edlm starts the N workers as torchrun --standalone would),
checkpoints and validation pushed to the end. On CPU (the default) every run is fp32 with gloo; with
``--device cuda`` each process drives one GPU (``cuda:LOCAL_RANK``, NCCL) in the preset's precision, and the
machine needs at least ``--nproc`` GPUs. Throughput is read from the run's metrics.csv between the
first logged step (warm-up, process start and model build excluded) and the last one (final validation and
checkpoint excluded): tokens/s = (steps between them) x global batch x L / (seconds between them).

Runs, all with the same global batch:
  1 process  x 1 thread    the baseline (on GPUs: 1 process on 1 GPU)
  N processes x 1 thread   data parallel (N times the cores, or N GPUs)
  1 process  x N threads   CPU only: the same cores as the data-parallel run, used by intra-op threading instead
Scaling efficiency = tokens/s(N processes) / (N x tokens/s(1 process)); 1.0 is perfect.
CPU timings are noisy when other jobs share the machine: the JSON records the load average before each run.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edlm.bench import BenchError
from edlm.bench.common import environment, markdown_table, write_results
from edlm.config import apply_overrides, get_preset
from edlm.flags import OneLineParser


def throughput(run_dir: Path, tokens_per_step: int) -> tuple[float, int]:
    """(tokens/s between the first and last logged steps, number of timed steps) from metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("elapsed_s")]
    first, last = rows[0], rows[-1]
    steps = int(last["step"]) - int(first["step"])
    if steps <= 0:
        raise BenchError(f"{run_dir}: too few logged steps to time; raise --steps")
    return steps * tokens_per_step / (float(last["elapsed_s"]) - float(first["elapsed_s"])), steps


def run_training(data: Path, out: Path, preset: str, steps: int, processes: int, threads: int,
                 overrides: list[str], device: str = "cpu") -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log_every = max(1, steps // 10)
    command = [sys.executable, "-m", "edlm", "train", "--nproc", str(processes), "--data", str(data), "--preset",
               preset, "--out", str(out), "--max-steps", str(steps), "--device", device, "--no-progress",
               *(["train.precision=fp32"] if device == "cpu" else []), f"train.log_every={log_every}",
               f"train.eval_every={10 * steps}", f"train.ckpt_every={10 * steps}", "train.eval_batches=1", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="prepared corpus folder")
    parser.add_argument("--preset", default="char-small", help="named model + training settings")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--nproc", type=int, default=2, help="data-parallel processes to compare with 1")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu: gloo processes; cuda: one GPU per process (NCCL)")
    parser.add_argument("--no-threads-baseline", action="store_true", help="skip the 1 process x N threads run")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.n_layers=4 train.batch_size=32")
    args = parser.parse_args(argv)
    if args.steps < 4 or args.nproc < 2:
        parser.error("need --steps >= 4 and --nproc >= 2")
    if args.device == "cuda":
        import torch

        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available < args.nproc:
            raise BenchError(f"--device cuda --nproc {args.nproc}: this machine has {available} CUDA device(s)")
    config = apply_overrides(get_preset(args.preset), args.overrides)
    if config.train.batch_size % args.nproc:
        parser.error(f"train.batch_size={config.train.batch_size} is not divisible by --nproc {args.nproc}")
    tokens_per_step = config.train.batch_size * config.model.seq_len
    out = Path(args.out)
    scratch = out / "scaling-runs"
    shutil.rmtree(scratch, ignore_errors=True)

    threads_baseline = args.device == "cpu" and not args.no_threads_baseline
    plan = [(1, 1), (args.nproc, 1)] + ([(1, args.nproc)] if threads_baseline else [])
    rows = []
    for processes, threads in plan:
        run_dir = scratch / f"p{processes}-t{threads}"
        load = os.getloadavg()[0]
        started = time.perf_counter()
        run_training(Path(args.data), run_dir, args.preset, args.steps, processes, threads, args.overrides,
                     args.device)
        tokens_per_s, timed = throughput(run_dir, tokens_per_step)
        rows.append({"processes": processes, "threads_per_process": threads, "tokens_per_s": tokens_per_s,
                     "timed_steps": timed, "wall_s": time.perf_counter() - started, "load_avg_before": load})
        print(f"{processes} process(es) x {threads} thread(s): {tokens_per_s:,.0f} tokens/s "
              f"({timed} timed steps, load average {load:.1f} before)", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)

    base, parallel = rows[0]["tokens_per_s"], rows[1]["tokens_per_s"]
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / base
        row["efficiency"] = row["speedup"] / (row["processes"] * row["threads_per_process"])
    payload = {"preset": args.preset, "overrides": args.overrides, "global_batch": config.train.batch_size,
               "seq_len": config.model.seq_len, "steps": args.steps, "cpu_count": os.cpu_count(),
               "runs": rows, "speedup": parallel / base, "scaling_efficiency": parallel / (args.nproc * base),
               "device": args.device, "environment": environment("cuda:0" if args.device == "cuda" else "cpu"),
               "note": ("CPU, gloo, fp32" if args.device == "cpu" else f"CUDA, NCCL, {config.train.precision}, "
                        "one GPU per process") + "; efficiency = tokens/s(N procs) / (N x tokens/s(1 proc))"}
    table = markdown_table(rows, ["processes", "threads_per_process", "tokens_per_s", "speedup", "efficiency",
                                  "timed_steps", "load_avg_before"],
                           {"tokens_per_s": ",.0f", "speedup": ".2f", "efficiency": ".2f", "load_avg_before": ".1f"})
    write_results(out, "scaling", payload, f"Data-parallel scaling on {args.device}, {args.preset} (global batch "
                  f"{config.train.batch_size} x {config.model.seq_len}), {args.steps} steps per run\n\n{table}\n\n"
                  f"scaling efficiency ({args.nproc} processes): {payload['scaling_efficiency']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
