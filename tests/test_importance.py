"""Parallel importance sampling (notes 3.3): MDLM identity, sign of the weights, exactness on toys,
batch independence, window accounting."""

import math

import pytest
import torch
from test_samplers import MASK, OracleDenoiser
from toys import all_sequences, conditional_denoiser, exact_energy, pair_energy, random_joint, sequence_index
from toys import total_variation

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.energy.base import ZeroEnergy
from edlm.sampling.generate import build_template
from edlm.sampling.importance import ImportanceProposal, resample_index
from edlm.sampling.loop import MaskedDiffusionSampler
from edlm.sampling.mdlm import FactorizedProposal


def sample(denoiser, proposal, x_init, steps, seed=0, cached=True, mask_id=MASK):
    sampler = MaskedDiffusionSampler(denoiser, LogLinearSchedule(1e-3), mask_id, steps, proposal, cached=cached)
    return sampler.sample(x_init, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cached", [False, True])
def test_zero_energy_and_k1_reproduce_mdlm_bit_for_bit(cached):
    x_init = torch.full((5, 20), MASK)
    plain = sample(OracleDenoiser(20), FactorizedProposal(MASK), x_init, 40, cached=cached).tokens
    zero = ImportanceProposal(FactorizedProposal(MASK), ZeroEnergy(), num_candidates=4, window=1.0)
    assert torch.equal(sample(OracleDenoiser(20), zero, x_init, 40, cached=cached).tokens, plain)
    k1 = ImportanceProposal(FactorizedProposal(MASK), pair_energy(3.0), num_candidates=1, window=1.0)
    assert torch.equal(sample(OracleDenoiser(20), k1, x_init, 40, cached=cached).tokens, plain)
    window0 = ImportanceProposal(FactorizedProposal(MASK), pair_energy(3.0), num_candidates=4, window=0.0)
    assert torch.equal(sample(OracleDenoiser(20), window0, x_init, 40, cached=cached).tokens, plain)
    assert window0.counters["energy_calls"] == 0


def test_low_energy_is_preferred_with_the_right_probability():
    energies = torch.tensor([[0.0, 2.0, 1.0]]).repeat(200_000, 1)
    uniforms = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chosen = resample_index(energies, uniforms)
    freq = torch.bincount(chosen, minlength=3).double() / chosen.numel()
    expected = torch.softmax(-torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64), 0)
    assert torch.allclose(freq, expected, atol=4e-3)
    assert freq[0] > freq[2] > freq[1]  # lowest energy most often
    hot = resample_index(energies[:1000], uniforms[:1000], temperature=1e6)  # tau -> inf: uniform
    assert 250 < int((hot == 1).sum()) < 420


def _one_step_distribution(p_star, V, L, k, draws=100_000, seed=0):
    denoiser = conditional_denoiser(p_star, V, L)
    proposal = ImportanceProposal(FactorizedProposal(V), exact_energy(p_star, V), num_candidates=k, window=1.0)
    x_t = torch.full((draws, L), V)
    chosen = proposal(denoiser(x_t[:1]).expand(draws, -1, -1), x_t, 1.0, torch.Generator().manual_seed(seed))
    return torch.bincount(sequence_index(chosen, V), minlength=V ** L).double() / draws


def test_one_step_approaches_the_target_as_k_grows():
    """Factorised denoiser (product of p* marginals), exact energy -log p* + log mu: SIR -> p*."""
    V, L = 3, 3
    p_star = random_joint(V, L, seed=2)
    distances = [total_variation(_one_step_distribution(p_star, V, L, k), p_star) for k in (1, 4, 16, 64)]
    assert distances[-1] < 0.05
    assert all(a > b for a, b in zip(distances, distances[1:])), distances


def test_full_sampler_with_few_steps_approaches_the_target():
    """With T = 2 steps MDLM reveals tokens jointly from a factorised denoiser and misses p*; EDLM fixes it."""
    V, L, draws = 2, 3, 40_000
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    denoiser = conditional_denoiser(p_star, V, L)
    x_init = torch.full((draws, L), V)

    def distribution(proposal, cached):
        tokens = sample(denoiser, proposal, x_init, 2, seed=1, cached=cached, mask_id=V).tokens
        return torch.bincount(sequence_index(tokens, V), minlength=V ** L).double() / draws

    mdlm = total_variation(distribution(FactorizedProposal(V), False), p_star)
    for cached in (False, True):
        edlm = ImportanceProposal(FactorizedProposal(V), exact_energy(p_star, V), num_candidates=64, window=1.0)
        assert total_variation(distribution(edlm, cached), p_star) < min(0.05, mdlm / 2)


def test_candidates_never_mix_across_rows():
    L, B = 24, 4
    prompts = ["abc", "zzzz", "hello", "q"]
    x_init = torch.cat([build_template(1, L, prompt=p)[0] for p in prompts])
    base = FactorizedProposal(MASK)
    proposal = ImportanceProposal(base, pair_energy(2.0), num_candidates=3, window=1.0)
    seen = []

    def spy(log_probs, x_t, t, generator):
        x0 = ImportanceProposal.__call__(proposal, log_probs, x_t, t, generator)
        seen.append((x_t.clone(), x0.clone()))
        return x0

    spy.reuse_allowed, spy.stats = (lambda t: False), dict
    result = sample(OracleDenoiser(L), spy, x_init, 16, cached=False)
    for x_t, x0 in seen:
        visible = x_t != MASK
        assert torch.equal(x0[visible], x_t[visible])  # each chosen candidate fits its own row
    for row, prompt in zip(result.tokens, prompts):
        assert row[:len(prompt)].tolist() == x_init[prompts.index(prompt), :len(prompt)].tolist()


def test_energy_is_called_only_inside_the_window():
    steps, window = 10, 0.5
    grid = torch.linspace(1.0, 1e-5, steps + 1, dtype=torch.float64)[:-1]
    expected = int((grid >= 1 - window - 1e-12).sum())
    calls = []

    def counting_energy(candidates, x_t, log_probs):
        calls.append(candidates.shape)
        return torch.zeros(candidates.shape[:2], dtype=torch.float64)

    counting_energy.constant = False
    proposal = ImportanceProposal(FactorizedProposal(MASK), counting_energy, num_candidates=3, window=window)
    sample(OracleDenoiser(12), proposal, torch.full((2, 12), MASK), steps, cached=False)
    assert len(calls) == expected == proposal.counters["energy_calls"]
    assert all(shape == (2, 3, 12) for shape in calls)
