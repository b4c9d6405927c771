"""Monte-Carlo likelihood estimators (``edlm.likelihood.estimators``) against brute-force enumeration.

On the tiny problem of ``likelihood_toys`` (V = 2, L = 3, float64, fixed seeds): log Z estimates and their
jackknife, the continuous-time MDLM NELBO, ``edlm_bound`` (with and without the greedy final fill) and
``mdlm_discrete_nelbo`` must agree with the exact values of ``edlm.likelihood.exact`` within a few standard
errors and sit above the exact NLL; and every estimator runs on the denoiser's device and answers on the CPU.
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
from toys import all_sequences, exact_energy, pair_energy, total_variation

from edlm.diffusion.subs import corrupt, nelbo_terms, stratified_times
from edlm.likelihood import (
    StepPlan,
    edlm_bound,
    exact_discrete_elbo,
    exact_mdlm_nelbo,
    exact_sampler_distribution,
    log_z_estimate,
    make_step_plan,
    mdlm_discrete_nelbo,
    mean_and_stderr,
    paper_estimate,
    sample_from_denoiser,
)


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


# ---------------------------------------------------------------------------------- discrete bounds


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
