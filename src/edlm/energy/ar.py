"""EDLM-AR: the energy of a pretrained autoregressive model (notes, section 3.1). No training.

    full:  E(x0, x_t) = -log p_AR(x0)                      + sum_{i masked} log mu_i(x0_i | x_t)
    coar:  E(x0, x_t) = -sum_{i masked} log p_AR(x0_i | x0_<i) + sum_{i masked} log mu_i(x0_i | x_t)

Both are built from log-probabilities (one teacher-forced AR pass per candidate, no decoding), and the AR
model scores position 0 too (the start token is the [MASK] id, see ``models.ar.ar_log_probs``).
"""

from __future__ import annotations

from typing import Literal

import torch

from edlm.errors import EdlmError
from edlm.energy.base import candidate_log_mu
from edlm.device import autocast_for
from edlm.models.ar import ar_log_probs


class EnergyMismatchError(EdlmError, ValueError):
    """The energy model cannot score the denoiser's sequences (vocabulary or length differ)."""


class AREnergy:
    constant = False

    def __init__(self, model: torch.nn.Module, mask_id: int, mode: Literal["coar", "full"] = "coar",
                 chunk_rows: int = 64, precision: str = "fp32"):
        if mode not in ("coar", "full"):
            raise ValueError(f"unknown AR energy mode {mode!r} (valid: coar, full)")
        self.model, self.mask_id, self.mode = model, mask_id, mode
        self.chunk_rows, self.precision = chunk_rows, precision
        self.vocab_size = model.config.vocab_size
        self.seq_len = model.config.seq_len

    @torch.no_grad()
    def token_log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """log p_AR(x_i | x_<i) for (N, L) sequences -> (N, L) float64, in chunks of ``chunk_rows``."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, sequences.shape[0], self.chunk_rows):
            rows = sequences[start:start + self.chunk_rows].to(device)
            with autocast_for(device, self.precision):
                log_probs = ar_log_probs(self.model, rows, self.mask_id)
            out.append(log_probs.gather(-1, rows.unsqueeze(-1)).squeeze(-1).double())
        return torch.cat(out).to(sequences.device)

    def __call__(self, candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        B, k, L = candidates.shape
        ar = self.token_log_probs(candidates.reshape(B * k, L)).view(B, k, L)  # (B, k, L)
        if self.mode == "coar":
            ar = ar * (x_t == self.mask_id).unsqueeze(1)
        return -ar.sum(-1) + candidate_log_mu(candidates, x_t, log_probs, self.mask_id)  # (B, k)


def check_compatible(energy_config, denoiser_config, source: str) -> None:
    """Refuse an energy model whose vocabulary or sequence length differs from the denoiser's."""
    if energy_config.vocab_size != denoiser_config.vocab_size:
        raise EnergyMismatchError(f"{source}: energy model has vocab_size {energy_config.vocab_size}, the "
                                  f"denoiser has {denoiser_config.vocab_size}; they must share a tokenizer")
    if energy_config.seq_len < denoiser_config.seq_len:
        raise EnergyMismatchError(f"{source}: energy model seq_len {energy_config.seq_len} is shorter than the "
                                  f"denoiser's {denoiser_config.seq_len}")
