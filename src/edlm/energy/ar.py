"""EDLM-AR: the energy of a pretrained autoregressive model (docs/method.md §3.1). No training.

    full:  E(x0, x_t) = -log p_AR(x0)                      + sum_{i masked} log mu_i(x0_i | x_t)
    coar:  E(x0, x_t) = -sum_{i masked} log p_AR(x0_i | x0_<i) + sum_{i masked} log mu_i(x0_i | x_t)

Both are built from log-probabilities (one teacher-forced AR pass per candidate, no decoding), and the AR
model scores position 0 too (edlm's AR model starts from the [MASK] id, see ``models.ar.ar_log_probs``; a
Hugging Face model starts from its own BOS token, see ``energy.hf``).
"""

from __future__ import annotations

from typing import Literal

import torch

from edlm.device import autocast_for
from edlm.energy.base import EnergyAbilities, EnergyError, candidate_log_mu, rows_per_chunk
from edlm.models.ar import ar_log_probs

ARMode = Literal["coar", "full"]


class EnergyMismatchError(EnergyError):
    """The energy model cannot score the denoiser's sequences (vocabulary or length differ)."""


def ar_energy(token_log_probs: torch.Tensor, candidates: torch.Tensor, x_t: torch.Tensor,
              log_probs: torch.Tensor, mask_id: int, mode: ARMode) -> torch.Tensor:
    """Combine AR token log-probs with the denoiser's into the EDLM-AR energy (docs/method.md §3.1).

    token_log_probs (B, k, L) float64 = log p_AR(x0_i | x0_<i) of each candidate; candidates (B, k, L) int64;
    x_t (B, L) int64; log_probs (B, L, V + 1) the denoiser's SUBS log-probs. Returns (B, k) float64.
    """
    if mode == "coar":
        token_log_probs = token_log_probs * (x_t == mask_id).unsqueeze(1)  # (B, k, L): masked positions only
    return -token_log_probs.sum(-1) + candidate_log_mu(candidates, x_t, log_probs, mask_id)  # (B, k)


class TokenLogProbEnergy(EnergyAbilities):
    """The EDLM-AR energy of any causal model that gives token log-probs (``token_log_probs``); ``mode`` coar or
    full (module docstring). coAR is self-normalised: mu exp(-E) = prod_{i masked} p_AR(x0_i | x0_<i)."""

    mask_id: int
    mode: ARMode

    @property
    def self_normalised(self) -> bool:
        return self.mode == "coar"

    def token_log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """log p(x_i | x_<i) for (N, L) sequences -> (N, L) float64 on their device."""
        raise NotImplementedError

    def __call__(self, candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        B, k, L = candidates.shape
        token_lp = self.token_log_probs(candidates.reshape(B * k, L)).view(B, k, L)  # (B, k, L)
        return ar_energy(token_lp, candidates, x_t, log_probs, self.mask_id, self.mode)


def check_mode(mode: str) -> None:
    if mode not in ("coar", "full"):
        raise EnergyError(f"unknown AR energy mode {mode!r} (valid: coar, full)")


class AREnergy(TokenLogProbEnergy):
    """An edlm AR run (``--energy ar:RUN``) as the energy: (candidates (B, k, L), x_t (B, L), log_probs) -> (B, k).

    Candidates are scored in chunks of ``chunk_rows`` sequences (default: as many as keep a chunk's logits
    under 1 GiB) on the model's device under ``precision`` (``fp32`` or ``bf16`` autocast); energies come back
    as float64 on the candidates' device.
    """

    def __init__(self, model: torch.nn.Module, mask_id: int, mode: ARMode = "coar",
                 chunk_rows: int | None = None, precision: str = "fp32"):
        check_mode(mode)
        self.model, self.mask_id, self.mode = model, mask_id, mode
        self.chunk_rows, self.precision = chunk_rows, precision
        self.vocab_size = model.config.vocab_size
        self.seq_len = model.config.seq_len

    @torch.no_grad()
    def token_log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """log p_AR(x_i | x_<i) for (N, L) sequences -> (N, L) float64 on their device, in chunks."""
        device = next(self.model.parameters()).device
        chunk = rows_per_chunk(self.chunk_rows, sequences.shape[1], self.vocab_size + 1)
        out = []
        for start in range(0, sequences.shape[0], chunk):
            rows = sequences[start:start + chunk].to(device)  # (n, L)
            with autocast_for(device, self.precision):
                log_probs = ar_log_probs(self.model, rows, self.mask_id)  # (n, L, V + 1)
            out.append(log_probs.gather(-1, rows.unsqueeze(-1)).squeeze(-1).double())  # (n, L)
        return torch.cat(out).to(sequences.device)


def check_compatible(energy_config, denoiser_config, source: str) -> None:
    """Refuse an energy model whose vocabulary or sequence length differs from the denoiser's."""
    if energy_config.vocab_size != denoiser_config.vocab_size:
        raise EnergyMismatchError(f"{source}: energy model has vocab_size {energy_config.vocab_size}, the "
                                  f"denoiser has {denoiser_config.vocab_size}; they must share a tokenizer")
    if energy_config.seq_len < denoiser_config.seq_len:
        raise EnergyMismatchError(f"{source}: energy model seq_len {energy_config.seq_len} is shorter than the "
                                  f"denoiser's {denoiser_config.seq_len}")
