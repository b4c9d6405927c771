"""Samplers on the step API (first-hitting, confidence): call counts, absorbing reveals, fixed prompt positions,
exactness by enumeration on V = 2-3, L = 2-3 toys, and importance sampling through each step."""

import itertools
import math

import pytest
import torch
from test_samplers import MASK, OracleDenoiser
from toys import (
    conditional_denoiser,
    exact_energy,
    random_joint,
    sequence_index,
    total_variation,
)

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.energy.base import ZeroEnergy
from edlm.sampling import SAMPLERS
from edlm.sampling.confidence import ConfidenceStep, confidence_scores
from edlm.sampling.first_hitting import FirstHittingStep
from edlm.sampling.generate import build_template
from edlm.sampling.importance import ImportanceProposal
from edlm.sampling.loop import MaskedDiffusionSampler
from edlm.sampling.mdlm import AncestralStep, FactorizedProposal

SCHEDULE = LogLinearSchedule(1e-3)


def make_step(name, mask_id, proposal, order="entropy", order_temp=0.0):
    if name == "first-hitting":
        return FirstHittingStep(SCHEDULE, mask_id, proposal)
    if name == "confidence":
        return ConfidenceStep(SCHEDULE, mask_id, proposal, order, order_temp)
    return AncestralStep(SCHEDULE, mask_id, proposal)


def run(name, denoiser, x_init, steps, proposal, seed=0, cached=True, mask_id=MASK, **knobs):
    step = make_step(name, mask_id, proposal, **knobs)
    sampler = MaskedDiffusionSampler(denoiser, SCHEDULE, mask_id, steps, cached=cached, step=step)
    return sampler.sample(x_init, torch.Generator().manual_seed(seed))


def distribution(tokens, V):
    return torch.bincount(sequence_index(tokens, V), minlength=V ** tokens.shape[1]).double() / tokens.shape[0]


def random_order_distribution(denoiser, V, L):
    """Exact output law of "reveal one uniformly chosen masked position per step to a draw from mu_i(. | x_t)"
    (ancestral as T -> infinity), by enumerating every order and every token; (V^L,) float64."""
    law = torch.zeros(V ** L, dtype=torch.float64)
    for order in itertools.permutations(range(L)):
        for tokens in itertools.product(range(V), repeat=L):
            x_t, p = torch.full((1, L), V), 1.0 / math.factorial(L)
            for position in order:
                p *= float(denoiser(x_t)[0, position, tokens[position]].exp())
                x_t[0, position] = tokens[position]
            law[sequence_index(torch.tensor([tokens]), V)] += p
    return law


def test_registry_names_every_sampler():
    assert {"ancestral", "cached", "first-hitting", "confidence"} <= set(SAMPLERS)


@pytest.mark.parametrize("name", ["first-hitting", "confidence", "ancestral"])
def test_reveals_are_absorbing_and_prompt_positions_never_change(name):
    L, B = 16, 3
    x_init = build_template(B, L, prompt="to be ")[0]
    x_init[:, 10] = 1  # an infill position after the blanks
    fixed = x_init != MASK
    seen = []
    base = FactorizedProposal(MASK)

    def spy(log_probs, x_t, t, generator):
        seen.append(x_t.clone())
        return base(log_probs, x_t, t, generator)

    spy.reuse_allowed, spy.stats = (lambda t: False), dict
    final = run(name, OracleDenoiser(L), x_init, 12, spy, order="max-prob").tokens
    seen.append(final)
    for before, after in zip(seen[:-1], seen[1:]):
        visible = before != MASK
        assert torch.equal(after[visible], before[visible])
    assert torch.equal(final[fixed], x_init[fixed]) and not (final == MASK).any()


def test_first_hitting_makes_one_call_per_masked_position():
    L, B = 20, 4
    result = run("first-hitting", OracleDenoiser(L), torch.full((B, L), MASK), 999, FactorizedProposal(MASK))
    assert result.nfe == 20 and result.nfe_rows == 20  # steps (999) does not apply
    template = build_template(B, L, prompt="hello")[0]
    result = run("first-hitting", OracleDenoiser(L), template, 999, FactorizedProposal(MASK))
    assert result.nfe == 15


def test_first_hitting_clock_follows_the_schedule():
    """With m masked, s = t * u^(1/m): E[s / t] = m / (m + 1)."""
    L, B = 4, 50_000
    step = FirstHittingStep(SCHEDULE, MASK, FactorizedProposal(MASK))
    x_t = torch.full((B, L), MASK)
    log_probs = OracleDenoiser(L)(x_t)
    out = step.step(log_probs, x_t, torch.full((B,), 0.8, dtype=torch.float64), 0.0,
                    torch.Generator().manual_seed(0))
    assert abs(float((out.t_s / 0.8).mean()) - 4 / 5) < 0.005
    assert int((out.x_s != MASK).sum()) == B  # one reveal per row


def test_first_hitting_has_the_ancestral_law_as_steps_grow():
    V, L, draws = 2, 3, 40_000
    denoiser = conditional_denoiser(random_joint(V, L, seed=1), V, L)
    wrong = conditional_denoiser(random_joint(V, L, seed=3), V, L)  # the model, not the data law
    exact = random_order_distribution(wrong, V, L)
    x_init = torch.full((draws, L), V)
    first_hitting = run("first-hitting", wrong, x_init, 1, FactorizedProposal(V), mask_id=V).tokens
    assert total_variation(distribution(first_hitting, V), exact) < 0.015
    ancestral = run("ancestral", wrong, x_init, 400, FactorizedProposal(V), mask_id=V, seed=1).tokens
    assert total_variation(distribution(ancestral, V), exact) < 0.02
    few_steps = run("ancestral", wrong, x_init, 1, FactorizedProposal(V), mask_id=V, seed=2).tokens
    assert total_variation(distribution(few_steps, V), exact) > 0.05  # the comparison can fail
    del denoiser


def test_confidence_reveals_the_best_scored_positions_and_the_schedule_count():
    L, B = 10, 4000
    x_t = torch.full((B, L), MASK)
    x_t[:, :3] = 5
    log_probs = OracleDenoiser(L)(x_t)
    t, s = torch.full((B,), 0.6, dtype=torch.float64), torch.full((B,), 0.45, dtype=torch.float64)
    for order in ("max-prob", "margin", "entropy"):
        step = ConfidenceStep(SCHEDULE, MASK, FactorizedProposal(MASK), order)
        out = step.step(log_probs, x_t, t, s, torch.Generator().manual_seed(1))
        scores = confidence_scores(log_probs, out.x0, order)
        revealed = (out.x_s != MASK) & (x_t == MASK)
        still = out.x_s == MASK
        worst_revealed = scores.masked_fill(~revealed, float("inf")).min(-1).values
        best_left = scores.masked_fill(~still, float("-inf")).max(-1).values
        assert (worst_revealed >= best_left).all()
        # n_t = 7 * (alpha_s - alpha_t) / (1 - alpha_t) = 7 * 0.15 / 0.6 = 1.75 on average (log-linear: (t - s) / t)
        assert abs(float(revealed.sum(-1).double().mean()) - 1.75) < 0.03
        assert set(revealed.sum(-1).tolist()) == {1, 2}


def test_confidence_order_temperature_randomises_the_order():
    L = 12
    greedy = [run("confidence", OracleDenoiser(L), torch.full((1, L), MASK), 12, FactorizedProposal(MASK),
                  seed=seed, order="entropy").tokens for seed in range(2)]
    noisy = [run("confidence", OracleDenoiser(L), torch.full((1, L), MASK), 12, FactorizedProposal(MASK),
                 seed=seed, order="entropy", order_temp=5.0).tokens for seed in range(2)]
    assert all((g != MASK).all() for g in greedy + noisy)
    assert not torch.equal(noisy[0], noisy[1])


@pytest.mark.parametrize("name", ["first-hitting", "confidence"])
@pytest.mark.parametrize("cached", [False, True])
def test_zero_energy_reproduces_each_plain_sampler_bit_for_bit(name, cached):
    x_init = torch.full((5, 20), MASK)
    plain = run(name, OracleDenoiser(20), x_init, 30, FactorizedProposal(MASK), cached=cached).tokens
    zero = ImportanceProposal(FactorizedProposal(MASK), ZeroEnergy(), num_candidates=4, window=1.0)
    assert torch.equal(run(name, OracleDenoiser(20), x_init, 30, zero, cached=cached).tokens, plain)


@pytest.mark.parametrize("name, steps", [("first-hitting", 1), ("confidence", 2), ("ancestral", 2)])
def test_importance_sampling_moves_each_sampler_to_the_target(name, steps):
    """Wrong denoiser, exact energy for p*: with k = 64 the x0 handed to the step is ~ p*(x0 | x_t). A step whose
    choice of positions ignores x0's values (first-hitting, ancestral, confidence by entropy) then outputs p*."""
    V, L, draws = 2, 3, 30_000
    p_star = random_joint(V, L, seed=5, sharpness=2.0)
    wrong = conditional_denoiser(random_joint(V, L, seed=8, sharpness=0.7), V, L)
    x_init = torch.full((draws, L), V)
    plain = run(name, wrong, x_init, steps, FactorizedProposal(V), mask_id=V).tokens
    edlm = ImportanceProposal(FactorizedProposal(V), exact_energy(p_star, V), num_candidates=64, window=1.0)
    corrected = run(name, wrong, x_init, steps, edlm, mask_id=V).tokens
    plain_tv, edlm_tv = total_variation(distribution(plain, V), p_star), total_variation(distribution(corrected, V),
                                                                                           p_star)
    assert edlm_tv < min(0.04, plain_tv / 2), (plain_tv, edlm_tv)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_generate_runs_every_registered_sampler_with_prompt_infill_and_energy(sampler):
    from test_samplers import tiny_denoiser_run

    from edlm.config import SampleConfig
    from edlm.data import ALPHABET
    from edlm.sampling.generate import generate

    config, model = tiny_denoiser_run()
    for prompt, infill, energy in (("to be ", None, None), (None, "ab _ cd", ZeroEnergy())):
        sample = SampleConfig(num=3, steps=6, batch_size=2, sampler=sampler, prompt=prompt, infill=infill)
        texts, result = generate(model, config, sample, energy)
        plain, _ = generate(model, config, sample)
        assert texts == plain  # the zero energy changes nothing
        template = build_template(1, 8, prompt, infill)[0][0].tolist()
        for text in texts:
            assert len(text) == 8
            assert all(text[i] == ALPHABET[tok] for i, tok in enumerate(template) if tok != MASK)


def test_sample_config_documents_and_checks_every_knob():
    import dataclasses

    from edlm.config import ConfigError, SampleConfig

    fields = dataclasses.fields(SampleConfig)
    assert all(f.metadata.get("help") for f in fields)
    assert {f.name: f.default for f in fields if f.name in ("steps", "k", "window")} == \
        {"steps": 256, "k": 2, "window": 0.2}
    SampleConfig().validate()
    for name, bad, flag in (("window", 1.5, "--window"), ("top_p", 0.0, "--top-p"), ("k", 0, "--k"),
                            ("order_temp", -1.0, "--order-temp")):
        with pytest.raises(ConfigError, match=flag):
            dataclasses.replace(SampleConfig(), **{name: bad})


class RevealLate(LogLinearSchedule):
    """Reveal probability 0 until the step that ends below t = 0.25 (t_7 = 0.3 -> t_8 = 0.2 on a 10-step grid),
    then 1: a path whose network-call counts can be written down by hand."""

    def reveal_probability(self, t, s):
        return torch.where(s < 0.25, 1.0, 0.0).double()


@pytest.mark.parametrize("name, cached, calls", [
    ("ancestral", False, 8),  # steps 0..7 call the network; everything is revealed at step 7, the loop stops
    ("ancestral", True, 1),  # nothing changes before step 7: one call, reused up to and including step 7
    ("confidence", False, 8),  # n_t = floor(m * 0 + u) = 0 until step 7, then floor(m * 1 + u) = m
    ("confidence", True, 1),
    ("first-hitting", False, 12),  # its own clock: one position per call, L = 12 calls
    ("first-hitting", True, 12),  # every row changes at every call: the cache saves nothing
])
def test_network_call_counts_by_hand(name, cached, calls):
    oracle = OracleDenoiser(12)
    step = make_step(name, MASK, FactorizedProposal(MASK))
    step.schedule = RevealLate(1e-3)
    sampler = MaskedDiffusionSampler(oracle, RevealLate(1e-3), MASK, 10, cached=cached, step=step)
    result = sampler.sample(torch.full((3, 12), MASK), torch.Generator().manual_seed(0))
    assert not (result.tokens == MASK).any()
    assert oracle.calls == result.nfe == calls
