"""The first-hitting sampler (``sampling/samplers/first_hitting.py``): one call per masked position, its clock,
the ancestral law as T grows (enumeration), absorbing reveals and fixed prompt positions."""

import itertools
import math

import torch
from toys import (
    MASK,
    OracleDenoiser,
    RecordingStep,
    conditional_denoiser,
    distribution,
    make_step,
    random_joint,
    run_sampler,
    sequence_index,
    template_with_prompt_and_infill,
    total_variation,
)

from edlm.sampling.generate import build_template


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


def test_reveals_are_absorbing_and_prompt_positions_never_change():
    L, B = 16, 3
    x_init = template_with_prompt_and_infill(B, L)
    fixed = x_init != MASK
    step = RecordingStep(make_step("first-hitting"))
    final = run_sampler(step, OracleDenoiser(L), x_init, 12).tokens
    seen = step.seen + [final]
    for before, after in zip(seen[:-1], seen[1:]):
        visible = before != MASK
        assert torch.equal(after[visible], before[visible])
        assert ((after != MASK).sum(-1) - visible.sum(-1) <= 1).all()  # one token per row and call
    assert torch.equal(final[fixed], x_init[fixed]) and not (final == MASK).any()


def test_first_hitting_makes_one_call_per_masked_position():
    L, B = 20, 4
    result = run_sampler(make_step("first-hitting"), OracleDenoiser(L), torch.full((B, L), MASK), 999)
    assert result.nfe == 20 and result.nfe_rows == 20 and result.iterations == 20  # steps (999) does not apply
    template = build_template(B, L, prompt="hello")[0]
    result = run_sampler(make_step("first-hitting"), OracleDenoiser(L), template, 999)
    assert result.nfe == 15 == result.iterations


def test_first_hitting_clock_follows_the_schedule_and_plans_one_position():
    """With m masked, s = t * u^(1/m): E[s / t] = m / (m + 1); the plan names the one position revealed."""
    L, B = 4, 50_000
    step = make_step("first-hitting")
    x_t = torch.full((B, L), MASK)
    log_probs = OracleDenoiser(L)(x_t)
    t = torch.full((B,), 0.8, dtype=torch.float64)
    plan = step.plan(log_probs, x_t, t, torch.zeros(B, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert abs(float((plan.t_s / 0.8).mean()) - 4 / 5) < 0.005
    assert (plan.reveal.sum(-1) == 1).all()  # one reveal per row, known before x0 is drawn
    x0 = torch.randint(0, 27, (B, L))
    out = step.apply(x_t, x0, plan, t, t, None)
    assert torch.equal(out.x_s[plan.reveal], x0[plan.reveal]) and int((out.x_s != MASK).sum()) == B
    assert torch.equal(out.t_s, plan.t_s)


def test_first_hitting_has_the_ancestral_law_as_steps_grow():
    V, L, draws = 2, 3, 40_000
    wrong = conditional_denoiser(random_joint(V, L, seed=3), V, L)  # the model, not the data law
    exact = random_order_distribution(wrong, V, L)
    x_init = torch.full((draws, L), V)
    first_hitting = run_sampler(make_step("first-hitting", mask_id=V), wrong, x_init, 1, mask_id=V).tokens
    assert total_variation(distribution(first_hitting, V), exact) < 0.015
    ancestral = run_sampler(make_step("ancestral", mask_id=V), wrong, x_init, 400, seed=1, mask_id=V).tokens
    assert total_variation(distribution(ancestral, V), exact) < 0.02
    few_steps = run_sampler(make_step("ancestral", mask_id=V), wrong, x_init, 1, seed=2, mask_id=V).tokens
    assert total_variation(distribution(few_steps, V), exact) > 0.05  # the comparison can fail
