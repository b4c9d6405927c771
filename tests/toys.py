"""Brute-force toys shared by the tests: a known joint p* over V^L, the denoiser made of its exact conditional
marginals, exact and hand-set energies, and enumeration of sequences and mask patterns (everything float64);
an oracle denoiser over the char vocabulary, a step that records what it sees, and one-call sampler runs;
sample texts for the data and judge tests, and the files of a prepared corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import subs_log_probs
from edlm.energy.base import FunctionEnergy
from edlm.likelihood.exact import all_mask_patterns, all_sequences, sequence_index  # noqa: F401 (re-export)

V, MASK = 27, 27  # the char vocabulary and its [MASK] id
SCHEDULE = LogLinearSchedule(1e-3)


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

    return FunctionEnergy(energy)


class ExactLawEnergy(FunctionEnergy):
    """``exact_energy`` that also knows its exact marginals: log p*(y_R | y_visible) by enumeration (the
    ``subset_log_prob`` a known law offers), for reveal-set importance sampling's ceiling."""

    exact_marginals = True

    def __init__(self, p_star: torch.Tensor, vocab_size: int):
        super().__init__(exact_energy(p_star, vocab_size).function)
        self.p_star, self.vocab_size = p_star, vocab_size

    def subset_log_prob(self, x: torch.Tensor, visible: torch.Tensor, subset: torch.Tensor) -> torch.Tensor:
        """x, visible, subset (N, L) -> log p*(x_subset | x_visible) (N,) float64."""
        sequences = all_sequences(self.vocab_size, x.shape[1])  # (C, L)
        same = sequences[None] == x[:, None]  # (N, C, L)
        agree_visible = (same | ~visible[:, None]).all(-1)  # (N, C)
        agree_both = agree_visible & (same | ~subset[:, None]).all(-1)
        joint = (agree_both.double() * self.p_star).sum(-1)
        return joint.log() - (agree_visible.double() * self.p_star).sum(-1).log()


def pair_energy(strength: float = 1.0):
    """A hand-set energy rewarding equal neighbours: E(y) = -strength * #{i : y_i = y_(i+1)}."""

    def energy(candidates: torch.Tensor, x_t: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        equal = (candidates[..., 1:] == candidates[..., :-1]).double().sum(-1)  # (B, k)
        return -strength * equal

    return FunctionEnergy(energy)


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


# ---------------------------------------------------------------------------------------------- samplers


class OracleDenoiser:
    """Row-independent denoiser over the char vocabulary: logits depend on (position, masked count, left
    neighbour). Counts calls and rows."""

    def __init__(self, L, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.randn(L + 1, L, V + 1, V + 1, generator=generator) * 2
        self.calls, self.rows = 0, 0

    def __call__(self, x_t):
        self.calls += 1
        self.rows += x_t.shape[0]
        masked = (x_t == MASK).sum(-1)  # (B,)
        left = torch.cat([torch.full_like(x_t[:, :1], MASK), x_t[:, :-1]], dim=1)  # (B, L)
        positions = torch.arange(x_t.shape[1])
        logits = self.table[masked[:, None], positions[None], left]  # (B, L, V + 1)
        return subs_log_probs(logits, x_t, MASK)


def make_step(name, mask_id=MASK, schedule=SCHEDULE, **knobs):
    """The registry's step ``name`` with ``knobs`` (its options, and an inner sampler's for semi-ar)."""
    from edlm.sampling import SAMPLERS, SampleConfig

    sample = SampleConfig.of(sampler=name, **knobs)
    return SAMPLERS[name].build(schedule, mask_id, sample.options_for(), sample)


def run_sampler(step, denoiser, x_init, steps, seed=0, cached=True, mask_id=MASK, importance=None,
                temperature=1.0, top_p=1.0, schedule=SCHEDULE, t_min=1e-5):
    """One ``MaskedDiffusionSampler.sample`` call (step None: ancestral) -> SampleResult."""
    from edlm.sampling.loop import MaskedDiffusionSampler
    from edlm.sampling.proposal import FactorizedProposal

    sampler = MaskedDiffusionSampler(denoiser, schedule, mask_id, steps, step,
                                     FactorizedProposal(mask_id, temperature, top_p), importance, cached=cached,
                                     t_min=t_min)
    return sampler.sample(x_init, torch.Generator().manual_seed(seed))


def importance(energy, k, window=1.0, target="row", fills=4, temperature=1.0):
    from edlm.sampling.importance import ImportanceSampler

    return ImportanceSampler(energy, k, window, temperature, target, fills)


@dataclass
class RecordingStep:
    """Wraps a step and records every x_t it plans from (the sequence before each step) and every x0 it gets."""

    inner: object
    seen: list = field(default_factory=list)
    x0s: list = field(default_factory=list)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def plan(self, log_probs, x_t, t, s, generator):
        self.seen.append(x_t.clone())
        return self.inner.plan(log_probs, x_t, t, s, generator)

    def apply(self, x_t, x0, plan, t, s, generator):
        self.x0s.append(x0.clone())
        return self.inner.apply(x_t, x0, plan, t, s, generator)


def distribution(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Empirical law of (N, L) token rows over V^L; (V^L,) float64."""
    return (torch.bincount(sequence_index(tokens, vocab_size), minlength=vocab_size ** tokens.shape[1]).double()
            / tokens.shape[0])


def template_with_prompt_and_infill(B, L):
    """x_T (B, L): the prompt "to be " then blanks, with one infill token near the end."""
    from edlm.sampling.generate import build_template

    x_init = build_template(B, L, prompt="to be ")[0]
    x_init[:, L - 4] = 1  # an infill position among the blanks
    return x_init


def tiny_denoiser_run(time_conditioning=False):
    """(RunConfig, model): a random 1-layer char denoiser with L = 8 whose conditioning has a visible effect."""
    from edlm.config import PRESETS, ModelConfig, RunConfig
    from edlm.models import build_model

    model_config = ModelConfig(seq_len=8, n_layers=1, hidden=16, n_heads=2, cond_dim=8,
                               time_conditioning=time_conditioning)
    torch.manual_seed(0)
    model = build_model(model_config).eval()
    for p in model.parameters():  # adaLN-Zero starts at zero: give the conditioning a visible effect
        torch.nn.init.normal_(p, std=0.05)
    return RunConfig(model=model_config, train=PRESETS["char-tiny"].train), model


# -------------------------------------------------------------------------------------- text and corpora


SENTENCE = "the quick brown fox jumps over the lazy dog"
RAW_TEXT = (
    "CHAPTER 1.\n\nIt was the best of times, it was the worst of times -- 1775, à Paris!\r\n"
    "Tabs\tand   spaces; naïve café résumé (Zoë) & co. 42% of 3/4 “quotes” 🙂 Straße\n"
) * 5


def prepared_bins(folder: Path) -> list[Path]:
    """The .bin files a (possibly failed) ``prepare_corpus`` left in ``folder``, sorted; [] if it does not exist."""
    return sorted(folder.glob("*.bin")) if folder.exists() else []


def prepared_stream(folder: Path) -> bytes:
    """The whole prepared token stream: train, val and test bytes joined in that order."""
    return b"".join((folder / f"{split}.bin").read_bytes() for split in ("train", "val", "test"))
