"""The optimiser and the speed levers a training run sets when it starts: AdamW (the fused kernel on CUDA), the
learning-rate schedule, TF32 and ``torch.compile``."""

from __future__ import annotations

import math

import torch

from edlm.config import RunConfig


def learning_rate(config: RunConfig, step: int) -> float:
    """Linear warm-up over ``train.warmup_steps``, then constant or cosine down to 10% at ``train.max_steps``."""
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
