"""Importance sampling of x0 (``sampling/importance.py``): the MDLM identity, the sign of the weights, exactness on
enumerable toys for the paper's whole-row weighting and for the reveal-set weighting (fills, exact marginal),
batch independence, and every sampler moved to an exact target."""

import itertools
import math

import numpy as np
import pytest
import torch
from toys import (
    MASK,
    SCHEDULE,
    ExactLawEnergy,
    OracleDenoiser,
    RecordingStep,
    all_sequences,
    conditional_denoiser,
    distribution,
    exact_energy,
    importance,
    make_step,
    pair_energy,
    random_joint,
    run_sampler,
    sequence_index,
    template_with_prompt_and_infill,
    total_variation,
)

from edlm.diffusion.categorical import sampling_probs
from edlm.energy.base import FunctionEnergy, ZeroEnergy
from edlm.likelihood.estimators import make_step_plan
from edlm.likelihood.exact import exact_sampler_distribution, sir_choice_probs
from edlm.sampling.generate import build_template
from edlm.sampling.importance import ImportanceSampler, resample_index
from edlm.sampling.proposal import FactorizedProposal

TARGETS = ["row", "reveal"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("cached", [False, True])
def test_zero_energy_k1_and_window0_reproduce_mdlm_bit_for_bit(cached, target):
    x_init = torch.full((5, 20), MASK)

    def sample(sampler=None):
        return run_sampler(None, OracleDenoiser(20), x_init, 40, cached=cached, importance=sampler)

    plain = sample().tokens
    assert torch.equal(sample(importance(ZeroEnergy(), 4, target=target)).tokens, plain)
    assert torch.equal(sample(importance(pair_energy(3.0), 1, target=target)).tokens, plain)
    window0 = sample(importance(pair_energy(3.0), 4, window=0.0, target=target))
    assert torch.equal(window0.tokens, plain) and window0.energy_calls == 0


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
    hopeless = resample_index(torch.full((4000, 2), math.inf), uniforms[:4000])  # every candidate impossible
    assert 1800 < int((hopeless == 1).sum()) < 2200  # uniform, not NaN


def _one_step_distribution(p_star, V, L, k, draws=100_000, seed=0, temperature=1.0, top_p=1.0):
    denoiser = conditional_denoiser(p_star, V, L)
    sampler = importance(exact_energy(p_star, V), k)
    x_t = torch.full((draws, L), V)
    chosen, _ = sampler.draw_row(FactorizedProposal(V, temperature, top_p), denoiser(x_t[:1]).expand(draws, -1, -1),
                                 x_t, torch.Generator().manual_seed(seed))
    return torch.bincount(sequence_index(chosen, V), minlength=V ** L).double() / draws


def test_one_step_approaches_the_target_as_k_grows():
    """Factorised denoiser (product of p* marginals), exact energy -log p* + log mu: SIR -> p*."""
    V, L = 3, 3
    p_star = random_joint(V, L, seed=2)
    distances = [total_variation(_one_step_distribution(p_star, V, L, k), p_star) for k in (1, 4, 16, 64)]
    assert distances[-1] < 0.05
    assert all(a > b for a, b in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("temperature, top_p", [(0.7, 1.0), (1.6, 1.0), (1.0, 0.9)])
def test_tempered_or_filtered_candidates_still_target_p_star(temperature, top_p):
    """Defect 3: candidates come from the tempered / filtered q, so the energy must see log q, not log mu;
    with log mu the SIR target was p* (q / mu), e.g. p* mu^(1/tau - 1) for top_p = 1."""
    V, L = 3, 2
    p_star = random_joint(V, L, seed=4)
    # top-p removes tokens from q's support: the reachable target is p* restricted to that support
    log_probs = conditional_denoiser(p_star, V, L)(torch.full((1, L), V))
    support = sampling_probs(log_probs, temperature, top_p)[0, :, :V] > 0  # (L, V)
    sequences = all_sequences(V, L)
    target = p_star * support[torch.arange(L), sequences].all(-1)
    target = target / target.sum()
    distance = total_variation(_one_step_distribution(p_star, V, L, 256, draws=40_000, temperature=temperature,
                                                      top_p=top_p), target)
    plain = total_variation(_one_step_distribution(p_star, V, L, 1, draws=40_000, temperature=temperature,
                                                   top_p=top_p), target)
    assert distance < 0.03 and plain > 0.05, (distance, plain)


def test_full_sampler_with_few_steps_approaches_the_target():
    """With T = 2 steps MDLM reveals tokens jointly from a factorised denoiser and misses p*; EDLM fixes it."""
    V, L, draws = 2, 3, 40_000
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    denoiser = conditional_denoiser(p_star, V, L)
    x_init = torch.full((draws, L), V)

    def law(sampler, cached):
        tokens = run_sampler(make_step("ancestral", mask_id=V), denoiser, x_init, 2, seed=1, cached=cached,
                             mask_id=V, importance=sampler).tokens
        return distribution(tokens, V)

    mdlm = total_variation(law(None, False), p_star)
    for cached in (False, True):
        edlm = importance(exact_energy(p_star, V), 64)
        assert total_variation(law(edlm, cached), p_star) < min(0.05, mdlm / 2)


def test_each_row_keeps_its_own_lowest_energy_candidate():
    """Defect 11: rows differ (prompts, a row-dependent denoiser) and the energy reads each candidate's content
    with a preference that flips between rows, so any batch-major / candidate-major mix-up is observable."""
    L, B, k = 12, 4, 5
    prompts = ["abc", "zzzz", "hello", "q"]
    x_init = torch.cat([build_template(1, L, prompt=p)[0] for p in prompts])
    recorded = []

    def row_energy(candidates, x_t, log_probs):  # (B, k, L) -> (B, k): even rows like large ids, odd rows small
        sign = torch.tensor([1.0 if b % 2 == 0 else -1.0 for b in range(candidates.shape[0])], dtype=torch.float64)
        energies = -sign[:, None] * candidates.double().sum(-1)
        recorded.append((candidates.clone(), x_t.clone(), energies))
        return energies

    sampler = importance(FunctionEnergy(row_energy), k, temperature=1e-9)  # keeps the lowest energy (ties aside)
    x_t = x_init.clone()
    log_probs = OracleDenoiser(L)(x_t)
    assert not torch.equal(log_probs[0], log_probs[1])
    x0, scored = sampler.draw_row(FactorizedProposal(MASK), log_probs, x_t, torch.Generator().manual_seed(0))
    assert scored == B * k
    candidates, seen_x_t, energies = recorded[0]
    assert torch.equal(seen_x_t, x_t)
    for b in range(B):
        visible = x_t[b] != MASK
        assert all(torch.equal(c[visible], x_t[b, visible]) for c in candidates[b])  # row b's own candidates
        best = candidates[b, energies[b].argmin()]
        assert torch.equal(x0[b], best)
    assert (x0[0].sum() >= candidates[0].sum(-1)).all() and (x0[1].sum() <= candidates[1].sum(-1)).all()
    result = run_sampler(None, OracleDenoiser(L), x_init, 16, cached=False, importance=sampler)
    for row, prompt in zip(result.tokens, prompts):
        assert row[:len(prompt)].tolist() == x_init[prompts.index(prompt), :len(prompt)].tolist()


# ---------------------------------------------------------------- reveal-set weighting

def one_step_reveal_law(sampler, p_star, V, L, visible_mask, reveal_mask, x_t_row, draws=60_000, seed=0):
    """Empirical law of x_R after one importance-sampled draw, every row the same state; (V^|R|,) float64."""
    denoiser = conditional_denoiser(random_joint(V, L, seed=9, sharpness=0.5), V, L)  # a wrong denoiser
    x_t = x_t_row.expand(draws, L).clone()
    reveal = reveal_mask.expand(draws, L)
    log_probs = denoiser(x_t[:1]).expand(draws, -1, -1)
    proposal = FactorizedProposal(V)
    generator = torch.Generator().manual_seed(seed)
    if sampler.target == "row":
        x0, _ = sampler.draw_row(proposal, log_probs, x_t, generator)
    else:
        x0, _ = sampler.draw_reveal(proposal, log_probs, x_t, reveal, generator, lambda x, rows: denoiser(x))
    picked = x0[:, reveal_mask]  # (draws, |R|)
    return distribution(picked, V)


def exact_reveal_marginal(p_star, V, L, x_t_row, reveal_mask):
    """p*(x_R | visible tokens of x_t_row) over V^|R| (lexicographic); (V^|R|,) float64."""
    sequences = all_sequences(V, L)
    visible = x_t_row != V
    agree = (sequences[:, visible] == x_t_row[visible]).all(-1)
    law = torch.zeros(V ** int(reveal_mask.sum()), dtype=torch.float64)
    law.index_add_(0, sequence_index(sequences[:, reveal_mask], V), p_star * agree)
    return law / law.sum()


@pytest.mark.parametrize("target, k, fills, draws", [("row", 64, 1, 60_000), ("reveal", 64, 32, 10_000),
                                                     ("reveal-cond", 64, 1, 30_000), ("reveal-exact", 64, 1, 60_000)])
def test_one_step_draws_the_reveal_set_from_its_marginal_as_k_grows(target, k, fills, draws):
    """A wrong denoiser, the exact energy of p*: one draw of x_R, R = 2 of the 3 masked positions (position 0
    visible), matches p*(x_R | visible) for every weighting at large k (and large M for the fills)."""
    V, L = 2, 4
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    x_t_row = torch.tensor([1, V, V, V])
    reveal_mask = torch.tensor([False, True, False, True])
    exact = exact_reveal_marginal(p_star, V, L, x_t_row, reveal_mask)
    energy = ExactLawEnergy(p_star, V)
    law = one_step_reveal_law(importance(energy, k, target=target, fills=fills), p_star, V, L, None, reveal_mask,
                              x_t_row, draws=draws)
    plain = one_step_reveal_law(importance(energy, 1, target=target), p_star, V, L, None, reveal_mask, x_t_row)
    assert total_variation(law, exact) < 0.02, (target, total_variation(law, exact))
    assert total_variation(plain, exact) > 0.05  # the comparison can fail


def test_fills_converge_as_k_and_m_grow():
    V, L = 2, 4
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    x_t_row = torch.tensor([1, V, V, V])
    reveal_mask = torch.tensor([False, True, False, False])  # one token revealed, two others masked
    exact = exact_reveal_marginal(p_star, V, L, x_t_row, reveal_mask)
    distances = [total_variation(one_step_reveal_law(importance(ExactLawEnergy(p_star, V), k, target="reveal",
                                                                fills=m), p_star, V, L, None, reveal_mask, x_t_row,
                                                     draws=20_000, seed=k), exact)
                 for k, m in ((2, 1), (8, 4), (32, 16))]
    assert distances[-1] < 0.02 and distances[0] > distances[1] > distances[2], distances


def test_shared_fills_keep_a_bias_as_k_grows_and_conditioned_fills_do_not():
    """With M = 1 the shared-fill choice is normalised within one fill, so more candidates do not remove its bias;
    conditioned fills give each candidate an independent unbiased weight, exact as k grows for any M."""
    V, L = 2, 4
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    x_t_row = torch.tensor([1, V, V, V])
    reveal_mask = torch.tensor([False, True, False, True])
    exact = exact_reveal_marginal(p_star, V, L, x_t_row, reveal_mask)

    def distance(target):
        law = one_step_reveal_law(importance(ExactLawEnergy(p_star, V), 128, target=target, fills=1), p_star, V, L,
                                  None, reveal_mask, x_t_row, draws=12_000)
        return total_variation(law, exact)

    shared, conditioned = distance("reveal"), distance("reveal-cond")
    assert conditioned < 0.012 < 0.02 < shared, (shared, conditioned)


def exact_reveal_exact_law(p_star, denoiser, V, L, plan):
    """Exact output law of the sampler with reveal-set weighting by the exact marginal: from each state z and each
    reveal set R (probability r^|R| (1 - r)^(m - |R|)), x_R is chosen by SIR among k draws from q(x_R) =
    prod_{i in R} mu_i, weighted by p*(x_R | z) / q(x_R) (exact ``sir_choice_probs``); (V^L,) float64."""
    states = {(V,) * L: 1.0}
    for r, k in zip(plan.reveal_probs, plan.num_candidates):
        new_states: dict = {}
        for state, prob in states.items():
            z = torch.tensor(state)
            masked = [i for i in range(L) if state[i] == V]
            log_probs = denoiser(z[None])[0]  # (L, V + 1)
            for size in range(len(masked) + 1):
                pattern = r ** size * (1.0 - r) ** (len(masked) - size)
                for subset in itertools.combinations(masked, size) if pattern > 0 else ():
                    reveal_mask = torch.zeros(L, dtype=torch.bool)
                    reveal_mask[list(subset)] = True
                    values = list(itertools.product(range(V), repeat=size))
                    q = np.array([math.exp(sum(float(log_probs[i, v]) for i, v in zip(subset, vals)))
                                  for vals in values])
                    target = exact_reveal_marginal(p_star, V, L, z, reveal_mask).numpy() if size else np.ones(1)
                    with np.errstate(divide="ignore"):
                        choice = sir_choice_probs(q, np.log(target) - np.log(q), k) if size else np.ones(1)
                    for vals, c in zip(values, choice):
                        nxt = list(state)
                        for i, v in zip(subset, vals):
                            nxt[i] = v
                        new_states[tuple(nxt)] = new_states.get(tuple(nxt), 0.0) + prob * pattern * float(c)
        states = new_states
    law = torch.zeros(V ** L, dtype=torch.float64)
    for state, prob in states.items():
        law[int(sequence_index(torch.tensor(state), V))] += prob
    return law


@pytest.mark.parametrize("T, k", [(2, 2), (4, 2), (4, 4)])
def test_reveal_set_weighting_beats_whole_row_weighting_at_small_k(T, k):
    """Both laws computed exactly (enumeration), small k, T where a step reveals some but not all masked positions,
    a perfect denoiser and the exact energy: weights aimed at the reveal set land closer to p* (TV) than the
    paper's whole-row weights (on this toy: 0.066 vs 0.073 at T = 2, k = 2; 0.018 vs 0.065 at T = 4, k = 4: the
    fewer tokens a step reveals, the larger the gap). The reveal-exact enumeration is checked against the real
    sampler."""
    V, L = 2, 4
    p_star = random_joint(V, L, seed=5, sharpness=2.5)
    denoiser = conditional_denoiser(p_star, V, L)
    plan = make_step_plan(SCHEDULE, T, 1.0, k, t_min=0.0)
    row = exact_sampler_distribution(V, L, denoiser, exact_energy(p_star, V), plan)
    reveal = exact_reveal_exact_law(p_star, denoiser, V, L, plan)
    mdlm = exact_sampler_distribution(V, L, denoiser, None, make_step_plan(SCHEDULE, T, t_min=0.0))
    tv_mdlm, tv_row, tv_reveal = (total_variation(law, p_star) for law in (mdlm, row, reveal))
    assert tv_reveal < tv_row < tv_mdlm, (tv_mdlm, tv_row, tv_reveal)
    draws = 60_000
    tokens = run_sampler(make_step("ancestral", mask_id=V), denoiser, torch.full((draws, L), V), T, seed=T + k,
                         mask_id=V, t_min=0.0, importance=importance(ExactLawEnergy(p_star, V), k,
                                                                     target="reveal-exact")).tokens
    chi_square = float(((distribution(tokens, V) - reveal) ** 2 / reveal).sum() * draws)
    assert chi_square < 37.7, chi_square  # chi2(15) 0.999 quantile


@pytest.mark.parametrize("target", ["reveal", "reveal-exact"])
def test_reveal_weighting_sends_the_sampler_to_the_target_at_any_t(target):
    """Wrong denoiser, exact energy: with k = 64 (and 16 fills) the sampler lands near p* at T = 1 and T = 3, far
    closer than plain MDLM (the fills' finite-M noise leaves a small bias at this k)."""
    V, L, draws = 2, 3, 30_000
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    wrong = conditional_denoiser(random_joint(V, L, seed=8, sharpness=0.7), V, L)
    for steps in (1, 3):
        plain = run_sampler(make_step("ancestral", mask_id=V), wrong, torch.full((draws, L), V), steps, mask_id=V,
                            t_min=0.0).tokens
        plain_tv = total_variation(distribution(plain, V), p_star)
        sampler = importance(ExactLawEnergy(p_star, V), 64, target=target, fills=16)
        tokens = run_sampler(make_step("ancestral", mask_id=V), wrong, torch.full((draws, L), V), steps, mask_id=V,
                             t_min=0.0, importance=sampler).tokens
        assert total_variation(distribution(tokens, V), p_star) < min(0.04, plain_tv / 2), (target, steps)


def test_reveal_weighting_scores_only_rows_that_reveal_and_its_candidates_differ_only_there():
    L, B, k, M = 12, 6, 3, 2
    seen = []

    def spy(candidates, x_t, log_probs):
        seen.append(candidates.clone())
        return torch.zeros(candidates.shape[:2], dtype=torch.float64)

    step = RecordingStep(make_step("first-hitting"))
    result = run_sampler(step, OracleDenoiser(L), torch.full((B, L), MASK), 1, cached=False,
                         importance=importance(FunctionEnergy(spy), k, target="reveal", fills=M))
    assert len(seen) == L and all(c.shape == (B, k * M, L) for c in seen)  # first-hitting: every row reveals
    assert result.energy_rows == L * B * k * M
    for candidates, x_t in zip(seen, step.seen):
        joined = candidates.view(B, k, M, L)
        by_candidate = (joined != joined[:, :1]).any(2).any(1)  # (B, L) where candidates differ (same fill)
        by_fill = (joined != joined[:, :, :1]).any(2).any(1)  # (B, L) where fills differ (same candidate)
        masked = x_t == MASK
        assert (by_candidate.sum(-1) <= 1).all()  # first-hitting reveals one position: candidates differ there only
        assert (by_candidate <= masked).all() and (by_fill <= masked).all()  # visible positions are copied
        assert not (by_candidate & by_fill).any()  # the fills are shared by every candidate


@pytest.mark.parametrize("cached", [False, True])
def test_reveal_weighting_cached_equals_ancestral(cached):
    L = 16
    energy = pair_energy(1.0)
    x_init = template_with_prompt_and_infill(4, L)
    runs = [run_sampler(None, OracleDenoiser(L), x_init, 24, cached=c, importance=importance(energy, 3, 0.5,
                                                                                               "reveal", 2)).tokens
            for c in (False, cached)]
    assert torch.equal(runs[0], runs[1])


def test_reveal_exact_needs_exact_marginals():
    with pytest.raises(ValueError, match="exact marginals"):
        ImportanceSampler(pair_energy(1.0), 2, 1.0, 1.0, "reveal-exact")


# ---------------------------------------------------------------- every sampler

VARIANTS = [
    ("first-hitting", {}, 1),
    ("confidence", {"order": "entropy"}, 2),
    ("confidence", {"order": "max-prob"}, 2),
    ("ancestral", {}, 2),
    ("remdm", {"remask": "cap", "eta": 0.5}, 4),
    ("remdm", {"remask": "rescale", "eta": 0.5}, 4),
    ("remdm", {"remask": "loop", "eta": 0.5, "remask_on": 0.7, "remask_off": 0.3}, 4),
    ("threshold", {"threshold": 0.7}, 4),
    ("semi-ar", {"block": 2, "inner": "ancestral"}, 4),
    ("semi-ar", {"block": 2, "inner": "threshold"}, 4),
]


@pytest.mark.parametrize("name, knobs, _", VARIANTS)
@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_zero_energy_reproduces_each_plain_sampler_bit_for_bit(name, knobs, _, cached, target):
    L = 20
    x_init = template_with_prompt_and_infill(5, L)
    plain = run_sampler(make_step(name, **knobs), OracleDenoiser(L), x_init, 30, cached=cached).tokens
    zero = run_sampler(make_step(name, **knobs), OracleDenoiser(L), x_init, 30, cached=cached,
                       importance=importance(ZeroEnergy(), 4, target=target)).tokens
    assert torch.equal(zero, plain)


@pytest.mark.parametrize("name, knobs, steps", VARIANTS)
@pytest.mark.parametrize("target", ["row", "reveal-exact"])
def test_importance_sampling_moves_each_sampler_to_the_target(name, knobs, steps, target):
    """Wrong denoiser, exact energy for p*: with k = 64 the x0 handed to the step is ~ p*(x0 | x_t) (row), or its
    revealed part ~ p*(x_R | x_t) (reveal-exact: each step's plan must state the positions it then reveals).
    Steps whose choice of positions ignores x0's values then output p*; confidence by max-prob reads x0, and its
    reveal target falls back to whole rows. (The fills' convergence is tested on one step above.)"""
    V, L, draws = 2, 3, 20_000
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    wrong = conditional_denoiser(random_joint(V, L, seed=8, sharpness=0.7), V, L)
    x_init = torch.full((draws, L), V)
    plain = run_sampler(make_step(name, mask_id=V, **knobs), wrong, x_init, steps, mask_id=V)
    corrected = run_sampler(make_step(name, mask_id=V, **knobs), wrong, x_init, steps, mask_id=V, seed=1,
                            importance=importance(ExactLawEnergy(p_star, V), 64, target=target))
    plain_tv = total_variation(distribution(plain.tokens, V), p_star)
    edlm_tv = total_variation(distribution(corrected.tokens, V), p_star)
    if name == "confidence" and knobs["order"] == "max-prob":  # a heuristic whose positions read x0
        assert edlm_tv < plain_tv
        return
    assert edlm_tv < min(0.04, plain_tv / 2), (plain_tv, edlm_tv)
    assert corrected.energy_calls >= 1
