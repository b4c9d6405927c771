"""What a training run keeps in its folder between invocations: the newest valid checkpoint to resume from, the
checkpoints it saves, and ``metrics.csv`` (one row per logged step)."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from edlm.checkpoint import CheckpointError, latest_valid_checkpoint, load_run_config, save_checkpoint
from edlm.config import RunConfig
from edlm.fileio import write_bytes_atomic
from edlm.parallel import DistInfo, barrier
from edlm.training.ema import EMA
from edlm.training.step import TrainingError

METRICS_FIELDS = ["step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_loss", "val_bpc", "extra"]


def changed_settings(a: RunConfig, b: RunConfig) -> list[str]:
    """Model settings and batch-defining settings that differ (they must not change on resume)."""
    diffs = [f"model.{f.name}" for f in dataclasses.fields(a.model)
             if getattr(a.model, f.name) != getattr(b.model, f.name)]
    for name in ("batch_size", "seed"):
        if getattr(a.train, name) != getattr(b.train, name):
            diffs.append(f"train.{name}")
    return diffs


def restore(run_dir: Path, config: RunConfig, model, optimizer, ema: EMA, info: DistInfo, say) -> tuple[int, dict]:
    """``--resume``: load the newest checkpoint that passes verification into model, optimizer and EMA.

    Returns (step, validation history); (0, {}) when the run was killed before its first checkpoint."""
    # the newest checkpoint that passes verification (raises, naming the defect, if none does)
    checkpoint = latest_valid_checkpoint(run_dir, report=say)
    if checkpoint is None and not (run_dir / "config.json").is_file():
        raise CheckpointError(f": {run_dir} holds no run (no config.json); start it without resuming", "resume")
    if checkpoint is None:  # killed before its first checkpoint: start over (a requeued job passes --resume)
        say(f"--resume: no checkpoint in {run_dir / 'checkpoints'} yet; starting from step 0")
        return 0, {}
    changed = changed_settings(load_run_config(run_dir), config)
    if changed:
        raise TrainingError(f": {', '.join(changed)} differ from {run_dir / 'config.json'}; "
                            f"start a new run folder instead", "resume")
    model.load_state_dict(checkpoint.model)
    if checkpoint.optimizer is not None:  # None for imported weights: AdamW starts fresh
        optimizer.load_state_dict(checkpoint.optimizer)
    ema.shadow = {k: v.to(info.device) for k, v in checkpoint.ema.items()}
    say(f"resuming from {checkpoint.path} (step {checkpoint.step})")
    return checkpoint.step, checkpoint.state.get("history", {})


def save(run_dir: Path, step: int, model, ema: EMA, optimizer, history: dict, config: RunConfig,
         info: DistInfo) -> None:
    """Rank 0 writes checkpoint ``step`` (atomic; the newest ``train.keep_checkpoints`` kept); all ranks wait."""
    if info.is_main:
        save_checkpoint(run_dir, step, model.state_dict(), ema.shadow, optimizer,
                        {"history": history, "preset": config.preset}, keep=config.train.keep_checkpoints)
    barrier(info)


def start_metrics(metrics_file: Path, resumed_at: int | None) -> None:
    """A new ``metrics.csv`` (header only), or on resume the old one cut back to the rows up to ``resumed_at``
    (rows logged after the checkpoint are redone)."""
    if resumed_at is not None and metrics_file.exists():
        _truncate_metrics(metrics_file, resumed_at)
        return
    with open(metrics_file, "w", newline="") as handle:
        csv.writer(handle).writerow(METRICS_FIELDS)


def append_metrics(metrics_file: Path, row: dict) -> None:
    with open(metrics_file, "a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=METRICS_FIELDS).writerow(row)


def _truncate_metrics(metrics_file: Path, step: int) -> None:
    """Keep the header and the well-formed rows up to ``step`` (a killed run may leave later or torn rows)."""
    with open(metrics_file, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if len(row) == len(rows[0]) and row[0].isdigit()
                        and int(row[0]) <= step]
    text = io.StringIO()
    csv.writer(text).writerows(kept)
    write_bytes_atomic(metrics_file, text.getvalue().encode("utf-8"))
