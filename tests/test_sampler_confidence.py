"""The confidence sampler (``sampling/samplers/confidence.py``): best-scored positions, the schedule's count,
order noise, and which orders plan before x0 is drawn."""

import pytest
import torch
from toys import MASK, OracleDenoiser, RecordingStep, make_step, run_sampler, template_with_prompt_and_infill

from edlm.sampling.samplers.confidence import confidence_scores


def test_confidence_reveals_the_best_scored_positions_and_the_schedule_count():
    L, B = 10, 4000
    x_t = torch.full((B, L), MASK)
    x_t[:, :3] = 5
    log_probs = OracleDenoiser(L)(x_t)
    t, s = torch.full((B,), 0.6, dtype=torch.float64), torch.full((B,), 0.45, dtype=torch.float64)
    x0 = torch.where(x_t == MASK, log_probs.argmax(-1), x_t)  # any x0 with real tokens at masked positions
    for order in ("max-prob", "margin", "entropy"):
        step = make_step("confidence", order=order)
        assert step.plans_before_x0 == (order != "max-prob")
        plan = step.plan(log_probs, x_t, t, s, torch.Generator().manual_seed(1))
        out = step.apply(x_t, x0, plan, t, s, None)
        scores = confidence_scores(log_probs, x0, order)
        revealed = (out.x_s != MASK) & (x_t == MASK)
        if plan.reveal is not None:
            assert torch.equal(plan.reveal, revealed)  # the plan said which, before x0
        still = out.x_s == MASK
        worst_revealed = scores.masked_fill(~revealed, float("inf")).min(-1).values
        best_left = scores.masked_fill(~still, float("-inf")).max(-1).values
        assert (worst_revealed >= best_left).all()
        # n_t = 7 * (alpha_s - alpha_t) / (1 - alpha_t) = 7 * 0.15 / 0.6 = 1.75 on average (log-linear: (t - s) / t)
        assert abs(float(revealed.sum(-1).double().mean()) - 1.75) < 0.03
        assert set(revealed.sum(-1).tolist()) == {1, 2}


def test_confidence_order_temperature_randomises_the_order():
    L = 12

    def draw(seed, order_temp):
        return run_sampler(make_step("confidence", order="entropy", order_temp=order_temp), OracleDenoiser(L),
                           torch.full((1, L), MASK), 12, seed=seed).tokens

    greedy = [draw(seed, 0.0) for seed in range(2)]
    noisy = [draw(seed, 5.0) for seed in range(2)]
    assert all((g != MASK).all() for g in greedy + noisy)
    assert not torch.equal(noisy[0], noisy[1])


@pytest.mark.parametrize("order", ["max-prob", "margin", "entropy"])
def test_reveals_are_absorbing_and_prompt_positions_never_change(order):
    L, B = 16, 3
    x_init = template_with_prompt_and_infill(B, L)
    fixed = x_init != MASK
    step = RecordingStep(make_step("confidence", order=order))
    final = run_sampler(step, OracleDenoiser(L), x_init, 12).tokens
    seen = step.seen + [final]
    for before, after in zip(seen[:-1], seen[1:]):
        visible = before != MASK
        assert torch.equal(after[visible], before[visible])
    assert torch.equal(final[fixed], x_init[fixed]) and not (final == MASK).any()
