"""Brute-force toys shared by the tests: a known joint p* over V^L, the denoiser made of its exact conditional
marginals, exact and hand-set energies, and enumeration of sequences and mask patterns. Everything float64.
"""

from __future__ import annotations

import torch

from edlm.likelihood.exact import all_mask_patterns, all_sequences, sequence_index  # noqa: F401 (re-export)


def random_joint(vocab_size: int, length: int, seed: int = 0, sharpness: float = 1.5) -> torch.Tensor:
    """A full-support joint p* over V^L with strong dependence between positions; (V^L,) float64."""
    generator = torch.Generator().manual_seed(seed)
    logits = sharpness * torch.randn(vocab_size ** length, generator=generator, dtype=torch.float64)
    return torch.softmax(logits, 0)


def copy_joint() -> torch.Tensor:
    """Notes 3.4: L = 2, V = 2, x1 = x2 uniform. True NLL = log 2 per sequence."""
    return torch.tensor([0.5, 0.0, 0.0, 0.5], dtype=torch.float64)


def consistent(x_t: torch.Tensor, vocab_size: int, mask_id: int) -> torch.Tensor:
    """(B, V^L) bool: which sequences agree with the visible tokens of each row of x_t (B, L)."""
    sequences = all_sequences(vocab_size, x_t.shape[1]).to(x_t.device)  # (C, L)
    agree = (sequences[None] == x_t[:, None]) | (x_t[:, None] == mask_id)  # (B, C, L)
    return agree.all(-1)


def marginals_to_log_probs(marginals: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """(B, L, V) marginals -> SUBS log-probs (B, L, V + 1): mask column -inf, visible positions one-hot."""
    B, L, V = marginals.shape
    log_probs = torch.cat([marginals.log(), torch.full((B, L, 1), float("-inf"), dtype=torch.float64)], -1)
    one_hot = torch.full_like(log_probs, float("-inf")).scatter_(-1, x_t.unsqueeze(-1), 0.0)
    return torch.where((x_t != mask_id).unsqueeze(-1), one_hot, log_probs)


def conditional_denoiser(p_star: torch.Tensor, vocab_size: int, length: int):
    """log_probs_fn with mu_i(v | x_t) = p*(x_i = v | visible tokens of x_t), factorised over positions.

    If the visible tokens have probability 0 under p*, the consistent sequences are weighted uniformly.
    """
    mask_id = vocab_size
    sequences = all_sequences(vocab_size, length)  # (C, L)
    one_hot = torch.nn.functional.one_hot(sequences, vocab_size).double()  # (C, L, V)

    def log_probs_fn(x_t: torch.Tensor) -> torch.Tensor:
        agree = consistent(x_t, vocab_size, mask_id).double()  # (B, C)
        posterior = agree * p_star[None]
        empty = posterior.sum(-1, keepdim=True) == 0
        posterior = torch.where(empty, agree, posterior)
        posterior = posterior / posterior.sum(-1, keepdim=True)
        marginals = torch.einsum("bc,clv->blv", posterior, one_hot)  # (B, L, V)
        return marginals_to_log_probs(marginals, x_t, mask_id)

    return log_probs_fn


def fixed_denoiser(marginals: torch.Tensor):
    """A (wrong) denoiser that ignores the context: mu_i(v | x_t) = marginals[i, v] at masked positions."""
    length, vocab_size = marginals.shape

    def log_probs_fn(x_t: torch.Tensor) -> torch.Tensor:
        return marginals_to_log_probs(marginals[None].expand(x_t.shape[0], -1, -1), x_t, vocab_size)

    return log_probs_fn


def candidate_log_mu(candidates: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """log mu(candidate | x_t) = sum_i log mu_i(y_i | x_t) (visible positions give 0); (B, k) float64."""
    picked = log_probs.double().gather(-1, candidates.transpose(1, 2))  # (B, L, k)
    return picked.sum(1)


def exact_energy(p_star: torch.Tensor, vocab_size: int):
    """E(y, x_t) = -log p*(y) + log mu(y | x_t): then mu exp(-E) ∝ p*(y | visible), the exact posterior.

    +inf where p*(y) = 0 (such candidates are never picked)."""
    log_p = p_star.log()

    def energy(candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        index = sequence_index(candidates, vocab_size)  # (B, k)
        log_mu = candidate_log_mu(candidates, log_probs)
        return torch.where(torch.isinf(log_p[index]), torch.inf, -log_p[index] + log_mu)

    return energy


def pair_energy(strength: float = 1.0):
    """A hand-set energy rewarding equal neighbours: E(y) = -strength * #{i : y_i = y_(i+1)}."""

    def energy(candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        equal = (candidates[..., 1:] == candidates[..., :-1]).double().sum(-1)  # (B, k)
        return -strength * equal

    return energy


def true_nll(p_star: torch.Tensor, x0: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """-log p*(x0) per sequence (nats, NOT per token); x0 (B, L) -> (B,)."""
    return -p_star[sequence_index(x0, vocab_size)].log()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def save_random_run(folder, kind: str, seed: int, preset: str = "char-tiny"):
    """A run folder holding an untrained ``preset`` model of ``kind`` with random output layers (so no output is
    uniform) and one checkpoint; no training needed."""
    import dataclasses
    import json

    from edlm.checkpoint import save_checkpoint
    from edlm.config import get_preset
    from edlm.fileio import write_json_atomic
    from edlm.models import build_model

    config = get_preset(preset)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, kind=kind))
    torch.manual_seed(seed)
    model = build_model(config.model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "adaLN_modulation" in name or "output_layer.linear" in name:
                parameter.normal_(0.0, 0.3)
    folder.mkdir()
    write_json_atomic(folder / "config.json", json.loads(config.to_json()))
    save_checkpoint(folder, 1, model.state_dict(), model.state_dict(), None, {})
    return folder
