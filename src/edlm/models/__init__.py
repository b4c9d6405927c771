"""Model registry: build a network from its config, or load one from a run folder."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from edlm.config import ModelConfig, RunConfig
from edlm.models.transformer import Transformer


def build_model(config: ModelConfig) -> nn.Module:
    """``mdlm`` -> bidirectional denoiser, ``ar`` -> causal LM, ``nce`` -> energy network."""
    if config.kind == "mdlm":
        return Transformer(config, causal=False)
    if config.kind == "ar":
        return Transformer(config, causal=True)
    if config.kind == "nce":
        from edlm.models.energy_net import EnergyNetwork

        return EnergyNetwork(config)
    raise ValueError(f"unknown model kind {config.kind!r}")


def load_model(run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
               ) -> tuple[RunConfig, nn.Module]:
    """Load a trained model (EMA weights by default) from the newest valid checkpoint of ``run_dir``."""
    from edlm.training.checkpoint import CheckpointError, latest_valid_checkpoint, load_run_config

    config = load_run_config(Path(run_dir))
    checkpoint = latest_valid_checkpoint(Path(run_dir), with_optimizer=False)
    if checkpoint is None:
        raise CheckpointError(f"{run_dir}: no valid checkpoint in {Path(run_dir) / 'checkpoints'}")
    model = build_model(config.model)
    state = checkpoint.ema if weights == "ema" else checkpoint.model
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint.path}: weights do not match config.json "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return config, model.to(device).eval()
