"""EDLM-NCE: the learned energy network as an energy (docs/method.md §3.2-3.3).

E(x0, x_t) is read directly from the network; the denoiser's log-probs are not needed (the network was
trained against mu_theta as the noise distribution, so it already models the residual p / mu).
"""

from __future__ import annotations

import torch

from edlm.device import autocast_for
from edlm.energy.base import EnergyAbilities


class NCEEnergy(EnergyAbilities):
    """Energy protocol around a trained ``EnergyNetwork``: (candidates (B, k, L), x_t (B, L), log_probs) -> (B, k).

    Candidates are scored in chunks of ``chunk_rows`` sequences under ``torch.no_grad``; ``precision`` is
    ``fp32`` or ``bf16`` (autocast). Energies come back as float64 on the candidates' device.
    """

    def __init__(self, model: torch.nn.Module, precision: str = "fp32", chunk_rows: int = 64):
        self.model, self.precision, self.chunk_rows = model, precision, chunk_rows
        self.vocab_size = model.config.vocab_size
        self.seq_len = model.config.seq_len

    @torch.no_grad()
    def __call__(self, candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        B, k, L = candidates.shape
        device = next(self.model.parameters()).device
        flat = candidates.reshape(B * k, L)  # (B k, L), row b * k + j = candidate j of row b
        conditions = x_t[:, None, :].expand(B, k, L).reshape(B * k, L)  # (B k, L); log_probs are not copied
        out = []
        for start in range(0, B * k, self.chunk_rows):
            rows = slice(start, start + self.chunk_rows)
            with autocast_for(device, self.precision):
                energies = self.model(flat[rows].to(device), conditions[rows].to(device))  # (chunk,)
            out.append(energies.double())
        return torch.cat(out).view(B, k).to(candidates.device)  # (B, k)
