"""The data a run trains on and the fixed validation slice it is checked on, and that check (EMA weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from edlm.config import RunConfig
from edlm.data import eval_chunks, load_meta, load_split
from edlm.data.splits import chars_per_token
from edlm.diffusion.schedule import schedule_for
from edlm.models import build_model
from edlm.parallel import DistInfo
from edlm.training.ema import EMA
from edlm.training.step import TrainingError


def load_data(config: RunConfig, data_dir: str | Path, info: DistInfo):
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
