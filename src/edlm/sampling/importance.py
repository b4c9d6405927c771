"""Importance sampling of the x0 a step consumes: EDLM's parallel importance sampling and edlm's reveal-set
variant (docs/method.md §3.3-3.4).

EDLM's target for one reverse step is p(x0 | x_t) ∝ q(x0 | x_t) exp(-E(x0, x_t)), q the factorised proposal.

``row`` (the paper): draw k whole candidates x0^(j) ~ q, keep j with probability softmax(-E(x0^(j)))_j.

``reveal``: a step keeps x0's tokens only on the positions R it reveals (``Plan.reveal``), so the target that
matters is the marginal p(x_R | x_t) = q(x_R) E_{x_F ~ q}[exp(-E(x_R, x_F))], x_F the other masked positions.
Candidates differ on R only; the other masked positions take M fills x_F^(l) ~ q shared by every candidate, and

    log w_j = log (1/M) sum_l exp(-E(x_R^(j), x_F^(l)))

is an unbiased estimate of the ratio p(x_R^(j) | x_t) / q(x_R^(j)) (up to a constant in j). E holds each fill's
own -log q(x_F^(l)) (the AR energies add log q over every masked position), which is what makes the average over
fills an unbiased estimate of the marginal over F. One batched energy call scores k x M rows. Shared fills make
the candidates' weights comparable (common random numbers), but the choice is normalised within one set of fills:
as k grows with M fixed the law of x_R tends to E_fills[normalised q(x_R) w(x_R)], not p(x_R | x_t); it becomes
exact as k and M grow together.

``reveal-cond``: each candidate gets its own M fills, drawn from the denoiser run on x_t with x_R set to the
candidate (q'(x_F | x_t, x_R^(j)): one more denoiser call on k rows per row), and

    log w_j = log (1/M) sum_l exp(-E(x_R^(j), x_F^(jl))) q(x_F^(jl)) / q'(x_F^(jl) | x_R^(j)).

Each weight is an independent unbiased estimate, so the choice is exact as k grows for any M (even 1: importance
sampling with unbiased random weights keeps its target); the fills follow the candidate, so few are wasted on
completions that do not fit it.

``reveal-exact``: the ceiling, for energies that know their exact marginals (a known law, ``energy.law``):
log w_j = log p(x_R^(j) | visible) - log q(x_R^(j)).

As k grows the row, reveal-cond and reveal-exact targets draw x_R exactly from the target's marginal; at the k one
can afford, weights that depend on the revealed tokens only have far lower variance than whole-row weights, whose
effective sample size collapses when R is a small part of the masked set.

Inside the window (proposal time t >= 1 - window) and with k > 1 and a non-constant energy the sampler is active;
otherwise the loop draws x0 plainly, so k = 1, window 0 and the zero energy reproduce MDLM bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edlm.energy.base import Energy
from edlm.sampling.proposal import FactorizedProposal

IS_TARGETS: tuple[str, ...] = ("row", "reveal", "reveal-cond", "reveal-exact")
WINDOW_TOL = 1e-12  # t >= 1 - window up to float rounding of the grid (the likelihood bounds use the same)


def resample_index(energies: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Choose j with probability softmax(-E / tau)_j (low energy preferred); a row whose energies are all +inf
    (every candidate impossible) chooses uniformly.

    Args: energies (B, k); uniforms (B,) float64. Returns (B,) int64.
    """
    scores = -energies.double() / temperature  # (B, k)
    hopeless = torch.isneginf(scores).all(-1, keepdim=True)  # (B, 1)
    weights = torch.softmax(torch.where(hopeless, 0.0, scores), dim=-1)  # (B, k)
    cdf = weights.cumsum(-1)
    index = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return index.clamp_(max=energies.shape[-1] - 1)


@dataclass(frozen=True)
class ImportanceSampler:
    """Draws x0 for a step by importance sampling under ``energy`` (see the module docstring)."""

    energy: Energy
    num_candidates: int = 2
    window: float = 0.2
    energy_temperature: float = 1.0
    target: str = "row"
    fills: int = 1  # M, for target "reveal"

    def __post_init__(self):
        if self.target not in IS_TARGETS:
            raise ValueError(f"importance target {self.target!r}: expected one of {', '.join(IS_TARGETS)}")
        if self.target == "reveal-exact" and not self.energy.exact_marginals:
            raise ValueError("importance target 'reveal-exact' needs an energy with exact marginals (a known law)")

    @property
    def aims_at_reveal_set(self) -> bool:
        return self.target != "row"

    @property
    def time_free(self) -> bool:
        """True when whether it is active does not depend on the time (window 0 or 1, or never active)."""
        return self.window in (0.0, 1.0) or self.num_candidates == 1 or self.energy.constant

    def active(self, t: float) -> bool:
        """True when a step at proposal time t (the largest row's) importance-samples its x0."""
        return (self.num_candidates > 1 and not self.energy.constant and self.window > 0
                and t >= 1.0 - self.window - WINDOW_TOL)

    def reuse_allowed(self) -> bool:
        """An active row-target draw may be reused for a row whose x_t did not change (x0 depends on x_t only);
        a time-dependent energy forbids it."""
        return not self.aims_at_reveal_set and not self.energy.time_dependent

    def draw_row(self, proposal: FactorizedProposal, log_probs: torch.Tensor, x_t: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """The paper's weighting. log_probs (B, L, V + 1), x_t (B, L) -> (x0 (B, L), energy rows scored).

        Random stream: B * k * L uniforms for the candidates, then B for the choice."""
        B, k = x_t.shape[0], self.num_candidates
        probs = proposal.q_probs(log_probs)  # (B, L, V + 1) float64, computed once for draws and energy
        candidates = proposal.candidates(log_probs, x_t, k, generator, probs)  # (B, k, L)
        energies = self.energy(candidates, x_t, proposal.log_q(log_probs, probs))  # (B, k)
        uniforms = torch.rand(B, generator=generator, dtype=torch.float64, device=x_t.device)
        chosen = resample_index(energies, uniforms, self.energy_temperature)  # (B,)
        return candidates[torch.arange(B, device=x_t.device), chosen], B * k

    def draw_reveal(self, proposal: FactorizedProposal, log_probs: torch.Tensor, x_t: torch.Tensor,
                    reveal: torch.Tensor, generator: torch.Generator, denoise=None,
                    every_row: bool = False) -> tuple[torch.Tensor, int]:
        """Weights aimed at the reveal set ``reveal`` (B, L) bool -> (x0 (B, L), energy rows scored). x0 is
        meaningful on ``reveal`` only. Only rows that reveal something are scored (one host sync for their list),
        or with ``every_row`` all of them (no host sync; the same x0 on the reveal set), except for target
        "reveal-cond", whose random stream depends on the rows scored (it keeps the list).
        ``denoise(x (N, L), rows (N,)) -> log-probs (N, L, V + 1)``: the denoiser on sequences derived from the
        given rows of x_t (target "reveal-cond" only).

        Random stream: B * k * L uniforms for the candidates, B * M * L for the shared fills (target "reveal"),
        then B for the choice, whichever rows are scored; "reveal-cond" then draws n * k * M * L for its fills."""
        B, k = x_t.shape[0], self.num_candidates
        probs = proposal.q_probs(log_probs)
        log_q = proposal.log_q(log_probs, probs)  # (B, L, V + 1)
        candidates = proposal.candidates(log_probs, x_t, k, generator, probs)  # (B, k, L)
        fills = proposal.candidates(log_probs, x_t, self.fills, generator, probs) if self.target == "reveal" \
            else None  # (B, M, L)
        uniforms = torch.rand(B, generator=generator, dtype=torch.float64, device=x_t.device)
        every_row = every_row and self.target != "reveal-cond"
        if every_row:
            rows = torch.arange(B, device=x_t.device)  # a row that reveals nothing: equal weights, its x0 unused
        else:
            rows = reveal.any(-1).nonzero().squeeze(1)  # (n,) rows with something to reveal
        chosen = torch.zeros(B, dtype=torch.long, device=x_t.device)
        if rows.numel() == 0:
            return candidates[:, 0], 0
        # every row: the tensors as they are (selecting all B rows would copy log_q (B, L, V + 1) every step)
        pick = (lambda tensor: tensor) if every_row else (lambda tensor: tensor.index_select(0, rows))
        if self.target == "reveal-cond":
            log_w = self.conditioned_log_weights(proposal, denoise, rows, pick(candidates), pick(x_t), pick(log_q),
                                                 pick(reveal), generator)
        else:
            log_w = self.reveal_log_weights(pick(candidates), None if fills is None else pick(fills), pick(x_t),
                                            pick(log_q), pick(reveal), proposal.mask_id)  # (n, k)
        chosen.index_copy_(0, rows, resample_index(-log_w, pick(uniforms), self.energy_temperature))
        scored = rows.numel() * k * (1 if self.target == "reveal-exact" else self.fills)
        return candidates[torch.arange(B, device=x_t.device), chosen], scored

    def conditioned_log_weights(self, proposal: FactorizedProposal, denoise, rows: torch.Tensor,
                                candidates: torch.Tensor, x_t: torch.Tensor, log_q: torch.Tensor,
                                reveal: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """log w_j with fills drawn from the denoiser conditioned on each candidate (target "reveal-cond"):
        candidates (n, k, L), x_t (n, L), log_q (n, L, V + 1), reveal (n, L), rows (n,) their rows in the batch
        -> (n, k) float64."""
        n, k, L = candidates.shape
        M = self.fills
        conditioned = torch.where(reveal[:, None, :], candidates, x_t[:, None, :]).reshape(n * k, L)  # x_R := c_j
        cond_log_probs = denoise(conditioned, rows.repeat_interleave(k))  # (n k, L, V + 1)
        cond_probs = proposal.q_probs(cond_log_probs)
        fills = proposal.candidates(cond_log_probs, conditioned, M, generator, cond_probs)  # (n k, M, L)
        energies = self.energy(fills.reshape(n, k * M, L), x_t, log_q).double().view(n, k, M)
        other = ((x_t == proposal.mask_id) & ~reveal)[:, None, :].expand(n, k, L).reshape(n * k, 1, L)
        flat = fills.transpose(1, 2)  # (n k, L, M)
        log_base = log_q.double().repeat_interleave(k, 0).gather(-1, flat).transpose(1, 2)  # (n k, M, L)
        log_cond = proposal.log_q(cond_log_probs, cond_probs).double().gather(-1, flat).transpose(1, 2)
        correction = ((log_base - log_cond) * other).sum(-1).view(n, k, M)  # log q(x_F) - log q'(x_F | x_R^(j))
        return torch.logsumexp(-energies + correction, dim=-1) - math.log(M)  # (n, k)

    def reveal_log_weights(self, candidates: torch.Tensor, fills: torch.Tensor | None, x_t: torch.Tensor,
                           log_q: torch.Tensor, reveal: torch.Tensor, mask_id: int) -> torch.Tensor:
        """log w_j for candidates (n, k, L) differing on ``reveal`` (n, L), fills (n, M, L) or None (exact
        marginals), x_t (n, L), log_q (n, L, V + 1) -> (n, k) float64."""
        n, k, L = candidates.shape
        if fills is None:
            visible = (x_t != mask_id)[:, None, :].expand(n, k, L).reshape(n * k, L)
            subset = reveal[:, None, :].expand(n, k, L).reshape(n * k, L)
            log_p = self.energy.subset_log_prob(candidates.reshape(n * k, L), visible, subset).view(n, k)
            picked = log_q.double().gather(-1, candidates.transpose(1, 2))  # (n, L, k)
            log_q_reveal = (picked * reveal.unsqueeze(-1)).sum(1)  # (n, k)
            return log_p - log_q_reveal
        M = fills.shape[1]
        joined = torch.where(reveal[:, None, None, :], candidates[:, :, None, :], fills[:, None, :, :])  # (n,k,M,L)
        energies = self.energy(joined.reshape(n, k * M, L), x_t, log_q).double().view(n, k, M)
        return torch.logsumexp(-energies, dim=-1) - math.log(M)  # (n, k)

