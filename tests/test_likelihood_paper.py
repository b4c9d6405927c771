"""The EDLM paper's plug-in likelihood estimate (``paper_estimate``), which is not a bound, by enumeration.

On the copy example it sits below the true NLL (0.5 log 2 against log 2 per sequence); with zero energy it is
the MDLM NELBO; for the self-normalised coAR energy it needs no log Z and matches the exact plug-in value, while
a Monte-Carlo log Z pushes it down; the effective sample size of the log Z weights follows its formula, and
``paper_summary`` refuses to report a number when that size is near one.
"""

from __future__ import annotations

import math

import pytest
import torch
from likelihood_toys import L, P_STAR, SCHEDULE, V, wrong_denoiser
from toys import (
    all_sequences,
    conditional_denoiser,
    copy_joint,
    exact_energy,
    pair_energy,
    true_nll,
)

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import corrupt, nelbo_terms, stratified_times
from edlm.likelihood import (
    all_mask_patterns,
    effective_sample_size,
    exact_paper_value,
    mean_and_stderr,
    paper_estimate,
    sequence_index,
)
from edlm.likelihood.report import paper_summary


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
