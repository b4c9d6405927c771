"""Likelihood estimators checked against brute-force enumeration (docs/method.md §3.4).

Tiny problems (V 2-3, L 2-3), float64, fixed seeds. Exact numbers come from ``edlm.likelihood.exact``;
Monte-Carlo numbers must agree within a few standard errors, and every bound must sit above the exact NLL.
"""

from __future__ import annotations

import json
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
    all_mask_patterns,
    edlm_bound,
    effective_sample_size,
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
    sequence_index,
)
from edlm.likelihood.nelbo import summarize
from edlm.likelihood.report import paper_summary

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
    assert make_step_plan(SCHEDULE, 3, window=0.0, num_candidates=4).num_candidates == (1, 1, 1)  # as sampler
    assert make_step_plan(SCHEDULE, 3, window=0.1, num_candidates=4).num_candidates == (4, 1, 1)
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
                                torch.Generator().manual_seed(0), num_proposals=64, log_z=log_z).per_token * 2
        mean, stderr = mean_and_stderr(values)
        assert abs(float(mean) - 0.5 * math.log(2)) < 4 * float(stderr)
        assert float(mean + 4 * stderr) < float(true_nll(p_star, x0[:1], 2)[0])


def test_paper_estimate_with_zero_energy_is_the_mdlm_nelbo():
    x0 = all_sequences(V, L).repeat(20, 1)
    schedule = LogLinearSchedule(eps=1e-3)
    estimate = paper_estimate(x0, wrong_denoiser(), pair_energy(0.0), schedule, V,
                              torch.Generator().manual_seed(3), num_proposals=4)
    values = estimate.per_token
    has_log_z = torch.isfinite(estimate.ess)  # nan: nothing masked in the row, no log Z
    assert has_log_z.sum() > 50 and torch.allclose(estimate.ess[has_log_z], torch.tensor(4.0, dtype=torch.float64))
    generator = torch.Generator().manual_seed(3)  # replay the same t and x_t
    t = stratified_times(x0.shape[0], generator, 1e-3).double()
    x_t = corrupt(x0, t, schedule, V, torch.rand(x0.shape, generator=generator, dtype=torch.float64))
    reference = nelbo_terms(wrong_denoiser()(x_t), x0, x_t, t, schedule, V)
    assert torch.allclose(values, reference, atol=1e-12)


# ------------------------------------------------------------------- coAR: self-normalised, no log Z


def coar_energy(p_star: torch.Tensor, vocab_size: int, length: int):
    """The coAR energy of an exact AR model p*: E = -sum_{i masked} log p*(y_i | y_<i) + log mu(y_M | x_t)."""
    sequences = all_sequences(vocab_size, length)  # (C, L)
    prefix = torch.stack([torch.stack([p_star[(sequences[:, :i + 1] == y[:i + 1]).all(-1)].sum()
                                       for i in range(length)]) for y in sequences])  # (C, L) P(y_<=i)
    previous = torch.cat([torch.ones(len(sequences), 1, dtype=torch.float64), prefix[:, :-1]], 1)
    conditionals = (prefix / previous).log()  # (C, L) log p*(y_i | y_<i)

    def energy(candidates, x_t, log_probs):
        ar = conditionals[sequence_index(candidates, vocab_size)]  # (B, k, L)
        masked = (x_t == vocab_size)[:, None, :]
        log_mu = torch.where(masked, log_probs.double().gather(-1, candidates.transpose(1, 2)).transpose(1, 2),
                             torch.zeros_like(ar))
        return -(ar * masked).sum(-1) + log_mu.sum(-1)

    return energy


def test_coar_energy_is_self_normalised_by_enumeration():
    """sum_{y consistent with x_t} mu(y | x_t) exp(-E(y, x_t)) = 1 for every x_t, even with a wrong mu."""
    denoiser, energy = wrong_denoiser(), coar_energy(P_STAR, V, L)
    sequences = all_sequences(V, L)
    for pattern in all_mask_patterns(L):
        for x0 in sequences:
            x_t = torch.where(pattern, torch.full_like(x0, V), x0)[None]  # (1, L)
            log_probs = denoiser(x_t)
            log_mu = log_probs[0].gather(-1, sequences.T).T.sum(-1)  # (C,)
            support = torch.isfinite(log_mu)
            log_w = -energy(sequences[support][None], x_t, log_probs)[0]
            assert float(torch.logsumexp(log_mu[support] + log_w, 0)) == pytest.approx(0.0, abs=1e-12)
    full = exact_energy(P_STAR, V)  # the full-sequence energy is not: Z(x_t) = p*(visible) < 1
    x_t = torch.tensor([[0, V, V]])
    log_probs = denoiser(x_t)
    candidates = all_sequences(V, L)[all_sequences(V, L)[:, 0] == 0][None]
    log_z = torch.logsumexp(candidates_log_mu(candidates, log_probs) - full(candidates, x_t, log_probs), -1)
    assert float(log_z) < -0.05


def candidates_log_mu(candidates, log_probs):
    return log_probs.double().gather(-1, candidates.transpose(1, 2)).sum(1)  # (B, k)


def test_paper_estimate_without_log_z_for_coar_matches_enumeration():
    denoiser, energy, schedule = wrong_denoiser(), coar_energy(P_STAR, V, L), LogLinearSchedule(eps=1e-3)
    exact = exact_paper_value(V, L, denoiser, energy, schedule, t_min=1e-3) / (1 - 1e-3)
    reps = 3000
    x0 = all_sequences(V, L).repeat(reps, 1)
    estimate = paper_estimate(x0, denoiser, energy, schedule, V, torch.Generator().manual_seed(0), log_z="none")
    assert torch.isnan(estimate.ess).all()  # no log Z, no ESS
    mean, stderr = mean_and_stderr(estimate.per_token.view(reps, V ** L), 0)
    assert ((mean - exact).abs() < 4 * stderr).all()
    # with a Monte-Carlo log Z of 2 proposals the same plug-in is pushed down (log Z_hat biased low)
    biased = paper_estimate(x0, denoiser, energy, schedule, V, torch.Generator().manual_seed(0), num_proposals=2)
    assert float(biased.per_token.mean()) < float(estimate.per_token.mean()) - 0.01
    ess = biased.ess[torch.isfinite(biased.ess)]
    assert ess.numel() > 0.5 * x0.shape[0] and ((ess >= 1 - 1e-9) & (ess <= 2 + 1e-9)).all()


def test_effective_sample_size_formula():
    log_w = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -1e9, -1e9, -1e9], [math.log(3), 0.0, 0.0, 0.0]])
    assert effective_sample_size(log_w).tolist() == pytest.approx([4.0, 1.0, 36 / 12])  # (3+3)^2 / (9+3)


def test_paper_estimate_with_ess_near_one_is_refused():
    """Weights e^{40 j} for proposal j: the last one carries everything (ESS = 1), so no number is reported."""
    denoiser, schedule = wrong_denoiser(), LogLinearSchedule(eps=1e-3)
    x0 = all_sequences(V, L).repeat(50, 1)

    def steep(candidates, x_t, log_probs):
        return -40.0 * torch.arange(candidates.shape[1], dtype=torch.float64).expand(candidates.shape[:2])

    estimate = paper_estimate(x0, denoiser, steep, schedule, V, torch.Generator().manual_seed(0), 16)
    summary = paper_summary(estimate, L, min_ess=2.0, num_proposals=16)
    assert summary["available"] is False and "effective sample size" in summary["reason"]
    assert "bpc" not in summary and summary["mean_ess"] < 1.5
    mild = paper_estimate(x0, denoiser, pair_energy(0.3), schedule, V, torch.Generator().manual_seed(0), 16)
    summary = paper_summary(mild, L, min_ess=2.0, num_proposals=16)
    assert summary["available"] is True and summary["mean_ess"] > 8 and "bpc" in summary


# --------------------------------------------------------------- greedy final fill of the real sampler


GREEDY = [  # (denoiser, energy, T, window, k, t_min): t_min large so that the greedy fill matters
    (exact_denoiser, lambda: exact_energy(P_STAR, V), 3, 1.0, 2, 0.3),
    (wrong_denoiser, lambda: pair_energy(1.0), 2, 0.6, 3, 0.4),
    (uniform_denoiser, lambda: exact_energy(P_STAR, V), 3, 0.5, 4, 0.2),
]


@pytest.mark.parametrize("denoiser, energy, steps, window, k, t_min", GREEDY)
def test_bound_with_greedy_fill_is_above_the_exact_nll(denoiser, energy, steps, window, k, t_min):
    plan = make_step_plan(SCHEDULE, steps, window, k, t_min=t_min)
    assert plan.leftover == pytest.approx(t_min)
    distribution = exact_sampler_distribution(V, L, denoiser(), energy(), plan)
    assert float(distribution.sum()) == pytest.approx(1.0, abs=1e-12)
    stochastic_fill = StepPlan(plan.reveal_probs[:-1] + (1.0,), plan.num_candidates)
    assert total_variation(distribution, exact_sampler_distribution(V, L, denoiser(), energy(),
                                                                    stochastic_fill)) > 0.01  # greedy matters
    nll = -distribution.log() / L
    elbo = exact_discrete_elbo(V, L, denoiser(), energy(), plan)
    jensen = exact_discrete_elbo(V, L, denoiser(), energy(), plan, jensen=True)
    assert torch.isfinite(elbo).all() and (nll <= elbo + 1e-12).all() and (elbo <= jensen + 1e-12).all()
    mean, stderr = _mc_bound(denoiser(), energy(), plan, num_inner=1, reps=1500)
    assert ((mean - jensen).abs() < 4 * stderr).all()


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


# ---------------------------------------------------------------------------------- bits per character


def test_summarize_bits_per_character():
    per_sequence = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    char = summarize(per_sequence, 4)
    assert char["bpc"] == pytest.approx(2.0 / math.log(2)) and char["ppl"] == pytest.approx(math.exp(2.0))
    assert char == summarize(per_sequence, 4, chars_per_token=1.0)  # a char model's bpc is unchanged
    subword = summarize(per_sequence, 4, chars_per_token=4.0)  # 4 characters per token
    assert subword["bpc"] == pytest.approx(char["bpc"] / 4) and subword["nll_nats"] == char["nll_nats"]
    assert subword["stderr_bpc"] == pytest.approx(char["stderr_bpc"] / 4) and subword["ppl"] == char["ppl"]


# ------------------------------------------------------------------------------------------- devices


def on_device(function, device: torch.device):
    """Wrap a toy denoiser / energy: assert its tensor inputs are on ``device``, run on CPU, answer on ``device``."""

    def wrapped(*tensors):
        assert all(t.device.type == device.type for t in tensors), [t.device for t in tensors]
        return function(*[t.cpu() for t in tensors]).to(device)

    return wrapped


def _run_everything_on(device: torch.device):
    x0 = all_sequences(V, L).repeat(3, 1)  # CPU input
    denoiser, energy = on_device(wrong_denoiser(), device), on_device(exact_energy(P_STAR, V), device)
    plan = make_step_plan(SCHEDULE, 3, 1.0, 2)
    outputs = [edlm_bound(x0, denoiser, energy, plan, V, torch.Generator().manual_seed(0), 2, device),
               mdlm_discrete_nelbo(x0, denoiser, plan, V, torch.Generator().manual_seed(0), device)]
    for log_z in ("none", "mean", "jackknife"):
        estimate = paper_estimate(x0, denoiser, energy, SCHEDULE, V, torch.Generator().manual_seed(0), 4, log_z,
                                  device=device)
        outputs += [estimate.per_token, estimate.ess]
    assert all(out.device.type == "cpu" for out in outputs)
    return outputs


def test_estimators_run_on_the_denoisers_device_and_return_cpu():
    outputs = _run_everything_on(torch.device("cpu"))
    assert all(torch.isfinite(out).all() for out in outputs[:3] + outputs[4::2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_estimators_on_cuda_equal_cpu():
    """CPU generators: the same seed gives the same draws on either device, so the values agree."""
    for cpu, cuda in zip(_run_everything_on(torch.device("cpu")), _run_everything_on(torch.device("cuda"))):
        assert torch.allclose(cpu, cuda, atol=1e-9, equal_nan=True)


# -------------------------------------------------------------------------- the report on real models


def _tiny(kind: str, seed: int):
    import dataclasses

    from edlm.config import get_preset
    from edlm.models import build_model

    config = get_preset("char-tiny")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, kind=kind, seq_len=8,
                                                                   n_layers=1, hidden=32, cond_dim=16))
    torch.manual_seed(seed)
    model = build_model(config.model)
    with torch.no_grad():  # zero-initialised output layers would make every model uniform
        for name, parameter in model.named_parameters():
            if "adaLN_modulation" in name or "output_layer.linear" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed)))
    return config, model.eval()


def test_likelihood_report_names_every_figure_and_the_sampler():
    from edlm.config import ConfigError, LikelihoodConfig
    from edlm.energy.ar import AREnergy
    from edlm.likelihood.report import LikelihoodError, likelihood_report

    config, mdlm = _tiny("mdlm", 0)
    ar_config, ar = _tiny("ar", 1)
    chunks = torch.randint(0, 27, (6, 8), generator=torch.Generator().manual_seed(0))
    settings = LikelihoodConfig(steps=4, k=2, window=1.0, is_samples=4, inner=2, batch_size=4, max_sequences=5)
    plain = likelihood_report(settings, config, mdlm, chunks)
    assert plain["kind"] == "mdlm_nelbo_upper_bound" and plain["sequences"] == 5 and plain["precision"] == "fp32"
    assert plain["t_samples"] == settings.t_samples and plain["eps_t"] == 1e-3
    ar_only = likelihood_report(settings, ar_config, ar, chunks, chars_per_token=2.0)
    assert ar_only["kind"] == "ar_exact_nll"
    assert ar_only["bpc"] == pytest.approx(ar_only["nll_nats"] / 2.0 / math.log(2))
    coar = likelihood_report(settings, config, mdlm, chunks, energy=AREnergy(ar, config.model.mask_id, "coar"))
    estimators = coar["estimators"]
    assert estimators["paper_estimate"]["log_z"] == "none" and "paper_estimate_jackknife" not in estimators
    assert coar["bpc"] == estimators["bound"]["bpc"] and coar["precision"] == "fp32"
    bounded = coar["sampler_bounded"]
    assert bounded["t_min"] == 1e-5 and bounded["temperature"] == 1.0 and "greedy" in bounded["final_step"]
    assert bounded["greedy_fill_cost_nats_per_token"] == pytest.approx(1e-5, rel=1e-3)
    paired = estimators["mdlm_discrete_nelbo"]["nll_nats"] - estimators["bound"]["nll_nats"]
    assert estimators["bound_improvement_over_mdlm_same_T"]["nll_nats"] == pytest.approx(paired)
    assert "ar_nll" in estimators and estimators["mdlm_nelbo"]["t_samples"] == settings.t_samples
    full = likelihood_report(settings, config, mdlm, chunks, energy=AREnergy(ar, config.model.mask_id, "full"))
    paper = full["estimators"]["paper_estimate"]
    assert paper["log_z"] == "monte_carlo" and 1.0 <= paper["mean_ess"] <= 4.0
    assert "paper_estimate_jackknife" in full["estimators"]
    with pytest.raises(ConfigError, match="^is_samples must be >= 2"):
        LikelihoodConfig(is_samples=1)
    with pytest.raises(ConfigError, match=r"^window must be in \[0, 1\]"):
        LikelihoodConfig(window=1.5)
    nce_config = dataclasses_replace_kind(config, "nce")
    with pytest.raises(LikelihoodError, match="the energy nce:RUN_DIR"):
        likelihood_report(settings, nce_config, mdlm, chunks)


def test_eval_with_an_energy_says_what_each_figure_is_and_shows_progress_off_a_terminal(tiny_data, tmp_path,
                                                                                          capsys, monkeypatch):
    """``edlm eval --energy ar:RUN`` without --json: the bound named as a bound of the exact sampler, the MDLM
    bound of the same T, the paired improvement with its 95% interval (or "no significant difference"), the
    paper's estimate or why it is unavailable, the AR model's own NLL; and, stderr not being a terminal,
    progress lines while it runs (a long evaluation printed nothing until its end)."""
    import edlm.progress
    from toys import save_random_run

    from edlm.cli import main

    monkeypatch.setattr(edlm.progress, "EVERY_SECONDS", 0.0)
    mdlm, ar = save_random_run(tmp_path / "mdlm", "mdlm", 0), save_random_run(tmp_path / "ar", "ar", 1)
    base = ["eval", "--run", str(mdlm), "--data", str(tiny_data), "--energy", f"ar:{ar}", "--steps", "4", "--k",
            "2", "--max-sequences", "4", "--batch-size", "2", "--t-samples", "1", "--inner", "2", "--device", "cpu"]
    capsys.readouterr()
    assert main(base) == 0
    out, err = capsys.readouterr()
    assert "upper bound on the NLL of `edlm sample --steps 4 --k 2 --window 0.2 --is-target row`" in out, out
    lines = out.splitlines()
    for words in ("MDLM bound, same T", "improvement over the MDLM bound", "paper's estimate (not a bound)",
                  "AR model's own NLL"):
        assert sum(words in line for line in lines) == 1, (words, out)
    improvement = next(line for line in lines if "improvement over the MDLM bound" in line)
    assert "95% CI" in improvement and "bpc" in improvement
    assert "edlm likelihood: 1/2 batches" in err and "elapsed" in err, err
    # the paper's estimate when its log Z cannot be trusted: unavailable, with the reason
    assert main(base + ["--energy-mode", "full", "--is-samples", "2", "--min-ess", "100"]) == 0
    out = capsys.readouterr().out
    assert "paper's estimate (not a bound): unavailable: mean effective sample size" in out, out
    assert main(base + ["--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["kind"] == "edlm_likelihood" and "edlm likelihood:" not in err


def dataclasses_replace_kind(config, kind):
    import dataclasses

    return dataclasses.replace(config, model=dataclasses.replace(config.model, kind=kind))


def test_bench_likelihood_table_compares_discrete_bounds_only():
    from edlm.bench.likelihood import likelihood_table, paired_verdict
    from edlm.config import LikelihoodConfig
    from edlm.energy.ar import AREnergy
    from edlm.flags import add_config_flags, config_from_args

    config, mdlm = _tiny("mdlm", 0)
    _, ar = _tiny("ar", 1)
    chunks = torch.randint(0, 27, (4, 8), generator=torch.Generator().manual_seed(1))
    settings = LikelihoodConfig(steps=3, k=2, window=1.0, is_samples=2, inner=1, batch_size=4, t_samples=2)
    energies = [("coar", AREnergy(ar, 27, "coar")), ("full", AREnergy(ar, 27, "full"))]
    rows, raw = likelihood_table(settings, config, mdlm, chunks, energies)
    names = [row["estimator"] for row in rows]
    assert names[0] == "AR (exact NLL)" and "continuous time" in names[1] and names[2] == "MDLM NELBO (T = 3)"
    assert sum("bound" in name for name in names) == 2 and "coar paper estimate (no log Z)" in names
    assert all(("gap_closed" in row) == (row["kind"] == "upper bound" and i > 2) for i, row in enumerate(rows))
    assert rows[1]["kind"] == "upper bound, reference only" and set(raw) == {"coar", "full"}
    # t(0.975, 30) = 2.0423: 0.1 -+ 0.0204 over 31 sequences
    assert paired_verdict({"bpc": 0.1, "stderr_bpc": 0.01, "sequences": 31}) == "+0.1000 [+0.0796, +0.1204]"
    assert paired_verdict({"bpc": 0.01, "stderr_bpc": 0.01, "sequences": 31}).endswith("no significant difference")
    import argparse

    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser, LikelihoodConfig, defaults={"max_sequences": 64})
    args = parser.parse_args(["--window", "0.5", "--energy-mode", "full"])
    assert config_from_args(LikelihoodConfig, args) == LikelihoodConfig(window=0.5, energy_mode="full",
                                                                         max_sequences=64)
    assert "(default: 0.2)" in " ".join(parser.format_help().split())
    assert parser._option_string_actions["--precision"].choices == ["fp32", "bf16"]
