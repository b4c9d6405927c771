"""The training loop: one readable function shared by the denoiser, the AR model and the energy network.

Everything random in a step is a function of (seed, step) (see ``training.batches``), so ``--resume``
continues exactly and a data-parallel run follows the single-process trajectory. The pieces it calls live
beside it: ``optim`` (AdamW, learning rate, device levers), ``step`` (one step's loss and gradients, the
non-finite watch), ``objectives``, ``validation`` and ``state`` (resume, checkpoints, metrics.csv).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from edlm.checkpoint import list_checkpoints
from edlm.config import RunConfig
from edlm.fileio import write_json_atomic
from edlm.models import build_model
from edlm.parallel import DistInfo, all_reduce_flag, barrier, local_process
from edlm.training.batches import global_batch
from edlm.training.ema import EMA
from edlm.training.objectives import make_objective
from edlm.training.optim import build_optimizer, configure_device, learning_rate, maybe_compile
from edlm.training.state import append_metrics, restore, save, start_metrics
from edlm.training.step import Health, TrainingError, forward_backward, to_device
from edlm.training.validation import load_data, validate

__all__ = ["TrainingError", "train"]


def train(config: RunConfig, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
          max_minutes: float | None = None, denoiser: torch.nn.Module | None = None,
          init_state: dict[str, torch.Tensor] | None = None, progress: bool = True,
          device: str | None = None, stop_after: int | None = None, process: DistInfo | None = None) -> dict:
    """Train ``config`` on ``data_dir``, writing checkpoints and metrics to ``run_dir``.

    ``denoiser``: the frozen MDLM used as the noise distribution (NCE only). ``init_state``: weights to start
    from (the NCE energy network starts from the denoiser). ``stop_after``: stop after this many steps in
    this invocation (tests use it to simulate an interruption). ``process``: this process's place in a
    data-parallel job whose process group the caller started (``edlm.parallel.init_from_env``) and will end;
    None: this process alone, on ``device``. Returns a summary dict.
    """
    info = process or local_process(device)
    run_dir, train_cfg, model_cfg = Path(run_dir), config.train, config.model
    tokens, val_chunks, val_chars_per_token = load_data(config, data_dir, info)
    say = (lambda message: tqdm.write(message)) if info.is_main else (lambda message: None)
    model, optimizer, ema = _build(config, init_state, info)
    step, history = _start(run_dir, config, resume, model, optimizer, ema, info, say)
    objective = make_objective(config, denoiser)
    compiled = maybe_compile(model, train_cfg.compile, train_cfg.compile_mode)
    cuda_graphs = train_cfg.compile and train_cfg.compile_mode == "reduce-overhead"
    wrapped = DistributedDataParallel(compiled) if info.distributed else compiled
    bar = tqdm(total=train_cfg.max_steps, initial=step, disable=not (progress and info.is_main),
               desc=f"train {model_cfg.kind}", dynamic_ncols=True)
    log = _Log(config, run_dir, info, bar, say, step)
    t_range = (1.0 - train_cfg.nce_window, 1.0) if model_cfg.kind == "nce" and train_cfg.nce_window < 1 else None
    # No step waits for the host: the loss and gradient norm stay on the device and are read only where a
    # row is logged, a validation runs or a checkpoint is written. Non-finite values are caught there (the
    # first bad step is recorded on the device) and always before a save. ``on_nonfinite=skip`` must decide
    # before the optimizer step, so it reads them every step.
    health, steps_here, stop_reason = Health(info.device), 0, "max_steps"
    while step < train_cfg.max_steps:
        stopped = _stop_reason(log.started, max_minutes, steps_here, stop_after)
        if stopped:
            stop_reason = stopped
            break
        batch = global_batch(tokens, model_cfg.seq_len, train_cfg.batch_size, train_cfg.seed, step,
                             train_cfg.eps_t, t_range).shard(info.rank, info.world)
        batch = to_device(batch, info.device)
        model.train()
        try:
            loss_sum, extras = forward_backward(wrapped, objective, batch, train_cfg.grad_accum, info,
                                                train_cfg.precision, cuda_graphs)
        except Exception as error:  # torch.compile failed on first use: note it and train eagerly
            if wrapped is model or info.distributed or steps_here:
                raise
            _note_compile_failure(error, say)
            optimizer.zero_grad(set_to_none=True)
            wrapped, cuda_graphs = model, False
            loss_sum, extras = forward_backward(wrapped, objective, batch, train_cfg.grad_accum, info,
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
        step, steps_here = step + 1, steps_here + 1
        ema.update(model, step)
        bar.update(1)
        if max_minutes is not None:
            _follow_time_limit(bar, step, steps_here, log.started, max_minutes, train_cfg.max_steps)
        log.after_step(step, loss_sum, grad_norm, extras, health, model, ema, optimizer, history, denoiser,
                       val_chunks, val_chars_per_token)
    bar.close()
    if steps_here and step % train_cfg.ckpt_every and step != train_cfg.max_steps:
        health.raise_if_bad(info, run_dir)
        save(run_dir, step, model, ema, optimizer, history, config, info)
    barrier(info)
    return {"step": step, "stop_reason": stop_reason, "seconds": time.perf_counter() - log.started,
            "history": history}


def _stop_reason(started: float, max_minutes: float | None, steps_here: int, stop_after: int | None) -> str | None:
    """``max_minutes`` or ``stop_after`` when that limit is reached before the next step, else None."""
    if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
        return "max_minutes"
    if stop_after is not None and steps_here >= stop_after:
        return "stop_after"
    return None


def _note_compile_failure(error: Exception, say) -> None:
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    say(f"note: torch.compile failed ({type(error).__name__}: {first_line}); training eagerly "
        f"(set train.compile=false to skip the attempt)")


def _build(config: RunConfig, init_state: dict[str, torch.Tensor] | None, info: DistInfo):
    """(model on the device, AdamW, EMA) of a fresh run, seeded by ``train.seed``."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model)
    if init_state is not None:
        model.load_state_dict(init_state, strict=False)
    model.to(info.device)
    configure_device(config, info.device)
    return model, build_optimizer(model, config, info.device), EMA(model, config.train.ema_decay)


def _start(run_dir: Path, config: RunConfig, resume: bool, model, optimizer, ema: EMA, info: DistInfo,
           say) -> tuple[int, dict]:
    """Restore on ``resume`` (or refuse a folder that already holds checkpoints), write ``config.json`` and
    start ``metrics.csv``. Returns (first step, validation history)."""
    step, history = 0, {}
    if resume:
        step, history = restore(run_dir, config, model, optimizer, ema, info, say)
    elif list_checkpoints(run_dir):
        raise TrainingError(f"{run_dir} already holds checkpoints: resume it, or choose a new folder", "out")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", json.loads(config.to_json()))
        start_metrics(run_dir / "metrics.csv", step if resume else None)
    return step, history


class _Log:
    """What happens after a step at the logging, validation and checkpoint points: a metrics.csv row, the
    progress bar's figures, a validation of the EMA weights, a checkpoint (each after the non-finite check)."""

    def __init__(self, config: RunConfig, run_dir: Path, info: DistInfo, bar, say, step: int):
        self.config, self.run_dir, self.info, self.bar, self.say = config, run_dir, info, bar, say
        self.tokens_per_step = config.train.batch_size * config.model.seq_len
        self.started = self.last_time = time.perf_counter()
        self.last_step = step

    def after_step(self, step: int, loss_sum, grad_norm, extras, health: Health, model, ema: EMA, optimizer,
                   history: dict, denoiser, val_chunks, val_chars_per_token: float) -> None:
        train_cfg, info = self.config.train, self.info
        is_log = step % train_cfg.log_every == 0 or step == train_cfg.max_steps
        is_eval = step % train_cfg.eval_every == 0 or step == train_cfg.max_steps
        is_save = step % train_cfg.ckpt_every == 0 or step == train_cfg.max_steps
        if not (is_log or is_eval or is_save):
            return
        health.raise_if_bad(info, self.run_dir)
        loss_value = _mean_over_ranks(loss_sum, info)
        row = None
        if is_log:
            now = time.perf_counter()
            throughput = self.tokens_per_step * (step - self.last_step) / max(now - self.last_time, 1e-9)
            self.last_time, self.last_step = now, step
            self.bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{throughput:,.0f}")
            row = {"step": step, "loss": loss_value, "lr": learning_rate(self.config, step - 1),
                   "grad_norm": float(grad_norm), "tokens_per_s": throughput,
                   "elapsed_s": now - self.started, "extra": json.dumps(extras) if extras else ""}
        if is_eval:
            val = validate(self.config, model, ema, val_chunks, info, denoiser, val_chars_per_token)
            history[str(step)] = val
            row = row or {"step": step, "loss": loss_value, "elapsed_s": time.perf_counter() - self.started}
            row.update(val_loss=val["loss"], val_bpc=val.get("bpc", ""))
            self.say(f"step {step}: val loss {val['loss']:.4f}"
                     + (f", {val['bpc']:.4f} bpc" if "bpc" in val else "")
                     + "".join(f", {k} {v:.4f}" for k, v in val.items() if k not in ("loss", "bpc")))
        if row is not None and info.is_main:
            append_metrics(self.run_dir / "metrics.csv", row)
        if is_save:
            save(self.run_dir, step, model, ema, optimizer, history, self.config, info)


def _mean_over_ranks(value: torch.Tensor, info: DistInfo) -> float:
    """The mean of a scalar tensor over ranks, read to the host (a synchronisation point)."""
    if info.world == 1:
        return float(value)
    import torch.distributed as dist

    tensor = value.detach().double().reshape(1)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world


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
