"""The training loop: one readable function shared by the denoiser, the AR model and the energy network.

Everything random in a step is a function of (seed, step) (see ``training.batches``), so ``--resume``
continues exactly and a data-parallel run follows the single-process trajectory.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from edlm.errors import EdlmError
from edlm.config import RunConfig
from edlm.data import eval_chunks, load_meta, load_split
from edlm.diffusion.schedule import make_schedule
from edlm.device import autocast_for
from edlm.models import build_model
from edlm.training.batches import GlobalBatch, global_batch
from edlm.checkpoint import (CheckpointError, latest_valid_checkpoint, list_checkpoints, load_run_config,
                             save_checkpoint)
from edlm.fileio import write_json_atomic
from edlm.training.distributed import DistInfo, all_reduce_flag, barrier, init_distributed
from edlm.training.ema import EMA
from edlm.models.ar import ar_loss
from edlm.training.objectives import mdlm_loss

Objective = Callable[[torch.nn.Module, GlobalBatch], tuple[torch.Tensor, dict[str, float]]]


class TrainingError(EdlmError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume); the message says why."""


def make_objective(config: RunConfig, denoiser: torch.nn.Module | None = None) -> Objective:
    """Per-sequence loss for the configured model kind (registry by ``config.model.kind``)."""
    schedule = make_schedule(eps=config.train.schedule_eps)
    mask_id = config.model.mask_id
    if config.model.kind == "mdlm":
        return lambda model, b: (mdlm_loss(model, b.x0, b.t, b.uniforms, schedule, mask_id), {})
    if config.model.kind == "ar":
        return lambda model, b: (ar_loss(model, b.x0, mask_id), {})
    if config.model.kind == "nce":
        from edlm.training.nce import make_nce_objective

        return make_nce_objective(config, denoiser, schedule)
    raise TrainingError(f"unknown model kind {config.model.kind!r}")


def learning_rate(config: RunConfig, step: int) -> float:
    train = config.train
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "cosine":
        progress = (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps)
        return train.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    return train.lr


def _same_model(a: RunConfig, b: RunConfig) -> list[str]:
    """Model settings and batch-defining settings that must not change on resume."""
    diffs = [f"model.{f.name}" for f in dataclasses.fields(a.model)
             if getattr(a.model, f.name) != getattr(b.model, f.name)]
    for name in ("batch_size", "seed"):
        if getattr(a.train, name) != getattr(b.train, name):
            diffs.append(f"train.{name}")
    return diffs


def train(config: RunConfig, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
          max_minutes: float | None = None, denoiser: torch.nn.Module | None = None,
          init_state: dict[str, torch.Tensor] | None = None, progress: bool = True,
          device: str | None = None, stop_after: int | None = None) -> dict:
    """Train ``config`` on ``data_dir``, writing checkpoints and metrics to ``run_dir``.

    ``denoiser``: the frozen MDLM used as the noise distribution (NCE only). ``init_state``: weights to start
    from (the NCE energy network starts from the denoiser). ``stop_after``: stop after this many steps in
    this invocation (tests use it to simulate an interruption). Returns a summary dict.
    """
    info = init_distributed(device)
    run_dir = Path(run_dir)
    train_cfg, model_cfg = config.train, config.model
    tokens = load_split(data_dir, "train")
    meta = load_meta(data_dir)
    if meta["vocab_size"] != model_cfg.vocab_size:
        raise TrainingError(f"{data_dir}: corpus has {meta['vocab_size']} symbols but model.vocab_size is "
                            f"{model_cfg.vocab_size}")
    if len(tokens) < model_cfg.seq_len:
        raise TrainingError(f"{data_dir}: train split has {len(tokens)} tokens, fewer than one sequence "
                            f"(model.seq_len={model_cfg.seq_len})")
    if train_cfg.batch_size % (info.world * train_cfg.grad_accum):
        raise TrainingError(f"train.batch_size={train_cfg.batch_size} is not divisible by "
                            f"world size {info.world} x train.grad_accum {train_cfg.grad_accum}")
    val_tokens = load_split(data_dir, "val")
    if len(val_tokens) < model_cfg.seq_len:
        raise TrainingError(f"{data_dir}: val split has {len(val_tokens)} tokens, fewer than one sequence "
                            f"(model.seq_len={model_cfg.seq_len}); use a longer corpus or a smaller model.seq_len")
    val_chunks = eval_chunks(val_tokens, model_cfg.seq_len)
    val_chunks = val_chunks[: train_cfg.eval_batches * train_cfg.batch_size]

    torch.manual_seed(train_cfg.seed)
    model = build_model(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state, strict=False)
    model.to(info.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, betas=train_cfg.betas,
                                  weight_decay=train_cfg.weight_decay)
    ema = EMA(model, train_cfg.ema_decay)
    step, history = 0, {}
    say = (lambda message: tqdm.write(message)) if info.is_main else (lambda message: None)

    if resume:
        # the newest checkpoint that passes verification (raises, naming the defect, if none does)
        checkpoint = latest_valid_checkpoint(run_dir, report=say)
        if checkpoint is None and not (run_dir / "config.json").is_file():
            raise CheckpointError(f"--resume: {run_dir} holds no run (no config.json); drop --resume to start one")
        if checkpoint is None:  # killed before its first checkpoint: start over (a requeued job passes --resume)
            say(f"--resume: no checkpoint in {run_dir / 'checkpoints'} yet; starting from step 0")
        else:
            changed = _same_model(load_run_config(run_dir), config)
            if changed:
                raise TrainingError(f"--resume: {', '.join(changed)} differ from {run_dir / 'config.json'}; "
                                    f"start a new run folder instead")
            model.load_state_dict(checkpoint.model)
            if checkpoint.optimizer is not None:  # None for imported weights: AdamW starts fresh
                optimizer.load_state_dict(checkpoint.optimizer)
            ema.shadow = {k: v.to(info.device) for k, v in checkpoint.ema.items()}
            step = checkpoint.step
            history = checkpoint.state.get("history", {})
            say(f"resuming from {checkpoint.path} (step {step})")
    elif list_checkpoints(run_dir):
        raise TrainingError(f"{run_dir} already holds checkpoints: pass --resume to continue, or choose a new "
                            f"--out folder")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", json.loads(config.to_json()))

    objective = make_objective(config, denoiser)
    wrapped = DistributedDataParallel(model) if info.world > 1 else model
    metrics_file = run_dir / "metrics.csv"
    fields = ["step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_loss", "val_bpc", "extra"]
    if info.is_main and resume and metrics_file.exists():
        _truncate_metrics(metrics_file, step)  # drop rows logged after the checkpoint (they are redone)
    elif info.is_main:
        with open(metrics_file, "w", newline="") as handle:
            csv.writer(handle).writerow(fields)

    local_rows = train_cfg.batch_size // info.world
    micro_rows = local_rows // train_cfg.grad_accum
    tokens_per_step = train_cfg.batch_size * model_cfg.seq_len
    started, steps_here, last_log = time.perf_counter(), 0, time.perf_counter()
    bar = tqdm(total=train_cfg.max_steps, initial=step, disable=not (progress and info.is_main),
               desc=f"train {model_cfg.kind}", dynamic_ncols=True)
    t_range = (1.0 - train_cfg.nce_window, 1.0) if model_cfg.kind == "nce" and train_cfg.nce_window < 1 else None
    stop_reason = "max_steps"
    while step < train_cfg.max_steps:
        if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
            stop_reason = "max_minutes"
            break
        if stop_after is not None and steps_here >= stop_after:
            stop_reason = "stop_after"
            break
        batch = global_batch(tokens, model_cfg.seq_len, train_cfg.batch_size, train_cfg.seed, step,
                             train_cfg.eps_t, t_range).shard(info.rank, info.world).to(info.device)
        model.train()
        loss_sum, extras = 0.0, {}
        for micro in range(train_cfg.grad_accum):
            part = batch.shard(micro, train_cfg.grad_accum)
            sync = micro == train_cfg.grad_accum - 1 or info.world == 1
            context = wrapped.no_sync() if not sync else nullcontext()
            with context, autocast_for(info.device, train_cfg.precision):
                per_sequence, extras = objective(wrapped, part)
                loss = per_sequence.float().mean() / train_cfg.grad_accum
            loss.backward()
            loss_sum += float(loss.detach())
        if info.world > 1:
            loss_sum = _mean_over_ranks(loss_sum, info)
        # gradients are already averaged over ranks here, so every rank sees the same norm
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip))
        if all_reduce_flag(not (math.isfinite(loss_sum) and math.isfinite(grad_norm)), info):
            optimizer.zero_grad(set_to_none=True)
            if train_cfg.on_nonfinite == "stop":
                raise TrainingError(f"non-finite loss ({loss_sum}) or gradient norm ({grad_norm}) at step {step}; "
                                    f"stopped without saving, the last good checkpoint in "
                                    f"{run_dir / 'checkpoints'} is untouched (train.on_nonfinite=skip to skip "
                                    f"such steps)")
            say(f"step {step}: non-finite loss or gradient, step skipped (train.on_nonfinite=skip)")
            step += 1
            continue
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_here += 1
        ema.update(model, step)
        bar.update(1)

        row = None
        if step % train_cfg.log_every == 0 or step == train_cfg.max_steps:
            now = time.perf_counter()
            throughput = tokens_per_step * train_cfg.log_every / max(now - last_log, 1e-9)
            last_log = now
            bar.set_postfix(loss=f"{loss_sum:.4f}", tok_s=f"{throughput:,.0f}")
            row = {"step": step, "loss": loss_sum, "lr": learning_rate(config, step - 1),
                   "grad_norm": grad_norm, "tokens_per_s": throughput,
                   "elapsed_s": now - started, "extra": json.dumps(extras) if extras else ""}
        if step % train_cfg.eval_every == 0 or step == train_cfg.max_steps:
            val = validate(config, model, ema, val_chunks, info, denoiser)
            history[str(step)] = val
            row = row or {"step": step, "loss": loss_sum, "elapsed_s": time.perf_counter() - started}
            row.update(val_loss=val["loss"], val_bpc=val.get("bpc", ""))
            say(f"step {step}: val loss {val['loss']:.4f}" + (f", {val['bpc']:.4f} bpc" if "bpc" in val else "")
                + "".join(f", {k} {v:.4f}" for k, v in val.items() if k not in ("loss", "bpc")))
        if row is not None and info.is_main:
            with open(metrics_file, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=fields).writerow(row)
        if step % train_cfg.ckpt_every == 0 or step == train_cfg.max_steps:
            _save(run_dir, step, model, ema, optimizer, history, config, info)
    bar.close()
    if steps_here and step % train_cfg.ckpt_every and step != train_cfg.max_steps:
        _save(run_dir, step, model, ema, optimizer, history, config, info)
    barrier(info)
    return {"step": step, "stop_reason": stop_reason, "seconds": time.perf_counter() - started,
            "history": history}


def _truncate_metrics(metrics_file: Path, step: int) -> None:
    """Keep the header and the well-formed rows up to ``step`` (a killed run may leave later or torn rows)."""
    with open(metrics_file, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if len(row) == len(rows[0]) and row[0].isdigit()
                        and int(row[0]) <= step]
    tmp = metrics_file.with_name(f".{metrics_file.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    os.replace(tmp, metrics_file)


def _mean_over_ranks(value: float, info: DistInfo) -> float:
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world


def _save(run_dir, step, model, ema, optimizer, history, config, info: DistInfo) -> None:
    if info.is_main:
        save_checkpoint(run_dir, step, model.state_dict(), ema.shadow, optimizer,
                        {"history": history, "preset": config.preset}, keep=config.train.keep_checkpoints)
    barrier(info)


@torch.no_grad()
def validate(config: RunConfig, model, ema: EMA, val_chunks: torch.Tensor, info: DistInfo,
             denoiser=None) -> dict[str, float]:
    """Validation loss of the EMA weights on a fixed slice of the val split (same t draws every time)."""
    from edlm.evaluation.nelbo import ar_nll_per_sequence, mdlm_nelbo_per_sequence, summarize

    ema_model = build_model(config.model).to(info.device)
    ema_model.load_state_dict({k: v.to(ema_model.state_dict()[k].dtype) for k, v in ema.shadow.items()})
    ema_model.eval()
    kind = config.model.kind
    if kind == "mdlm":
        per_seq = mdlm_nelbo_per_sequence(ema_model, val_chunks, make_schedule(eps=config.train.schedule_eps),
                                          config.model.mask_id, batch_size=config.train.batch_size,
                                          precision=config.train.precision)
    elif kind == "ar":
        per_seq = ar_nll_per_sequence(ema_model, val_chunks, config.model.mask_id,
                                      batch_size=config.train.batch_size, precision=config.train.precision)
    else:
        from edlm.training.nce import validate_nce

        return validate_nce(config, ema_model, val_chunks, denoiser, info)
    summary = summarize(per_seq, config.model.seq_len)
    return {"loss": summary["nll_nats"], "bpc": summary["bpc"]}
