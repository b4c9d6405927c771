"""Model registry: build a network from its config (loading from a run folder is ``edlm.checkpoint.load_model``)."""

from __future__ import annotations

import torch.nn as nn

from edlm.config import ModelConfig
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
