"""Parallel importance sampling for EDLM (docs/method.md §3.3).

Inside the window (t >= 1 - window) one reverse step draws k candidates x0 ~ mu_theta(. | x_t) in float64,
scores all of them with one batched energy call, keeps candidate j with probability softmax(-E / tau)_j,
and hands it to whatever step consumes x0 (ancestral, first-hitting, confidence, ...). Outside the window it
is the plain proposal.

It wraps the base proposal rather than copying it: with k = 1 the random stream is the plain one (no
resampling uniform is drawn), so samples are bit-identical to MDLM. The energy receives the log-probs of the
distribution the candidates are actually drawn from (after temperature and top-p, ``FactorizedProposal.log_q``):
the weights exp(-E) with E = -log p_AR + log q then target p_AR whatever the temperature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edlm.energy.base import Energy
from edlm.sampling.mdlm import FactorizedProposal


def resample_index(energies: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Choose j with probability softmax(-E / tau)_j (low energy preferred).

    Args: energies (B, k); uniforms (B,) float64. Returns (B,) int64.
    """
    weights = torch.softmax(-energies.double() / temperature, dim=-1)  # (B, k)
    cdf = weights.cumsum(-1)
    index = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return index.clamp_(max=energies.shape[-1] - 1)


@dataclass
class ImportanceProposal:
    base: FactorizedProposal
    energy: Energy
    num_candidates: int = 2
    window: float = 0.2
    energy_temperature: float = 1.0
    time_dependent: bool = False  # an energy that reads t forbids reusing x0 across steps
    counters: dict[str, float] = field(default_factory=lambda: {"energy_calls": 0, "energy_rows": 0,
                                                                "is_steps": 0})

    def __post_init__(self):
        # a plain callable is a valid energy; only the zero energy declares itself constant
        self.constant_energy = bool(getattr(self.energy, "constant", False))

    def in_window(self, t: float) -> bool:
        return self.window > 0 and t >= 1.0 - self.window - 1e-12

    def reuse_allowed(self, t: float) -> bool:
        return (self.in_window(t) and self.num_candidates > 1 and not self.time_dependent
                and not self.constant_energy)

    def __call__(self, log_probs, x_t, t, generator):
        if not self.in_window(t) or self.constant_energy:
            return self.base(log_probs, x_t, t, generator)
        k = self.num_candidates
        probs = self.base.q_probs(log_probs)  # (B, L, V + 1) float64, computed once for draws and energy
        candidates = self.base.candidates(log_probs, x_t, k, generator, probs)  # (B, k, L)
        if k == 1:
            return candidates[:, 0]
        energies = self.energy(candidates, x_t, self.base.log_q(log_probs, probs))  # (B, k)
        self.counters["energy_calls"] += 1
        self.counters["energy_rows"] += candidates.shape[0] * k
        self.counters["is_steps"] += 1
        uniforms = torch.rand(x_t.shape[0], generator=generator, dtype=torch.float64, device=x_t.device)
        chosen = resample_index(energies, uniforms, self.energy_temperature)  # (B,)
        return candidates[torch.arange(x_t.shape[0], device=x_t.device), chosen]  # (B, L)

    def stats(self) -> dict[str, float]:
        return dict(self.counters)
