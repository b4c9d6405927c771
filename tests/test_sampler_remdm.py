"""ReMDM (``sampling/samplers/remdm.py``): eta = 0 is MDLM bit for bit, the loop clock, the posterior against its
closed form, ReMDM's conf schedule, the loop phase boundaries of ReMDM's code, and fixed positions."""

from dataclasses import dataclass

import pytest
import torch
from toys import (
    MASK,
    SCHEDULE,
    OracleDenoiser,
    RecordingStep,
    make_step,
    run_sampler,
    template_with_prompt_and_infill,
)

from edlm.sampling.base import GridStep
from edlm.sampling.samplers.ancestral import AncestralStep
from edlm.sampling.samplers.remdm import RemaskingStep, loop_time


@pytest.mark.parametrize("remask", ["cap", "rescale", "conf-cap"])
@pytest.mark.parametrize("cached", [False, True])
def test_remdm_with_eta_zero_is_mdlm_bit_for_bit(remask, cached):
    L = 20
    x_init = template_with_prompt_and_infill(5, L)
    plain = run_sampler(make_step("ancestral"), OracleDenoiser(L), x_init, 30, cached=cached)
    remdm = run_sampler(make_step("remdm", remask=remask, eta=0.0), OracleDenoiser(L), x_init, 30, cached=cached)
    assert torch.equal(remdm.tokens, plain.tokens) and remdm.nfe == plain.nfe
    moving = run_sampler(make_step("remdm", remask=remask, eta=1.0), OracleDenoiser(L), x_init, 30, cached=cached)
    assert not torch.equal(moving.tokens, plain.tokens)  # the comparison can fail


def test_remdm_conf_ignores_eta_as_remdm_does():
    """ReMDM's conf remasks with softmax(-psi) * sigma_max: eta plays no part (conf-cap is edlm's eta variant)."""
    L = 20
    x_init = template_with_prompt_and_infill(5, L)
    plain = run_sampler(make_step("ancestral"), OracleDenoiser(L), x_init, 30).tokens
    at_zero = run_sampler(make_step("remdm", remask="conf", eta=0.0), OracleDenoiser(L), x_init, 30).tokens
    at_one = run_sampler(make_step("remdm", remask="conf", eta=1.0), OracleDenoiser(L), x_init, 30).tokens
    assert torch.equal(at_zero, at_one) and not torch.equal(at_zero, plain)


@dataclass
class MappedAncestral(GridStep):
    """MDLM's ancestral step run on the remdm loop schedule's clock (the loop's eta = 0 reference)."""

    clock: RemaskingStep
    mask_id: int = MASK

    def plan(self, log_probs, x_t, t, s, generator):
        t_eff, s_eff = self.clock.schedule_times(t, s)
        return AncestralStep(SCHEDULE, MASK).plan(log_probs, x_t, t_eff, s_eff, generator)


def test_remdm_loop_clock_and_eta_zero_is_mdlm_on_that_clock():
    t_on, t_off, alpha_on = 0.55, 0.05, 0.9
    t_held = (1 - alpha_on) / (1 - SCHEDULE.eps)
    tau = torch.tensor([1.0, 0.8, t_on, 0.3, t_off, 0.025, 0.0], dtype=torch.float64)
    mapped = loop_time(tau, t_on, t_off, t_held)
    alpha = SCHEDULE.alpha(mapped)
    assert torch.allclose(mapped[[0, -1]], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(alpha[2:5], torch.full((3,), alpha_on, dtype=torch.float64))  # held in [t_off, t_on]
    assert abs(float(mapped[1]) - (t_held + (0.8 - t_on) * (1 - t_held) / (1 - t_on))) < 1e-15
    assert abs(float(mapped[5]) - t_held / 2) < 1e-15
    L = 16
    x_init = template_with_prompt_and_infill(4, L)
    step = make_step("remdm", remask="loop", eta=0.0)
    for cached in (False, True):
        assert torch.equal(run_sampler(step, OracleDenoiser(L), x_init, 40, cached=cached).tokens,
                           run_sampler(MappedAncestral(step), OracleDenoiser(L), x_init, 40, cached=cached).tokens)


def test_remdm_loop_phase_excludes_t_off_as_remdms_code_does():
    """ReMDM's code runs MDLM for time <= t_off and its loop for t_off < time <= t_on (it used to be t_off <= tau)."""
    step = make_step("remdm", remask="loop", eta=0.05, remask_on=0.55, remask_off=0.05)
    alpha = torch.full((3,), 0.9, dtype=torch.float64)
    sigma = step.remask_probability(alpha, alpha, torch.tensor([0.55, 0.3, 0.05], dtype=torch.float64))
    assert sigma.tolist() == [0.05, 0.05, 0.0]


def one_remdm_step(remask, eta, t, s, B=40_000, L=8, alpha_t=None, seed=0, psi=None):
    """One step from a random x_t where each position is visible with probability alpha_t (nothing fixed)."""
    generator = torch.Generator().manual_seed(seed)
    step = RemaskingStep(SCHEDULE, MASK, remask, eta)
    alpha_t = float(SCHEDULE.alpha(torch.tensor(t, dtype=torch.float64))) if alpha_t is None else alpha_t
    visible = torch.rand(B, L, generator=generator, dtype=torch.float64) < alpha_t
    x_t = torch.where(visible, torch.randint(0, 27, (B, L), generator=generator), MASK)
    step.fixed = torch.zeros(B, L, dtype=torch.bool)
    step.confidence = psi.expand(B, L).clone() if psi is not None else torch.zeros(B, L, dtype=torch.float64)
    t_row, s_row = torch.full((B,), t, dtype=torch.float64), torch.full((B,), s, dtype=torch.float64)
    log_probs = OracleDenoiser(L)(x_t)
    plan = step.plan(log_probs, x_t, t_row, s_row, generator)
    x0 = torch.where(x_t == MASK, log_probs.argmax(-1), x_t)
    return x_t, step.apply(x_t, x0, plan, t_row, s_row, generator).x_s


@pytest.mark.parametrize("remask, eta, t, s, sigma", [
    ("cap", 0.1, 0.5, 0.4, 0.1),
    ("rescale", 0.5, 0.5, 0.4, 0.5 * (1 - (1 - 0.999 * 0.4)) / (1 - 0.999 * 0.5)),
    ("loop", 0.05, 0.3, 0.25, 0.05),  # loop phase: alpha held at 0.9, sigma = min(eta, (1 - 0.9) / 0.9)
])
def test_remdm_posterior_keeps_the_forward_marginal(remask, eta, t, s, sigma):
    """Closed form: a revealed token goes back with probability sigma; a masked one is revealed with probability
    (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t); so the visible fraction goes from alpha_t to alpha_s."""
    if remask == "loop":
        alpha_t = alpha_s = 0.9
    else:
        alpha_t, alpha_s = 1 - 0.999 * t, 1 - 0.999 * s
    x_t, x_s = one_remdm_step(remask, eta, t, s, alpha_t=alpha_t)
    visible_t, visible_s = x_t != MASK, x_s != MASK
    remasked = float((visible_t & ~visible_s).sum() / visible_t.sum())
    revealed = float((~visible_t & visible_s).sum() / (~visible_t).sum())
    assert abs(remasked - sigma) < 0.006, remasked
    assert abs(revealed - (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t)) < 0.006, revealed
    assert abs(float(visible_s.double().mean()) - alpha_s) < 0.006
    kept = visible_t & visible_s
    assert torch.equal(x_s[kept], x_t[kept])  # a token that stays visible keeps its value


@pytest.mark.parametrize("remask, budget", [("conf", 0.8), ("conf-cap", 0.6)])
def test_remdm_conf_remasks_the_least_confident_first(remask, budget):
    """sigma^(l) = softmax(-psi)_l * sigma_max (ReMDM's conf) or * min(eta, sigma_max) (conf-cap) over the revealed
    positions; masked ones: MDLM. Here sigma_max = (1 - alpha_s) / alpha_t = 0.8 > eta = 0.6. (Before the fix
    conf used the cap's min(eta, sigma_max): at most eta = 0.02 tokens per row and step at the default.)"""
    L, eta, t, s = 4, 0.6, 0.5, 0.4
    psi = torch.tensor([[0.05, 0.95, 0.5, 0.9]], dtype=torch.float64)
    x_t, x_s = one_remdm_step(remask, eta, t, s, B=60_000, L=L, alpha_t=1.0, psi=psi)  # all visible
    rate = ((x_t != MASK) & (x_s == MASK)).double().mean(0)  # (L,)
    expected = torch.softmax(-psi[0], 0) * budget
    assert torch.allclose(rate, expected, atol=0.006), (rate, expected)
    assert rate[0] > rate[2] > rate[1]


@pytest.mark.parametrize("remask", ["cap", "rescale", "conf", "conf-cap", "loop"])
def test_remdm_may_change_revealed_tokens_but_never_prompt_or_infill(remask):
    L, B, steps = 16, 4, 40
    x_init = template_with_prompt_and_infill(B, L)
    fixed = x_init != MASK
    step = RecordingStep(make_step("remdm", remask=remask, eta=1.0, remask_on=0.9, remask_off=0.1))
    final = run_sampler(step, OracleDenoiser(L), x_init, steps).tokens
    seen = step.seen + [final]
    went_back = 0
    for before, after in zip(seen[:-1], seen[1:]):
        assert torch.equal(after[fixed], x_init[fixed])
        went_back += int(((before != MASK) & (after == MASK)).sum())
    assert went_back > 0 and not (final == MASK).any()
