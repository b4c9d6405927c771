"""Learning curve of a preset on a corpus under a wall-clock budget, then the final test NELBO.

    edlm bench learning-curve --data DATA [--preset char-small] [--minutes 30] [--run RUN]
                              [--t-samples 4] [--out bench/results] [--device D] [overrides ...]

Validation BPC (EMA weights, fixed slice of val) every ``train.eval_every`` steps comes from the training
loop; the final number is the continuous-time NELBO on the whole test split with a standard error.
If ``--run`` already holds a finished run, only the evaluation and plot are redone. Training and the final
evaluation run on ``--device`` (default: CUDA when present).
"""

from __future__ import annotations

import time
from pathlib import Path

from edlm.bench.common import environment, markdown_table, pyplot, save_figure, write_results
from edlm.flags import OneLineParser, float_in, positive_int


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench learning-curve", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="data folder made by `edlm data prepare`")
    parser.add_argument("--preset", default="char-small", help="named model + training settings")
    parser.add_argument("--model", default="mdlm", choices=["mdlm", "ar"], help="what to train")
    parser.add_argument("--minutes", type=float_in("--minutes", 0.0, 1e7, low_open=True), default=30.0,
                        help="wall-clock training budget")
    parser.add_argument("--run", default="runs/learning-curve", help="run folder (continued if it exists)")
    parser.add_argument("--t-samples", type=positive_int("--t-samples"), default=4,
                        help="MDLM only: t draws per test sequence")
    parser.add_argument("--skip-train", action="store_true", help="only evaluate and plot the run in --run")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON, markdown and plot")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch_size=32")
    args = parser.parse_args(argv)
    from edlm.checkpoint import latest_valid_checkpoint, load_model
    from edlm.config import resolve_train_config
    from edlm.data import eval_chunks, load_split
    from edlm.data.splits import chars_per_token
    from edlm.device import resolve_device
    from edlm.diffusion.schedule import schedule_for
    from edlm.likelihood.nelbo import (
        ar_nll_per_sequence,
        mdlm_nelbo_per_sequence,
        summarize,
    )
    from edlm.training.loop import train

    device = resolve_device(args.device)
    run = Path(args.run)
    train_seconds = None
    if not args.skip_train:
        config = resolve_train_config(args.preset, args.model, args.overrides)
        started = time.perf_counter()
        train(config, args.data, run, resume=latest_valid_checkpoint(run) is not None, max_minutes=args.minutes,
              device=str(device))
        train_seconds = time.perf_counter() - started
    config, model = load_model(run, device=device)
    chunks = eval_chunks(load_split(args.data, "test"), config.model.seq_len)
    started = time.perf_counter()
    if config.model.kind == "mdlm":
        per_seq = mdlm_nelbo_per_sequence(model, chunks, schedule_for(config),
                                          config.model.mask_id, args.t_samples, progress=True)
    else:
        per_seq = ar_nll_per_sequence(model, chunks, config.model.mask_id, progress=True)
    test = summarize(per_seq, config.model.seq_len, chars_per_token(args.data, "test"))  # bits per character
    eval_seconds = time.perf_counter() - started
    curve = curve_from_metrics(run / "metrics.csv")
    plots = plot_curve(curve, test, Path(args.out) / f"learning-curve-{config.preset}-{config.model.kind}.png")
    table = markdown_table(curve, ["step", "elapsed_min", "val_bpc"], {"elapsed_min": ".1f", "val_bpc": ".4f"})
    text = (f"Learning curve: {config.preset} {config.model.kind}, run {run}\n\n{table}\n\n"
            f"final test {'NELBO' if config.model.kind == 'mdlm' else 'NLL'}: {test['bpc']:.4f} ± "
            f"{test['stderr_bpc']:.4f} bpc over {test['tokens']:,} tokens"
            + (f" ({args.t_samples} t draws per sequence)" if config.model.kind == "mdlm" else " (exact)"))
    write_results(Path(args.out), f"learning-curve-{config.preset}-{config.model.kind}",
                  {"curve": curve, "test": test, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                   "plots": plots, "settings": vars(args), "environment": environment()}, text)
    return 0


def curve_from_metrics(path: Path) -> list[dict]:
    import csv

    with open(path) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val_bpc")]
    # elapsed_s restarts on resume: accumulate across segments
    curve, offset, last = [], 0.0, 0.0
    for r in rows:
        elapsed = float(r["elapsed_s"])
        if elapsed < last:
            offset += last
        last = elapsed
        curve.append({"step": int(r["step"]), "elapsed_min": (offset + elapsed) / 60,
                      "val_bpc": float(r["val_bpc"])})
    return curve


def plot_curve(curve: list[dict], test: dict, path: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    fig, axis = plt.subplots(figsize=(6, 4))
    axis.plot([c["elapsed_min"] for c in curve], [c["val_bpc"] for c in curve], marker="o", label="val (EMA)")
    if curve:
        axis.errorbar([curve[-1]["elapsed_min"]], [test["bpc"]], yerr=[2 * test["stderr_bpc"]], fmt="s",
                      color="red", label=f"test {test['bpc']:.3f} bpc")
    axis.set_xlabel("wall-clock minutes")
    axis.set_ylabel("bits per character")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(plt, fig, path)
