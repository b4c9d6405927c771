"""The energy protocol shared by every energy (docs/method.md §3; STYLE habit 4).

An energy scores k candidate clean sequences per row: low energy = more likely under
p(x0 | x_t) ∝ mu_theta(x0 | x_t) exp(-E(x0, x_t)).

Devices: an energy moves the candidates to its own model's device and returns energies on the candidates'
device, so a sampler never needs to know where the energy model lives.
"""

from __future__ import annotations

from typing import Protocol

import torch

from edlm.errors import EdlmError


class EnergyError(EdlmError, ValueError):
    """An energy cannot be built or cannot score the denoiser's sequences; the message names ``--energy``."""


class Energy(Protocol):
    """Scores candidates; every energy declares its abilities (the samplers and likelihood code read them, never
    guess from the type or a mode string)."""

    #: E does not depend on the candidate (the zero energy): resampling is then uniform over i.i.d. candidates,
    #: which is exactly one draw from mu, so the importance sampler skips it.
    constant: bool
    #: sum_{x0_M} mu(x0 | x_t) exp(-E(x0, x_t)) = 1 exactly, so log Z = 0 needs no estimate (zero, coAR).
    self_normalised: bool
    #: E reads the time (none of edlm's does): an x0 drawn at an earlier time may then not be reused.
    time_dependent: bool
    #: The energy knows the exact marginals of its target (a known law): ``subset_log_prob`` is available and
    #: importance sampling can weigh a reveal set by its exact marginal.
    exact_marginals: bool

    def __call__(self, candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        """candidates (B, k, L) int64, x_t (B, L) int64, denoiser SUBS log-probs (B, L, V + 1)
        -> energies (B, k) float32 or float64, on the candidates' device."""


class EnergyAbilities:
    """The abilities of an ordinary energy (none of them); energies inherit it and override what they have."""

    constant = False
    self_normalised = False
    time_dependent = False
    exact_marginals = False


class ZeroEnergy(EnergyAbilities):
    """E = 0: the importance sampler must reproduce plain MDLM exactly."""

    constant = True
    self_normalised = True
    vocab_size = None
    seq_len = None

    def __call__(self, candidates, x_t, log_probs):
        return torch.zeros(candidates.shape[:2], dtype=torch.float64, device=candidates.device)


class FunctionEnergy(EnergyAbilities):
    """A plain function ``(candidates (B, k, L), x_t (B, L), log_probs) -> (B, k)`` as an energy without special
    abilities (for experiments and tests: ``FunctionEnergy(lambda c, x, lp: ...)``)."""

    def __init__(self, function):
        self.function = function

    def __call__(self, candidates, x_t, log_probs):
        return self.function(candidates, x_t, log_probs)


def candidate_log_mu(candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor,
                     mask_id: int) -> torch.Tensor:
    """sum over masked positions of log mu_i(candidate_i | x_t); (B, k) float64.

    Gathers from the (B, L, V + 1) log-probs without copying them k times.
    """
    B, k, L = candidates.shape
    picked = log_probs.double().gather(-1, candidates.transpose(1, 2))  # (B, L, k)
    masked = (x_t == mask_id).unsqueeze(-1)  # (B, L, 1)
    return (picked * masked).sum(1)  # (B, k)


LOGIT_BUDGET = 2 ** 28  # float32 logits per chunk (1 GiB): GPT-2's 50257 x L = 1024 gives 5 rows per chunk


def rows_per_chunk(chunk_rows: int | None, seq_len: int, vocab_rows: int) -> int:
    """``chunk_rows`` if given, else as many sequences as keep one chunk's (n, L, V) logits under ``LOGIT_BUDGET``."""
    if chunk_rows is not None:
        return chunk_rows
    return max(1, LOGIT_BUDGET // max(1, seq_len * vocab_rows))
