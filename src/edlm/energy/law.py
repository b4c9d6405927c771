"""EDLM with a known law as the energy (``--energy law:DIR``): the exact, smoothed log-probability of the law.

    full:  E(x0, x_t) = -log p_law,eps(x0)                        + sum_{i masked} log mu_i(x0_i | x_t)
    coar:  E(x0, x_t) = -sum_{i masked} log p_law,eps(x0_i | x0_<i) + sum_{i masked} log mu_i(x0_i | x_t)

(the AR energy of docs/method.md §3.1 with the law in place of the AR model). With ``full`` the importance
sampler's target p(x0 | x_t) ∝ mu(x0) exp(-E) is the smoothed law's own posterior of the masked positions; the
smoothing ``eps`` (law.json ``epsilon``, 1e-3 by default) keeps every weight finite. The law also gives the exact
marginal of any subset of positions (``subset_log_prob``): ``exact_marginals = True`` says so.
"""

from __future__ import annotations

import torch

from edlm.energy.ar import ARMode, EnergyMismatchError, TokenLogProbEnergy, check_mode
from edlm.energy.base import EnergyError


class LawEnergy(TokenLogProbEnergy):
    """(candidates (B, k, L), x_t (B, L), log_probs (B, L, V + 1)) -> (B, k) float64 energies of a known law."""

    exact_marginals = True

    def __init__(self, law, mask_id: int, mode: ARMode = "full", epsilon: float = 1e-3):
        check_mode(mode)
        self.law, self.mask_id, self.mode, self.epsilon = law, mask_id, mode, epsilon
        self.vocab_size = law.vocab_size
        self.seq_len = None  # a stationary law scores rows of any length

    def token_log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """log p_law,eps(x_i | x_<i) for (N, L) sequences -> (N, L) float64 on their device (computed on CPU)."""
        return self.law.token_log_probs(sequences.cpu(), self.epsilon).to(sequences.device)

    def subset_log_prob(self, x: torch.Tensor, visible: torch.Tensor, subset: torch.Tensor) -> torch.Tensor:
        """log p_law,eps(x_subset | x_visible), the rest summed over: x (N, L), visible and subset (N, L) bool
        -> (N,) float64 on x's device (``Law.subset_log_prob``)."""
        return self.law.subset_log_prob(x, visible, subset, self.epsilon).to(x.device)


def make_law_energy(path, denoiser_config, mode, device, precision, tokenizer) -> LawEnergy:
    """The ``law`` builder of ``edlm.energy.ENERGIES`` (``--energy law:DIR``): EnergyError (subject ``energy``) when
    the law cannot be read or does not share the denoiser's vocabulary and tokenizer. The law runs on the CPU."""
    from edlm.law import LawError, open_law_run

    spec = f"law:{path}"
    try:
        run = open_law_run(path)
    except LawError as error:
        raise EnergyError(f"{spec}: {error}", "energy") from None
    if run.vocab_size != denoiser_config.vocab_size:
        raise EnergyMismatchError(f"{spec}: the law has {run.vocab_size} symbols, the denoiser "
                                  f"{denoiser_config.vocab_size}; they must share a tokenizer", "energy")
    if tokenizer is not None:
        from edlm.data.tokenizers import check_same_tokenizer, get_tokenizer

        check_same_tokenizer(tokenizer.to_meta(), get_tokenizer(run.tokenizer).to_meta(), "the denoiser",
                             f"the energy {spec}")
    return LawEnergy(run.law, denoiser_config.mask_id, mode, run.epsilon)
