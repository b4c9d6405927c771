"""Brute-force likelihoods (``edlm.likelihood.exact``) checked against each other and against closed forms.

On the tiny problem of ``likelihood_toys`` (V = 2, L = 3, float64) and a few other shapes: the exact MDLM NELBO
of the exact denoiser is the true NLL; the step plan is the sampler's grid; the exact sampler distribution sums to
one and tends to p* with k; the exact discrete bounds sit in order above the sampler's NLL and tend to the
continuous NELBO; the greedy final fill costs -log(1 - leftover); and the sampler ``edlm sample`` runs draws
from the exact distribution (chi-square test).
"""

from __future__ import annotations

import math

import pytest
import torch
from likelihood_toys import (
    L,
    P_STAR,
    SCHEDULE,
    SETTINGS,
    V,
    exact_denoiser,
    uniform_denoiser,
    wrong_denoiser,
)
from toys import (
    all_sequences,
    conditional_denoiser,
    copy_joint,
    exact_energy,
    pair_energy,
    random_joint,
    total_variation,
    true_nll,
)

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.likelihood import (
    StepPlan,
    exact_discrete_elbo,
    exact_mdlm_nelbo,
    exact_sampler_distribution,
    make_step_plan,
    sample_reveal_steps,
    sequence_index,
)

ENTROPY = float(-(P_STAR * P_STAR.log()).sum()) / L  # nats per token


def expected(values: torch.Tensor) -> float:
    """Average of a per-sequence quantity under p*."""
    return float((P_STAR * values).sum())


# ------------------------------------------------------------------------------------ MDLM continuous


@pytest.mark.parametrize("vocab, length", [(2, 3), (3, 2), (2, 2)])
def test_exact_nelbo_of_exact_conditionals_is_the_true_nll(vocab, length):
    p_star = random_joint(vocab, length, seed=3)
    nelbo = exact_mdlm_nelbo(vocab, length, conditional_denoiser(p_star, vocab, length), SCHEDULE)
    nll = true_nll(p_star, all_sequences(vocab, length), vocab) / length
    assert torch.allclose(nelbo, nll, atol=1e-9, rtol=0)


def test_exact_nelbo_of_copy_example_is_log_2():
    nelbo = exact_mdlm_nelbo(2, 2, conditional_denoiser(copy_joint(), 2, 2), SCHEDULE) * 2
    assert nelbo[0] == pytest.approx(math.log(2), abs=1e-12)
    assert nelbo[3] == pytest.approx(math.log(2), abs=1e-12)


@pytest.mark.parametrize("denoiser", [wrong_denoiser, uniform_denoiser])
def test_exact_nelbo_of_a_wrong_denoiser_is_strictly_above(denoiser):
    nelbo = exact_mdlm_nelbo(V, L, denoiser(), SCHEDULE)
    assert expected(nelbo) > ENTROPY + 0.05  # cross-entropy bound; pointwise it may dip below -log p*


# ------------------------------------------------------------------------------ sampler distribution


def test_step_plan_window_and_final_fill():
    plan = make_step_plan(SCHEDULE, 4, window=0.5, num_candidates=3, t_min=0.0)
    assert plan.num_candidates == (3, 3, 3, 1)  # t_n = 1, 0.75, 0.5 in the window, 0.25 not
    assert plan.reveal_probs == pytest.approx((0.25, 1 / 3, 0.5, 1.0)) and plan.leftover == 0.0
    steps = sample_reveal_steps(200000, 1, plan, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(steps.flatten(), minlength=4).double() / 200000
    assert torch.allclose(frequencies, torch.full((4,), 0.25, dtype=torch.float64), atol=5e-3)


def test_step_plan_is_the_sampler_grid_and_the_bound_paths_avoid_the_greedy_fill():
    # grid 1, 0.6, 0.2 (eps = 0): r = (0.4 - 0) / 1 and (0.8 - 0.4) / 0.6; 20% of positions left for the fill
    plan = make_step_plan(SCHEDULE, 2, t_min=0.2)
    assert plan.reveal_probs == pytest.approx((0.4, 2 / 3)) and plan.leftover == pytest.approx(0.2)
    # conditioned on being revealed within the T steps: P'(n = 0) = 0.4 / 0.8, P'(n = 1) = 0.6 * 2/3 / 0.8
    assert plan.conditioned_reveal_probs() == pytest.approx((0.5, 1.0))
    steps = sample_reveal_steps(100000, 2, plan, torch.Generator().manual_seed(1))
    assert steps.max() == 1 and abs(float((steps == 0).double().mean()) - 0.5) < 5e-3
    # the default grid ends at t_min = 1e-5 like `edlm sample`: leftover = t_min for every eps
    for eps in (0.0, 1e-3):
        assert make_step_plan(LogLinearSchedule(eps=eps), 16, 1.0, 2).leftover == pytest.approx(1e-5, rel=1e-6)


@pytest.mark.parametrize("denoiser, energy, steps, window, k", SETTINGS)
def test_sampler_distribution_sums_to_one(denoiser, energy, steps, window, k):
    plan = make_step_plan(SCHEDULE, steps, window, k)
    distribution = exact_sampler_distribution(V, L, denoiser(), energy(), plan)
    assert (distribution >= 0).all() and float(distribution.sum()) == pytest.approx(1.0, abs=1e-12)


def test_sampler_distribution_other_shapes_and_eps():
    p_star = random_joint(3, 2, seed=2)
    plan = make_step_plan(LogLinearSchedule(eps=1e-3), 3, 0.7, 3, t_min=1e-5)
    distribution = exact_sampler_distribution(3, 2, conditional_denoiser(p_star, 3, 2),
                                              exact_energy(p_star, 3), plan)
    assert float(distribution.sum()) == pytest.approx(1.0, abs=1e-12)


def test_constant_energy_sampler_is_mdlm():
    plan_k, plan_1 = make_step_plan(SCHEDULE, 3, 1.0, 4), make_step_plan(SCHEDULE, 3, 1.0, 1)
    constant = pair_energy(0.0)
    with_k = exact_sampler_distribution(V, L, wrong_denoiser(), constant, plan_k)
    plain = exact_sampler_distribution(V, L, wrong_denoiser(), None, plan_1)
    assert torch.allclose(with_k, plain, atol=1e-12)


def test_exact_energy_sampler_approaches_p_star():
    distances = []
    for k in (1, 2, 4, 8, 16):
        plan = make_step_plan(SCHEDULE, 2, 1.0, k)
        distribution = exact_sampler_distribution(V, L, exact_denoiser(), exact_energy(P_STAR, V), plan)
        distances.append(total_variation(distribution, P_STAR))
    assert all(a > b for a, b in zip(distances, distances[1:]))
    assert distances[0] > 0.2 and distances[-1] < 0.02


# ---------------------------------------------------------------------------------- discrete bounds


@pytest.mark.parametrize("denoiser, energy, steps, window, k", SETTINGS)
def test_exact_bounds_are_ordered(denoiser, energy, steps, window, k):
    """NLL of the sampler <= discrete ELBO (N = inf) <= expected N = 1 Jensen bound, for every x0."""
    plan = make_step_plan(SCHEDULE, steps, window, k)
    nll = -exact_sampler_distribution(V, L, denoiser(), energy(), plan).log() / L
    elbo = exact_discrete_elbo(V, L, denoiser(), energy(), plan)
    jensen = exact_discrete_elbo(V, L, denoiser(), energy(), plan, jensen=True)
    assert (nll <= elbo + 1e-12).all() and (elbo <= jensen + 1e-12).all()
    if k == 1:
        assert torch.allclose(elbo, jensen, atol=1e-12)


def test_discrete_mdlm_elbo_tends_to_continuous_nelbo():
    denoiser = wrong_denoiser()
    continuous = expected(exact_mdlm_nelbo(V, L, denoiser, SCHEDULE))
    discrete = [expected(exact_discrete_elbo(V, L, denoiser, None, make_step_plan(SCHEDULE, steps)))
                for steps in (4, 16, 64)]
    assert discrete[0] > discrete[1] > discrete[2] > continuous
    assert discrete[2] - continuous < 0.003


def test_elbo_gap_shrinks_with_k_for_exact_energy():
    elbo, gap, jensen = [], [], []
    for k in (1, 2, 4, 8):
        plan = make_step_plan(SCHEDULE, 4, 1.0, k)
        nll = -exact_sampler_distribution(V, L, exact_denoiser(), exact_energy(P_STAR, V), plan).log() / L
        value = exact_discrete_elbo(V, L, exact_denoiser(), exact_energy(P_STAR, V), plan)
        elbo.append(expected(value))
        gap.append(expected(value - nll))
        jensen.append(expected(exact_discrete_elbo(V, L, exact_denoiser(), exact_energy(P_STAR, V), plan,
                                                   jensen=True)))
    assert all(a > b for a, b in zip(elbo, elbo[1:])) and all(a > b for a, b in zip(gap, gap[1:]))
    assert elbo[-1] - ENTROPY < 0.005
    # The N = 1 Jensen bound does NOT improve with k here (it pays KL(mu || p*) on the unrevealed positions):
    # use num_inner > 1 to benefit from k.
    assert jensen[-1] > jensen[0]


# --------------------------------------------------------------- greedy final fill of the real sampler


def test_greedy_fill_cost_is_minus_log_of_the_unfilled_probability():
    """With k = 1 the bound over fully revealed paths pays exactly -log(1 - leftover) per token on top of the
    ELBO of the sampler that reveals the same way and stops at the last step (r_T = 1)."""
    plan = make_step_plan(SCHEDULE, 2, t_min=0.5)
    conditioned = StepPlan(plan.conditioned_reveal_probs(), plan.num_candidates)
    with_fill = exact_discrete_elbo(V, L, wrong_denoiser(), None, plan)
    plain = exact_discrete_elbo(V, L, wrong_denoiser(), None, conditioned)
    assert torch.allclose(with_fill - plain, torch.full_like(plain, -math.log(0.5)), atol=1e-12)


# ---------------------------------------------------------------- the real sampler vs the exact one


@pytest.mark.parametrize("k, cached", [(2, True), (3, False), (4, True)])
def test_real_importance_sampler_matches_the_exact_distribution(k, cached):
    """MaskedDiffusionSampler + ImportanceSampler (the code `edlm sample` runs), 60,000 independent rows:
    the empirical distribution over V^L matches ``exact_sampler_distribution`` (chi-square, 7 dof, p = 1e-3),
    and is far from the plain MDLM sampler's (so the test can fail)."""
    from edlm.sampling.importance import ImportanceSampler
    from edlm.sampling.loop import MaskedDiffusionSampler

    steps, window, t_min, rows = 3, 0.6, 0.3, 60000
    denoiser, energy = wrong_denoiser(), exact_energy(P_STAR, V)
    sampler = MaskedDiffusionSampler(denoiser, SCHEDULE, V, steps, importance=ImportanceSampler(energy, k, window),
                                     cached=cached, t_min=t_min)
    tokens = sampler.sample(torch.full((rows, L), V), torch.Generator().manual_seed(k)).tokens
    counts = torch.bincount(sequence_index(tokens, V), minlength=V ** L).double()
    plan = make_step_plan(SCHEDULE, steps, window, k, t_min=t_min)
    exact = exact_sampler_distribution(V, L, denoiser, energy, plan)
    mdlm = exact_sampler_distribution(V, L, denoiser, None, make_step_plan(SCHEDULE, steps, t_min=t_min))

    def chi_square(probs):
        return float(((counts - rows * probs) ** 2 / (rows * probs)).sum())

    assert chi_square(exact) < 24.3  # chi2(7) 0.999 quantile
    assert chi_square(mdlm) > 200
