"""The threshold sampler (``sampling/samplers/threshold.py``): which positions, Fast-dLLM's >=, call counts,
its law by enumeration."""

import itertools

import pytest
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

from edlm.diffusion.subs import subs_log_probs
from edlm.sampling.samplers.threshold import top_probability


def test_threshold_reveals_every_confident_position_and_at_least_one():
    L, B = 10, 500
    x_t = torch.full((B, L), MASK)
    x_t[:, :2] = 4
    log_probs = OracleDenoiser(L)(x_t)
    scores = top_probability(log_probs, x_t, MASK)
    ones = torch.ones(B, dtype=torch.float64)
    x0 = torch.where(x_t == MASK, log_probs.argmax(-1), x_t)
    for tau in (0.0, 0.3, 0.6, 1.0):
        step = make_step("threshold", threshold=tau)
        plan = step.plan(log_probs, x_t, ones, 0 * ones, torch.Generator().manual_seed(0))
        out = step.apply(x_t, x0, plan, ones, 0 * ones, None)
        revealed = (out.x_s != MASK) & (x_t == MASK)
        above = (scores >= tau) & (x_t == MASK)
        best = torch.zeros_like(above).scatter_(-1, scores.argmax(-1, keepdim=True), True)
        assert torch.equal(revealed, above | best) and torch.equal(plan.reveal, revealed)
        assert (revealed.sum(-1) >= 1).all() and torch.equal(out.x_s[revealed], x0[revealed])
        assert torch.allclose(out.t_s, 1 - revealed.sum(-1).double() / 8)  # masked fraction left


def test_a_score_equal_to_the_threshold_is_revealed():
    """Fast-dLLM reveals confidence >= threshold; edlm used to take > (a certain token waited its turn)."""
    L = 4
    x_t = torch.full((1, L), MASK)
    logits = torch.zeros(1, L, 28)
    logits[0, :2, 3] = 1e4  # positions 0 and 1 are certain (probability exactly 1.0 in float32)
    log_probs = subs_log_probs(logits, x_t, MASK)
    assert float(top_probability(log_probs, x_t, MASK)[0, 1]) == 1.0
    ones = torch.ones(1, dtype=torch.float64)
    plan = make_step("threshold", threshold=1.0).plan(log_probs, x_t, ones, ones, None)
    assert plan.reveal[0].tolist() == [True, True, False, False]


@pytest.mark.parametrize("cached", [False, True])
def test_threshold_call_counts(cached):
    L, B = 12, 3
    x_init = template_with_prompt_and_infill(B, L)
    masked = int((x_init[0] == MASK).sum())
    one_at_a_time = run_sampler(make_step("threshold", threshold=1.0), OracleDenoiser(L), x_init, 999, cached=cached)
    assert one_at_a_time.nfe == masked and one_at_a_time.nfe_rows == masked  # steps (999) does not apply
    at_once = run_sampler(make_step("threshold", threshold=0.0), OracleDenoiser(L), x_init, 999, cached=cached)
    assert at_once.nfe == 1 == at_once.iterations
    step = RecordingStep(make_step("threshold", threshold=0.5))
    middle = run_sampler(step, OracleDenoiser(L), x_init, 999, cached=cached)
    seen = step.seen
    assert middle.nfe == len(seen) <= masked
    for before, after in zip(seen, seen[1:] + [middle.tokens]):
        visible = before != MASK
        assert torch.equal(after[visible], before[visible])  # revealed tokens stay
        assert ((after != MASK).sum(-1) > visible.sum(-1))[(before == MASK).any(-1)].all()  # >= 1 per row


def threshold_law(denoiser, V, L, tau):
    """Exact output law of the threshold sampler by enumeration: from each state, the chosen positions (at least
    tau, or else the most confident) take independent draws from mu_i(. | x_t); (V^L,) float64."""
    law = torch.zeros(V ** L, dtype=torch.float64)

    def walk(x_t, p):
        masked = x_t[0] == V
        if not masked.any():
            law[sequence_index(x_t, V)] += p
            return
        log_probs = denoiser(x_t)
        scores = top_probability(log_probs, x_t, V)[0]
        chosen = (scores >= tau) & masked
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
    drawn = run_sampler(make_step("threshold", mask_id=V, threshold=tau), denoiser, torch.full((draws, L), V), 1,
                        mask_id=V).tokens
    assert total_variation(distribution(drawn, V), exact) < 0.015
    if tau == 0.0:  # everything at once: the product of the fully masked marginals
        marginals = denoiser(torch.full((1, L), V))[0, :, :V].exp()  # (L, V)
        product = torch.tensor([float(marginals[torch.arange(L), torch.tensor(x)].prod())
                                for x in itertools.product(range(V), repeat=L)], dtype=torch.float64)
        assert torch.allclose(exact, product)
