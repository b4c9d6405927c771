"""remdm, semi-ar and threshold on the step API: network-call counts, which positions may change, prompt/infill
positions kept, remdm's posterior against its closed form, eta = 0 == MDLM bit for bit, the zero energy == each
plain sampler bit for bit, and importance sampling moving each sampler to an exact target (V = 2, L = 3)."""

import dataclasses
import itertools

import pytest
import torch
from test_samplers import MASK, OracleDenoiser, tiny_denoiser_run
from toys import (
    conditional_denoiser,
    exact_energy,
    random_joint,
    sequence_index,
    total_variation,
)

from edlm.config import ConfigError, SampleConfig
from edlm.data import ALPHABET
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.energy.base import ZeroEnergy
from edlm.sampling import SAMPLERS
from edlm.sampling.base import StepOutput, per_row
from edlm.sampling.generate import build_template, generate
from edlm.sampling.importance import ImportanceProposal
from edlm.sampling.loop import MaskedDiffusionSampler
from edlm.sampling.mdlm import AncestralStep, FactorizedProposal
from edlm.sampling.remdm import RemaskingStep, loop_time
from edlm.sampling.threshold import ThresholdStep, top_probability

SCHEDULE = LogLinearSchedule(1e-3)


def make_step(name, proposal, mask_id=MASK, **knobs):
    """A registry step built from a SampleConfig with ``knobs`` (field names)."""
    return SAMPLERS[name](SCHEDULE, mask_id, proposal, SampleConfig(sampler=name, **knobs))


def run(step, denoiser, x_init, steps, seed=0, cached=True, mask_id=MASK):
    sampler = MaskedDiffusionSampler(denoiser, SCHEDULE, mask_id, steps, cached=cached, step=step)
    return sampler.sample(x_init, torch.Generator().manual_seed(seed))


def spy_proposal(seen, base=None):
    """A proposal that records every x_t it is asked about (the sequence before each step)."""
    base = base or FactorizedProposal(MASK)

    def spy(log_probs, x_t, t, generator):
        seen.append(x_t.clone())
        return base(log_probs, x_t, t, generator)

    spy.reuse_allowed, spy.stats = (lambda t: False), dict
    return spy


def template_with_prompt_and_infill(B, L):
    x_init = build_template(B, L, prompt="to be ")[0]
    x_init[:, L - 4] = 1  # an infill position among the blanks
    return x_init


def distribution(tokens, V):
    return torch.bincount(sequence_index(tokens, V), minlength=V ** tokens.shape[1]).double() / tokens.shape[0]


def test_registry_and_config_know_the_three_samplers():
    assert {"remdm", "semi-ar", "threshold"} <= set(SAMPLERS)
    SampleConfig().validate()
    for name, bad, flag in (("eta", 1.5, "--eta"), ("remask_on", 0.01, "--remask-on"), ("block", 0, "--block"),
                            ("threshold", 1.1, "--threshold"), ("remask_alpha_on", 1.0, "--remask-alpha-on"),
                            ("inner", "semi-ar", "--inner")):
        with pytest.raises(ConfigError, match=flag):
            dataclasses.replace(SampleConfig(), **{name: bad}).validate()


# ---------------------------------------------------------------- remdm

@pytest.mark.parametrize("remask", ["cap", "rescale", "conf"])
@pytest.mark.parametrize("cached", [False, True])
def test_remdm_with_eta_zero_is_mdlm_bit_for_bit(remask, cached):
    L = 20
    x_init = template_with_prompt_and_infill(5, L)
    plain = run(AncestralStep(SCHEDULE, MASK, FactorizedProposal(MASK)), OracleDenoiser(L), x_init, 30,
                cached=cached)
    remdm = run(make_step("remdm", FactorizedProposal(MASK), remask=remask, eta=0.0), OracleDenoiser(L), x_init,
                30, cached=cached)
    assert torch.equal(remdm.tokens, plain.tokens) and remdm.nfe == plain.nfe
    moving = run(make_step("remdm", FactorizedProposal(MASK), remask=remask, eta=1.0), OracleDenoiser(L),
                 x_init, 30, cached=cached)
    assert not torch.equal(moving.tokens, plain.tokens)  # the comparison can fail


@dataclasses.dataclass
class MappedAncestral:
    """MDLM's ancestral step run on the remdm loop schedule's clock (the loop's eta = 0 reference)."""

    proposal: object
    clock: RemaskingStep
    reuses_x0: bool = True

    def plan_steps(self, steps, length):
        return steps

    def step(self, log_probs, x_t, t, s, generator):
        t, s = per_row(t, x_t.shape[0], x_t.device), per_row(s, x_t.shape[0], x_t.device)
        t_eff, s_eff = self.clock.schedule_times(t, s)
        out = AncestralStep(SCHEDULE, MASK, self.proposal).step(log_probs, x_t, t_eff, s_eff, generator)
        return StepOutput(out.x_s, out.x0, out.changed_rows, s)


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
    step = make_step("remdm", FactorizedProposal(MASK), remask="loop", eta=0.0)
    reference = MappedAncestral(FactorizedProposal(MASK), step)
    for cached in (False, True):
        assert torch.equal(run(step, OracleDenoiser(L), x_init, 40, cached=cached).tokens,
                           run(reference, OracleDenoiser(L), x_init, 40, cached=cached).tokens)


def one_remdm_step(remask, eta, t, s, B=40_000, L=8, alpha_t=None, seed=0, psi=None):
    """One step from a random x_t where each position is visible with probability alpha_t (nothing fixed)."""
    generator = torch.Generator().manual_seed(seed)
    step = RemaskingStep(SCHEDULE, MASK, FactorizedProposal(MASK), remask, eta)
    alpha_t = float(SCHEDULE.alpha(torch.tensor(t, dtype=torch.float64))) if alpha_t is None else alpha_t
    visible = torch.rand(B, L, generator=generator, dtype=torch.float64) < alpha_t
    x_t = torch.where(visible, torch.randint(0, 27, (B, L), generator=generator), MASK)
    step.fixed = torch.zeros(B, L, dtype=torch.bool)
    step.confidence = psi.expand(B, L).clone() if psi is not None else torch.zeros(B, L, dtype=torch.float64)
    t_row, s_row = torch.full((B,), t, dtype=torch.float64), torch.full((B,), s, dtype=torch.float64)
    out = step.step(OracleDenoiser(L)(x_t), x_t, t_row, s_row, generator)
    return x_t, out.x_s


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


def test_remdm_conf_remasks_the_least_confident_first():
    """sigma^(l) = softmax(-psi)_l * min(eta, sigma_max) over the revealed positions; masked ones: MDLM."""
    L, eta, t, s = 4, 0.6, 0.5, 0.4
    psi = torch.tensor([[0.05, 0.95, 0.5, 0.9]], dtype=torch.float64)
    x_t, x_s = one_remdm_step("conf", eta, t, s, B=60_000, L=L, alpha_t=1.0, psi=psi)  # all visible
    rate = ((x_t != MASK) & (x_s == MASK)).double().mean(0)  # (L,)
    expected = torch.softmax(-psi[0], 0) * eta  # sigma_max = (1 - alpha_s) / alpha_t = 0.8 > eta
    assert torch.allclose(rate, expected, atol=0.006), (rate, expected)
    assert rate[0] > rate[2] > rate[1]


@pytest.mark.parametrize("remask", ["cap", "rescale", "conf", "loop"])
def test_remdm_may_change_revealed_tokens_but_never_prompt_or_infill(remask):
    L, B, steps = 16, 4, 40
    x_init = template_with_prompt_and_infill(B, L)
    fixed = x_init != MASK
    seen = []
    step = make_step("remdm", spy_proposal(seen), remask=remask, eta=1.0, remask_on=0.9, remask_off=0.1)
    final = run(step, OracleDenoiser(L), x_init, steps).tokens
    seen.append(final)
    went_back = 0
    for before, after in zip(seen[:-1], seen[1:]):
        assert torch.equal(after[fixed], x_init[fixed])
        went_back += int(((before != MASK) & (after == MASK)).sum())
    assert went_back > 0 and not (final == MASK).any()


# ---------------------------------------------------------------- threshold

def test_threshold_reveals_every_confident_position_and_at_least_one():
    L, B = 10, 500
    x_t = torch.full((B, L), MASK)
    x_t[:, :2] = 4
    log_probs = OracleDenoiser(L)(x_t)
    scores = top_probability(log_probs, x_t, MASK)
    for tau in (0.0, 0.3, 0.6, 1.0):
        step = ThresholdStep(MASK, FactorizedProposal(MASK), tau)
        out = step.step(log_probs, x_t, torch.ones(B, dtype=torch.float64), 0.0, torch.Generator().manual_seed(0))
        revealed = (out.x_s != MASK) & (x_t == MASK)
        above = (scores > tau) & (x_t == MASK)
        best = torch.zeros_like(above).scatter_(-1, scores.argmax(-1, keepdim=True), True)
        assert torch.equal(revealed, above | best)
        assert (revealed.sum(-1) >= 1).all() and torch.equal(out.x_s[revealed], out.x0[revealed])
        assert torch.allclose(out.t_s, 1 - revealed.sum(-1).double() / 8)  # masked fraction left


@pytest.mark.parametrize("cached", [False, True])
def test_threshold_call_counts(cached):
    L, B = 12, 3
    x_init = template_with_prompt_and_infill(B, L)
    masked = int((x_init[0] == MASK).sum())
    one_at_a_time = run(make_step("threshold", FactorizedProposal(MASK), threshold=1.0), OracleDenoiser(L),
                        x_init, 999, cached=cached)
    assert one_at_a_time.nfe == masked and one_at_a_time.nfe_rows == masked  # steps (999) does not apply
    at_once = run(make_step("threshold", FactorizedProposal(MASK), threshold=0.0), OracleDenoiser(L), x_init, 999,
                  cached=cached)
    assert at_once.nfe == 1
    seen = []
    middle = run(make_step("threshold", spy_proposal(seen), threshold=0.5), OracleDenoiser(L), x_init, 999,
                 cached=cached)
    assert middle.nfe == len(seen) <= masked
    for before, after in zip(seen, seen[1:] + [middle.tokens]):
        visible = before != MASK
        assert torch.equal(after[visible], before[visible])  # revealed tokens stay
        assert ((after != MASK).sum(-1) > visible.sum(-1))[(before == MASK).any(-1)].all()  # >= 1 per row


def threshold_law(denoiser, V, L, tau):
    """Exact output law of the threshold sampler by enumeration: from each state, the chosen positions (above tau,
    or else the most confident) take independent draws from mu_i(. | x_t); (V^L,) float64."""
    law = torch.zeros(V ** L, dtype=torch.float64)

    def walk(x_t, p):
        masked = x_t[0] == V
        if not masked.any():
            law[sequence_index(x_t, V)] += p
            return
        log_probs = denoiser(x_t)
        scores = top_probability(log_probs, x_t, V)[0]
        chosen = (scores > tau) & masked
        chosen[scores.argmax()] = True
        positions = chosen.nonzero().flatten().tolist()
        for tokens in itertools.product(range(V), repeat=len(positions)):
            x_s, q = x_t.clone(), p
            for position, token in zip(positions, tokens):
                x_s[0, position] = token
                q *= float(log_probs[0, position, token].exp())
            walk(x_s, q)

    walk(torch.full((1, L), V), 1.0)
    return law


@pytest.mark.parametrize("tau", [0.0, 0.6, 1.0])
def test_threshold_law_matches_enumeration(tau):
    V, L, draws = 2, 3, 40_000
    denoiser = conditional_denoiser(random_joint(V, L, seed=3), V, L)
    exact = threshold_law(denoiser, V, L, tau)
    drawn = run(make_step("threshold", FactorizedProposal(V), mask_id=V, threshold=tau), denoiser,
                torch.full((draws, L), V), 1, mask_id=V).tokens
    assert total_variation(distribution(drawn, V), exact) < 0.015
    if tau == 0.0:  # everything at once: the product of the fully masked marginals
        marginals = denoiser(torch.full((1, L), V))[0, :, :V].exp()  # (L, V)
        product = torch.tensor([float(marginals[torch.arange(L), torch.tensor(x)].prod())
                                for x in itertools.product(range(V), repeat=L)], dtype=torch.float64)
        assert torch.allclose(exact, product)


# ---------------------------------------------------------------- semi-ar

def test_semi_ar_with_one_token_blocks_samples_left_to_right():
    """block = 1: position i is drawn from mu_i(. | x_<i, later masked), so the law is the product of these
    (enumerated); with the exact conditionals of a joint q that product is q itself."""
    V, L, draws = 2, 3, 40_000
    q = random_joint(V, L, seed=3)
    denoiser = conditional_denoiser(q, V, L)
    exact = torch.zeros(V ** L, dtype=torch.float64)
    for tokens in itertools.product(range(V), repeat=L):
        x_t, p = torch.full((1, L), V), 1.0
        for position, token in enumerate(tokens):
            p *= float(denoiser(x_t)[0, position, token].exp())
            x_t[0, position] = token
        exact[sequence_index(x_t, V)] = p
    assert torch.allclose(exact, q)
    for inner in ("ancestral", "confidence", "first-hitting"):
        drawn = run(make_step("semi-ar", FactorizedProposal(V), mask_id=V, block=1, inner=inner), denoiser,
                    torch.full((draws, L), V), 6, mask_id=V).tokens
        assert total_variation(distribution(drawn, V), exact) < 0.015, inner
    plain = run(make_step("ancestral", FactorizedProposal(V), mask_id=V), denoiser, torch.full((draws, L), V), 1,
                mask_id=V).tokens
    assert total_variation(distribution(plain, V), exact) > 0.05  # one MDLM step is not exact: the test can fail



@pytest.mark.parametrize("inner", ["ancestral", "confidence", "first-hitting", "threshold", "remdm"])
def test_semi_ar_fills_blocks_left_to_right_and_keeps_prompt_positions(inner):
    L, B, block = 16, 4, 5  # blocks [0, 5), [5, 10), [10, 15), [15, 16): the last one is short
    x_init = template_with_prompt_and_infill(B, L)
    fixed = x_init != MASK
    seen = []
    step = make_step("semi-ar", spy_proposal(seen), block=block, inner=inner, remask="rescale", eta=1.0)
    final = run(step, OracleDenoiser(L), x_init, 12).tokens
    seen.append(final)
    position_block = torch.arange(L) // block
    went_back = 0
    for before, after in zip(seen[:-1], seen[1:]):
        assert torch.equal(after[fixed], x_init[fixed])
        went_back += int(((before != MASK) & (after == MASK)).sum())
        for row in range(B):
            masked = before[row] == MASK
            if not masked.any():
                continue
            current = int(position_block[masked].min())
            changed = after[row] != before[row]
            assert (position_block[changed] == current).all()  # only the current block moves (remasks too)
            assert not (before[row][position_block < current] == MASK).any()  # earlier blocks complete
    assert not (final == MASK).any()
    assert (went_back > 0) == (inner == "remdm")  # an inner remdm remasks, inside the current block only


@pytest.mark.parametrize("cached", [False, True])
def test_semi_ar_call_counts(cached):
    L, B = 12, 3
    x_init = torch.full((B, L), MASK)
    x_init[:, :4] = 2  # the first block is all prompt: skipped without a call
    one_step_per_block = run(make_step("semi-ar", FactorizedProposal(MASK), block=4, inner="ancestral"),
                             OracleDenoiser(L), x_init, 3, cached=cached)
    assert one_step_per_block.nfe == 2  # each block finishes in its one step (local time 1 -> 0)
    first_hitting = run(make_step("semi-ar", FactorizedProposal(MASK), block=4, inner="first-hitting"),
                        OracleDenoiser(L), x_init, 1, cached=cached)
    assert first_hitting.nfe == 8 and first_hitting.nfe_rows == 8  # one reveal per call and row
    step = make_step("semi-ar", FactorizedProposal(MASK), block=4, inner="ancestral")
    assert step.plan_steps(10, L) == 9  # 10 steps over 3 blocks: 3 each
    many = run(step, OracleDenoiser(L), x_init, 10, cached=cached)
    assert many.nfe <= 9 and not (many.tokens == MASK).any()


# ---------------------------------------------------------------- importance sampling with each

VARIANTS = [
    ("remdm", {"remask": "cap", "eta": 0.5}),
    ("remdm", {"remask": "rescale", "eta": 0.5}),
    ("remdm", {"remask": "loop", "eta": 0.5, "remask_on": 0.7, "remask_off": 0.3}),
    ("threshold", {"threshold": 0.7}),
    ("semi-ar", {"block": 2, "inner": "ancestral"}),
    ("semi-ar", {"block": 2, "inner": "threshold"}),
]


@pytest.mark.parametrize("name, knobs", VARIANTS)
@pytest.mark.parametrize("cached", [False, True])
def test_zero_energy_reproduces_each_plain_sampler_bit_for_bit(name, knobs, cached):
    L = 20
    x_init = template_with_prompt_and_infill(5, L)
    plain = run(make_step(name, FactorizedProposal(MASK), **knobs), OracleDenoiser(L), x_init, 30,
                cached=cached).tokens
    zero = ImportanceProposal(FactorizedProposal(MASK), ZeroEnergy(), num_candidates=4, window=1.0)
    assert torch.equal(run(make_step(name, zero, **knobs), OracleDenoiser(L), x_init, 30, cached=cached).tokens,
                       plain)


@pytest.mark.parametrize("name, knobs", VARIANTS)
def test_importance_sampling_moves_each_sampler_to_the_target(name, knobs):
    """Wrong denoiser, exact energy for p*: with k = 64 the x0 handed to the step is ~ p*(x0 | x_t). These steps
    choose which positions to reveal (or remask) without looking at x0's values, so their output law is p*."""
    V, L, draws, steps = 2, 3, 20_000, 4
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    wrong = conditional_denoiser(random_joint(V, L, seed=8, sharpness=0.7), V, L)
    x_init = torch.full((draws, L), V)
    plain = run(make_step(name, FactorizedProposal(V), mask_id=V, **knobs), wrong, x_init, steps, mask_id=V)
    edlm = ImportanceProposal(FactorizedProposal(V), exact_energy(p_star, V), num_candidates=64, window=1.0)
    corrected = run(make_step(name, edlm, mask_id=V, **knobs), wrong, x_init, steps, mask_id=V, seed=1)
    plain_tv = total_variation(distribution(plain.tokens, V), p_star)
    edlm_tv = total_variation(distribution(corrected.tokens, V), p_star)
    assert edlm_tv < min(0.04, plain_tv / 2), (plain_tv, edlm_tv)
    assert corrected.extra["energy_calls"] >= 1


# ---------------------------------------------------------------- through generate (the CLI's path)

@pytest.mark.parametrize("inner", ["ancestral", "cached", "first-hitting", "confidence", "remdm", "threshold"])
def test_generate_semi_ar_with_every_inner_sampler(inner):
    config, model = tiny_denoiser_run()
    for prompt, infill in (("to be ", None), (None, "ab _ cd")):
        sample = SampleConfig(num=3, steps=6, batch_size=2, sampler="semi-ar", inner=inner, block=3, prompt=prompt,
                              infill=infill, remask="rescale", eta=0.5)
        texts, _ = generate(model, config, sample, ZeroEnergy())
        assert texts == generate(model, config, sample)[0]
        template = build_template(1, 8, prompt, infill)[0][0].tolist()
        for text in texts:
            assert len(text) == 8 and all(text[i] == ALPHABET[tok] for i, tok in enumerate(template) if tok != MASK)
