"""Likelihood estimators checked against brute-force enumeration (notes, section 3.4).

Tiny problems (V 2-3, L 2-3), float64, fixed seeds. Exact numbers come from ``edlm.likelihood.exact``;
Monte-Carlo numbers must agree within a few standard errors, and every bound must sit above the exact NLL.
"""

from __future__ import annotations

import math

import pytest
import torch
from toys import (
    all_sequences,
    conditional_denoiser,
    copy_joint,
    exact_energy,
    fixed_denoiser,
    pair_energy,
    random_joint,
    total_variation,
    true_nll,
)

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import corrupt, nelbo_terms, stratified_times
from edlm.likelihood import (
    StepPlan,
    edlm_bound,
    exact_discrete_elbo,
    exact_mdlm_nelbo,
    exact_paper_value,
    exact_sampler_distribution,
    log_z_estimate,
    make_step_plan,
    mdlm_discrete_nelbo,
    mean_and_stderr,
    paper_estimate,
    sample_from_denoiser,
    sample_reveal_steps,
)

SCHEDULE = LogLinearSchedule(eps=0.0)  # alpha(1) = 0: x_1 is all-[MASK], no prior term
V, L = 2, 3
P_STAR = random_joint(V, L, seed=0)
ENTROPY = float(-(P_STAR * P_STAR.log()).sum()) / L  # nats per token


def exact_denoiser():
    return conditional_denoiser(P_STAR, V, L)


def wrong_denoiser():
    """Context-dependent but wrong: exact conditionals of another joint."""
    return conditional_denoiser(random_joint(V, L, seed=1), V, L)


def uniform_denoiser():
    return fixed_denoiser(torch.full((L, V), 1.0 / V, dtype=torch.float64))


def expected(values: torch.Tensor) -> float:
    """Average of a per-sequence quantity under p*."""
    return float((P_STAR * values).sum())


# ------------------------------------------------------------------------------------------------ log Z


def test_log_z_estimate_matches_formulas():
    log_w = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = log_z_estimate(log_w)
    assert torch.allclose(plain, log_w.exp().mean(-1).log())
    leave_one_out = torch.stack([torch.cat([log_w[:, :i], log_w[:, i + 1:]], -1).exp().mean(-1).log()
                                 for i in range(5)], -1)
    jackknife = 5 * plain - 4 * leave_one_out.mean(-1)
    assert torch.allclose(log_z_estimate(log_w, jackknife=True), jackknife)
    dominated = torch.tensor([[800.0, 0.0, -1.0], [0.0, 0.0, float("-inf")]], dtype=torch.float64)
    loo = torch.tensor([[math.log(1 + math.exp(-1)), 800.0 + math.log1p(math.exp(-801)), 800.0],
                        [0.0, 0.0, math.log(2)]], dtype=torch.float64)
    expected_jack = 3 * log_z_estimate(dominated) - 2 * (loo - math.log(2)).mean(-1)
    assert torch.allclose(log_z_estimate(dominated, jackknife=True), expected_jack, atol=1e-12)
    with pytest.raises(ValueError):
        log_z_estimate(log_w[:, :1], jackknife=True)


def test_log_z_converges_and_jackknife_reduces_bias():
    denoiser, energy = wrong_denoiser(), exact_energy(P_STAR, V)
    x_t = torch.full((1, L), V)
    log_probs = denoiser(x_t)
    exact_log_z = 0.0  # mu exp(-E) = p*, normalised, whatever mu is
    generator = torch.Generator().manual_seed(0)
    plain_bias, jack_bias = {}, {}
    for n, reps in ((4, 20000), (16, 20000), (64, 20000)):
        proposals = sample_from_denoiser(log_probs.expand(reps, -1, -1), n, generator)  # (reps, n, L)
        log_w = -energy(proposals, x_t.expand(reps, -1), log_probs.expand(reps, -1, -1))
        plain_bias[n] = float(log_z_estimate(log_w).mean()) - exact_log_z
        jack_bias[n] = float(log_z_estimate(log_w, jackknife=True).mean()) - exact_log_z
    assert plain_bias[4] < plain_bias[16] < plain_bias[64] < 0  # biased low, shrinking (like 1/n eventually)
    assert abs(plain_bias[64]) < 0.5 * abs(plain_bias[4])
    assert all(abs(jack_bias[n]) < abs(plain_bias[n]) for n in plain_bias)
    assert abs(jack_bias[64]) < 0.5 * abs(plain_bias[64])


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


def test_mc_continuous_nelbo_matches_enumeration():
    eps_t, reps = 1e-3, 3000
    denoiser = wrong_denoiser()
    exact = exact_mdlm_nelbo(V, L, denoiser, SCHEDULE, t_min=eps_t) / (1 - eps_t)
    x0 = all_sequences(V, L).repeat(reps, 1)  # (reps * 8, L), tiled so every x0 sees t all over [eps_t, 1]
    generator = torch.Generator().manual_seed(0)
    t = stratified_times(x0.shape[0], generator, eps_t).double()
    x_t = corrupt(x0, t, SCHEDULE, V, torch.rand(x0.shape, generator=generator, dtype=torch.float64))
    terms = nelbo_terms(denoiser(x_t), x0, x_t, t, SCHEDULE, V).view(reps, V ** L)
    mean, stderr = mean_and_stderr(terms, 0)  # iid stderr: conservative for stratified t
    assert ((mean - exact).abs() < 4 * stderr).all()


# ------------------------------------------------------------------------------ sampler distribution


def test_step_plan_window_and_final_fill():
    plan = make_step_plan(SCHEDULE, 4, window=0.5, num_candidates=3)
    assert plan.num_candidates == (3, 3, 3, 1)  # t_n = 1, 0.75, 0.5 in the window, 0.25 not
    assert plan.reveal_probs == pytest.approx((0.25, 1 / 3, 0.5, 1.0))
    greedy_grid = make_step_plan(LogLinearSchedule(eps=1e-3), 4, window=1.0, num_candidates=2, t_min=0.1)
    assert greedy_grid.num_steps == 5 and greedy_grid.reveal_probs[-1] == 1.0  # stochastic final fill
    steps = sample_reveal_steps(200000, 1, plan, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(steps.flatten(), minlength=4).double() / 200000
    assert torch.allclose(frequencies, torch.full((4,), 0.25, dtype=torch.float64), atol=5e-3)


SETTINGS = [  # (denoiser, energy, T, window, k)
    (exact_denoiser, lambda: exact_energy(P_STAR, V), 4, 1.0, 2),
    (exact_denoiser, lambda: exact_energy(P_STAR, V), 3, 0.5, 4),
    (uniform_denoiser, lambda: exact_energy(P_STAR, V), 2, 1.0, 4),
    (wrong_denoiser, lambda: pair_energy(1.0), 4, 0.6, 3),
    (wrong_denoiser, lambda: pair_energy(-2.0), 2, 1.0, 1),
]


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


def _mc_bound(denoiser, energy, plan, num_inner, reps=1500, seed=0):
    x0 = all_sequences(V, L).repeat_interleave(reps, 0)  # (8 * reps, L)
    values = edlm_bound(x0, denoiser, energy, plan, V, torch.Generator().manual_seed(seed), num_inner)
    return mean_and_stderr(values.view(V ** L, reps), 1)


@pytest.mark.parametrize("denoiser, energy, steps, window, k", [SETTINGS[1], SETTINGS[3]])
def test_mc_edlm_bound_matches_exact_and_is_above_the_nll(denoiser, energy, steps, window, k):
    plan = make_step_plan(SCHEDULE, steps, window, k)
    nll = -exact_sampler_distribution(V, L, denoiser(), energy(), plan).log() / L
    jensen = exact_discrete_elbo(V, L, denoiser(), energy(), plan, jensen=True)
    elbo = exact_discrete_elbo(V, L, denoiser(), energy(), plan)
    mean, stderr = _mc_bound(denoiser(), energy(), plan, num_inner=1)
    assert ((mean - jensen).abs() < 4 * stderr).all()  # N = 1: unbiased for the exact Jensen bound
    assert (mean - 3 * stderr >= nll).all()
    mean, stderr = _mc_bound(denoiser(), energy(), plan, num_inner=16)
    assert (mean > elbo - 4 * stderr).all() and (mean < jensen).all()  # IWAE: between ELBO and N = 1
    assert (mean + 3 * stderr >= nll).all()  # gap to the NLL is below 3 stderr here: "within MC error"


def test_edlm_bound_with_one_candidate_is_the_discrete_mdlm_elbo():
    plan = make_step_plan(SCHEDULE, 3, window=1.0, num_candidates=1)
    x0 = all_sequences(V, L).repeat(50, 1)
    bound = edlm_bound(x0, wrong_denoiser(), pair_energy(1.0), plan, V, torch.Generator().manual_seed(5))
    mdlm = mdlm_discrete_nelbo(x0, wrong_denoiser(), plan, V, torch.Generator().manual_seed(5))
    assert torch.equal(bound, mdlm)
    outside = make_step_plan(SCHEDULE, 3, window=0.0, num_candidates=4)  # window covers only t = 1
    assert outside.num_candidates == (4, 1, 1)
    mean, stderr = _mc_bound(wrong_denoiser(), None, StepPlan(plan.reveal_probs, (1, 1, 1)), 1, reps=2000)
    exact = exact_discrete_elbo(V, L, wrong_denoiser(), None, plan)
    assert ((mean - exact).abs() < 4 * stderr).all()


def test_edlm_bound_is_deterministic_given_the_seed():
    plan = make_step_plan(SCHEDULE, 3, 1.0, 3)
    x0 = all_sequences(V, L)
    runs = [edlm_bound(x0, exact_denoiser(), exact_energy(P_STAR, V), plan, V,
                       torch.Generator().manual_seed(9), num_inner=4) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


# ---------------------------------------------------------------------------------- paper plug-in


def test_paper_plug_in_is_below_the_true_nll_on_the_copy_example():
    p_star, denoiser, energy = copy_joint(), conditional_denoiser(copy_joint(), 2, 2), exact_energy(copy_joint(), 2)
    exact = exact_paper_value(2, 2, denoiser, energy, SCHEDULE) * 2  # nats per sequence
    assert exact[0] == pytest.approx(0.5 * math.log(2), abs=1e-12)
    assert exact[3] == pytest.approx(0.5 * math.log(2), abs=1e-12)
    x0 = torch.tensor([[0, 0], [1, 1]]).repeat(2000, 1)
    for log_z in ("mean", "jackknife"):
        values = paper_estimate(x0, denoiser, energy, LogLinearSchedule(eps=1e-3), 2,
                                torch.Generator().manual_seed(0), num_proposals=64, log_z=log_z) * 2
        mean, stderr = mean_and_stderr(values)
        assert abs(float(mean) - 0.5 * math.log(2)) < 4 * float(stderr)
        assert float(mean + 4 * stderr) < float(true_nll(p_star, x0[:1], 2)[0])


def test_paper_estimate_with_zero_energy_is_the_mdlm_nelbo():
    x0 = all_sequences(V, L).repeat(20, 1)
    schedule = LogLinearSchedule(eps=1e-3)
    values = paper_estimate(x0, wrong_denoiser(), pair_energy(0.0), schedule, V,
                            torch.Generator().manual_seed(3), num_proposals=4)
    generator = torch.Generator().manual_seed(3)  # replay the same t and x_t
    t = stratified_times(x0.shape[0], generator, 1e-3).double()
    x_t = corrupt(x0, t, schedule, V, torch.rand(x0.shape, generator=generator, dtype=torch.float64))
    reference = nelbo_terms(wrong_denoiser()(x_t), x0, x_t, t, schedule, V)
    assert torch.allclose(values, reference, atol=1e-12)
