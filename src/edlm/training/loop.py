"""The training loop: one readable function shared by the denoiser, the AR model and the energy network.

Everything random in a step is a function of (seed, step) (see ``training.batches``), so ``--resume``
continues exactly and a data-parallel run follows the single-process trajectory.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from edlm.checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_run_config,
    save_checkpoint,
)
from edlm.config import RunConfig
from edlm.data import eval_chunks, load_meta, load_split
from edlm.data.splits import chars_per_token
from edlm.device import autocast_for
from edlm.diffusion.schedule import schedule_for
from edlm.errors import EdlmError
from edlm.fileio import write_bytes_atomic, write_json_atomic
from edlm.models import build_model
from edlm.models.ar import ar_loss
from edlm.training.batches import GlobalBatch, global_batch
from edlm.training.distributed import (
    DistInfo,
    all_reduce_flag,
    barrier,
    init_distributed,
)
from edlm.training.ema import EMA
from edlm.training.objectives import mdlm_loss

Objective = Callable[[torch.nn.Module, GlobalBatch], tuple[torch.Tensor, dict[str, float]]]


class TrainingError(EdlmError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume); the message says why."""


def make_objective(config: RunConfig, denoiser: torch.nn.Module | None = None) -> Objective:
    """Per-sequence loss for the configured model kind (registry by ``config.model.kind``)."""
    schedule = schedule_for(config)
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


def build_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel when ``train.fused_adamw`` and the model is on CUDA (same update rule)."""
    train = config.train
    fused = {"fused": True} if train.fused_adamw and device.type == "cuda" else {}
    return torch.optim.AdamW(model.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay,
                             **fused)


def configure_device(config: RunConfig, device: torch.device) -> None:
    """Process-wide CUDA math settings, set when a run starts (never at import): TF32 for fp32 matmuls."""
    if device.type == "cuda" and config.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def maybe_compile(model: torch.nn.Module, enabled: bool, mode: str = "default") -> torch.nn.Module:
    """``torch.compile(model, mode=mode)`` when ``enabled`` (the caller keeps ``model`` itself for state dicts: a
    compiled module's keys carry an ``_orig_mod.`` prefix). Compilation happens lazily at the first call; the
    training loop falls back to eager if that fails. ``mode``: ``train.compile_mode``."""
    if not enabled:
        return model
    return torch.compile(model, mode=None if mode == "default" else mode)


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
    tokens, val_chunks, val_chars_per_token = _load_data(config, data_dir, info)

    torch.manual_seed(train_cfg.seed)
    model = build_model(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state, strict=False)
    model.to(info.device)
    configure_device(config, info.device)
    optimizer = build_optimizer(model, config, info.device)
    ema = EMA(model, train_cfg.ema_decay)
    step, history = 0, {}
    say = (lambda message: tqdm.write(message)) if info.is_main else (lambda message: None)

    if resume:
        step, history = _restore(run_dir, config, model, optimizer, ema, info, say)
    elif list_checkpoints(run_dir):
        raise TrainingError(f"{run_dir} already holds checkpoints: pass --resume to continue, or choose a new "
                            f"--out folder")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", json.loads(config.to_json()))

    objective = make_objective(config, denoiser)
    compiled = maybe_compile(model, train_cfg.compile, train_cfg.compile_mode)
    cuda_graphs = train_cfg.compile and train_cfg.compile_mode == "reduce-overhead"
    wrapped = DistributedDataParallel(compiled) if info.distributed else compiled
    metrics_file = run_dir / "metrics.csv"
    fields = ["step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_loss", "val_bpc", "extra"]
    if info.is_main and resume and metrics_file.exists():
        _truncate_metrics(metrics_file, step)  # drop rows logged after the checkpoint (they are redone)
    elif info.is_main:
        with open(metrics_file, "w", newline="") as handle:
            csv.writer(handle).writerow(fields)

    tokens_per_step = train_cfg.batch_size * model_cfg.seq_len
    started = last_log = time.perf_counter()
    steps_here, last_log_step = 0, step
    bar = tqdm(total=train_cfg.max_steps, initial=step, disable=not (progress and info.is_main),
               desc=f"train {model_cfg.kind}", dynamic_ncols=True)
    t_range = (1.0 - train_cfg.nce_window, 1.0) if model_cfg.kind == "nce" and train_cfg.nce_window < 1 else None
    # No step waits for the host: the loss and gradient norm stay on the device and are read only where a
    # row is logged, a validation runs or a checkpoint is written. Non-finite values are caught there (the
    # first bad step is recorded on the device) and always before a save. ``on_nonfinite=skip`` must decide
    # before the optimizer step, so it reads them every step.
    health = _Health(info.device)
    stop_reason = "max_steps"
    while step < train_cfg.max_steps:
        if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
            stop_reason = "max_minutes"
            break
        if stop_after is not None and steps_here >= stop_after:
            stop_reason = "stop_after"
            break
        batch = global_batch(tokens, model_cfg.seq_len, train_cfg.batch_size, train_cfg.seed, step,
                             train_cfg.eps_t, t_range).shard(info.rank, info.world)
        batch = _to_device(batch, info.device)
        model.train()
        try:
            loss_sum, extras = _forward_backward(wrapped, objective, batch, train_cfg.grad_accum, info,
                                                 train_cfg.precision, cuda_graphs)
        except Exception as error:  # torch.compile failed on first use: note it and train eagerly
            if wrapped is model or info.distributed or steps_here:
                raise
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            say(f"note: torch.compile failed ({type(error).__name__}: {first_line}); training eagerly "
                f"(set train.compile=false to skip the attempt)")
            optimizer.zero_grad(set_to_none=True)
            wrapped, cuda_graphs = model, False
            loss_sum, extras = _forward_backward(wrapped, objective, batch, train_cfg.grad_accum, info,
                                                 train_cfg.precision)
        # gradients are already averaged over ranks here, so every rank sees the same norm
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        if train_cfg.on_nonfinite == "skip":
            if all_reduce_flag(not bool(torch.isfinite(loss_sum) & torch.isfinite(grad_norm)), info):
                optimizer.zero_grad(set_to_none=True)
                say(f"step {step}: non-finite loss or gradient, step skipped (train.on_nonfinite=skip)")
                step += 1
                continue
        else:
            health.record(step, loss_sum, grad_norm)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_here += 1
        ema.update(model, step)
        bar.update(1)
        if max_minutes is not None:
            _follow_time_limit(bar, step, steps_here, started, max_minutes, train_cfg.max_steps)

        is_log = step % train_cfg.log_every == 0 or step == train_cfg.max_steps
        is_eval = step % train_cfg.eval_every == 0 or step == train_cfg.max_steps
        is_save = step % train_cfg.ckpt_every == 0 or step == train_cfg.max_steps
        if not (is_log or is_eval or is_save):
            continue
        health.raise_if_bad(info, run_dir)
        loss_value = _mean_over_ranks(loss_sum, info)
        row = None
        if is_log:
            now = time.perf_counter()
            throughput = tokens_per_step * (step - last_log_step) / max(now - last_log, 1e-9)
            last_log, last_log_step = now, step
            bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{throughput:,.0f}")
            row = {"step": step, "loss": loss_value, "lr": learning_rate(config, step - 1),
                   "grad_norm": float(grad_norm), "tokens_per_s": throughput,
                   "elapsed_s": now - started, "extra": json.dumps(extras) if extras else ""}
        if is_eval:
            val = validate(config, model, ema, val_chunks, info, denoiser, val_chars_per_token)
            history[str(step)] = val
            row = row or {"step": step, "loss": loss_value, "elapsed_s": time.perf_counter() - started}
            row.update(val_loss=val["loss"], val_bpc=val.get("bpc", ""))
            say(f"step {step}: val loss {val['loss']:.4f}" + (f", {val['bpc']:.4f} bpc" if "bpc" in val else "")
                + "".join(f", {k} {v:.4f}" for k, v in val.items() if k not in ("loss", "bpc")))
        if row is not None and info.is_main:
            with open(metrics_file, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=fields).writerow(row)
        if is_save:
            _save(run_dir, step, model, ema, optimizer, history, config, info)
    bar.close()
    if steps_here and step % train_cfg.ckpt_every and step != train_cfg.max_steps:
        health.raise_if_bad(info, run_dir)
        _save(run_dir, step, model, ema, optimizer, history, config, info)
    barrier(info)
    return {"step": step, "stop_reason": stop_reason, "seconds": time.perf_counter() - started,
            "history": history}


def _load_data(config: RunConfig, data_dir: str | Path, info: DistInfo):
    """The train split and the fixed validation slice, checked against the config (one line per problem).

    Returns (train tokens (N,) memmap, val chunks (n, L) int64, characters per val token)."""
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
    return tokens, val_chunks, chars_per_token(data_dir, "val")  # validation in bits per character


def _restore(run_dir: Path, config: RunConfig, model, optimizer, ema: EMA, info: DistInfo, say) -> tuple[int, dict]:
    """``--resume``: load the newest checkpoint that passes verification into model, optimizer and EMA.

    Returns (step, validation history); (0, {}) when the run was killed before its first checkpoint."""
    # the newest checkpoint that passes verification (raises, naming the defect, if none does)
    checkpoint = latest_valid_checkpoint(run_dir, report=say)
    if checkpoint is None and not (run_dir / "config.json").is_file():
        raise CheckpointError(f"--resume: {run_dir} holds no run (no config.json); drop --resume to start one")
    if checkpoint is None:  # killed before its first checkpoint: start over (a requeued job passes --resume)
        say(f"--resume: no checkpoint in {run_dir / 'checkpoints'} yet; starting from step 0")
        return 0, {}
    changed = _same_model(load_run_config(run_dir), config)
    if changed:
        raise TrainingError(f"--resume: {', '.join(changed)} differ from {run_dir / 'config.json'}; "
                            f"start a new run folder instead")
    model.load_state_dict(checkpoint.model)
    if checkpoint.optimizer is not None:  # None for imported weights: AdamW starts fresh
        optimizer.load_state_dict(checkpoint.optimizer)
    ema.shadow = {k: v.to(info.device) for k, v in checkpoint.ema.items()}
    say(f"resuming from {checkpoint.path} (step {checkpoint.step})")
    return checkpoint.step, checkpoint.state.get("history", {})


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


def _mean_over_ranks(value: torch.Tensor, info: DistInfo) -> float:
    """The mean of a scalar tensor over ranks, read to the host (a synchronisation point)."""
    if info.world == 1:
        return float(value)
    import torch.distributed as dist

    tensor = value.detach().double().reshape(1)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world


def _to_device(batch: GlobalBatch, device: torch.device) -> GlobalBatch:
    """Copy a batch to ``device``; on CUDA through pinned memory without blocking the host."""
    if device.type != "cuda":
        return batch.to(device)

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.pin_memory().to(device, non_blocking=True)

    return GlobalBatch(move(batch.x0), move(batch.t), move(batch.uniforms))


def _forward_backward(module, objective: Objective, batch: GlobalBatch, grad_accum: int, info: DistInfo,
                      precision: str, cuda_graphs: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and gradients of one optimiser step over ``grad_accum`` micro-batches.

    ``cuda_graphs``: the module is compiled with CUDA graphs (``train.compile_mode=reduce-overhead``); each
    micro-step is marked as a new graph iteration, as torch.compile asks of training loops.
    Returns the step's mean loss as a 0-dim float32 tensor on the device (not read back) and the extras.
    """
    loss_sum, extras = torch.zeros((), device=info.device), {}
    for micro in range(grad_accum):
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        part = batch.shard(micro, grad_accum)
        sync = micro == grad_accum - 1 or info.world == 1
        context = module.no_sync() if not sync else nullcontext()
        with context, autocast_for(info.device, precision):
            per_sequence, extras = objective(module, part)
            loss = per_sequence.float().mean() / grad_accum
        loss.backward()
        loss_sum = loss_sum + loss.detach()
    return loss_sum, extras


class _Health:
    """The first non-finite step since the start, recorded on the device (no host synchronisation)."""

    def __init__(self, device: torch.device):
        self.step = torch.full((), -1, dtype=torch.int64, device=device)
        self.loss = torch.zeros((), device=device)
        self.norm = torch.zeros((), device=device)

    def record(self, step: int, loss: torch.Tensor, norm: torch.Tensor) -> None:
        first = ~(torch.isfinite(loss) & torch.isfinite(norm)) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.float(), self.loss)
        self.norm = torch.where(first, norm.float(), self.norm)

    def raise_if_bad(self, info: DistInfo, run_dir: Path) -> None:
        bad_step = int(self.step)
        if all_reduce_flag(bad_step >= 0, info):
            where = f"at step {bad_step}" if bad_step >= 0 else "on another rank"
            raise TrainingError(f"non-finite loss ({float(self.loss)}) or gradient norm ({float(self.norm)}) "
                                f"{where}; stopped without saving, the last good checkpoint in "
                                f"{run_dir / 'checkpoints'} is untouched (train.on_nonfinite=skip to skip "
                                f"such steps)")


def _follow_time_limit(bar, step: int, steps_here: int, started: float, max_minutes: float,
                       max_steps: int) -> None:
    """Shrink the progress bar's total to the steps ``max_minutes`` allows at the measured rate, so its ETA
    shows when training will really stop (the time limit, not ``max_steps``, is often the binding one)."""
    elapsed = time.perf_counter() - started
    if steps_here < 3 or elapsed <= 0:
        return
    remaining = max(0.0, 60 * max_minutes - elapsed)
    reachable = step + int(remaining * steps_here / elapsed)
    bar.total = max(step, min(max_steps, reachable))


def _save(run_dir, step, model, ema, optimizer, history, config, info: DistInfo) -> None:
    if info.is_main:
        save_checkpoint(run_dir, step, model.state_dict(), ema.shadow, optimizer,
                        {"history": history, "preset": config.preset}, keep=config.train.keep_checkpoints)
    barrier(info)


@torch.no_grad()
def validate(config: RunConfig, model, ema: EMA, val_chunks: torch.Tensor, info: DistInfo,
             denoiser=None, chars_per_token: float = 1.0) -> dict[str, float]:
    """Validation loss of the EMA weights on a fixed slice of the val split (same t draws every time).

    ``bpc`` is bits per character of decoded text: nats per token / ``chars_per_token`` / ln 2 (1.0 for a char
    corpus, so then it is bits per token)."""
    from edlm.likelihood.nelbo import (
        ar_nll_per_sequence,
        mdlm_nelbo_per_sequence,
        summarize,
    )

    ema_model = build_model(config.model).to(info.device)
    ema_model.load_state_dict({k: v.to(ema_model.state_dict()[k].dtype) for k, v in ema.shadow.items()})
    ema_model.eval()
    kind = config.model.kind
    if kind == "mdlm":
        per_seq = mdlm_nelbo_per_sequence(ema_model, val_chunks, schedule_for(config),
                                          config.model.mask_id, batch_size=config.train.batch_size,
                                          precision=config.train.precision)
    elif kind == "ar":
        per_seq = ar_nll_per_sequence(ema_model, val_chunks, config.model.mask_id,
                                      batch_size=config.train.batch_size, precision=config.train.precision)
    else:
        from edlm.training.nce import validate_nce

        return validate_nce(config, ema_model, val_chunks, denoiser, info)
    summary = summarize(per_seq, config.model.seq_len, chars_per_token)
    return {"loss": summary["nll_nats"], "bpc": summary["bpc"]}
