"""Semi-autoregressive block sampling (``sampling/samplers/semi_ar.py``): left-to-right law, which positions may
change, the step budget split over the blocks to generate (LLaDA), call counts."""

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

from edlm.sampling.generate import build_template


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
        drawn = run_sampler(make_step("semi-ar", mask_id=V, block=1, inner=inner), denoiser,
                            torch.full((draws, L), V), 6, mask_id=V).tokens
        assert total_variation(distribution(drawn, V), exact) < 0.015, inner
    plain = run_sampler(make_step("ancestral", mask_id=V), denoiser, torch.full((draws, L), V), 1, mask_id=V).tokens
    assert total_variation(distribution(plain, V), exact) > 0.05  # one MDLM step is not exact: the test can fail


@pytest.mark.parametrize("inner", ["ancestral", "confidence", "first-hitting", "threshold", "remdm"])
def test_semi_ar_fills_blocks_left_to_right_and_keeps_prompt_positions(inner):
    L, B, block = 16, 4, 5  # blocks [0, 5), [5, 10), [10, 15), [15, 16): the last one is short
    x_init = template_with_prompt_and_infill(B, L)
    fixed = x_init != MASK
    step = RecordingStep(make_step("semi-ar", block=block, inner=inner, remask="rescale", eta=1.0))
    final = run_sampler(step, OracleDenoiser(L), x_init, 12).tokens
    seen = step.seen + [final]
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
    x_init[:, :4] = 2  # the first block is all prompt: it takes no step and no call
    three_steps = run_sampler(make_step("semi-ar", block=4, inner="ancestral"), OracleDenoiser(L), x_init, 3,
                              cached=cached)
    assert three_steps.nfe == 3  # 3 steps over the 2 blocks to generate: 2 + 1 (each block ends at local time 0)
    first_hitting = run_sampler(make_step("semi-ar", block=4, inner="first-hitting"), OracleDenoiser(L), x_init, 1,
                                cached=cached)
    assert first_hitting.nfe == 8 and first_hitting.nfe_rows == 8  # one reveal per call and row
    step = make_step("semi-ar", block=4, inner="ancestral")
    assert step.iterations(10, torch.full((B, L), MASK)) == 10  # 10 steps over 3 blocks: 4 + 3 + 3
    assert step.iterations(10, x_init) == 10  # over the 2 blocks to generate: 5 + 5
    many = run_sampler(step, OracleDenoiser(L), x_init, 10, cached=cached)
    assert many.nfe <= 10 and not (many.tokens == MASK).any()


def test_a_prompt_does_not_change_the_number_of_network_calls():
    """LLaDA splits the steps over the generated blocks; edlm split them over every block, so a prompt filling
    half the blocks halved the calls (16 -> 8 here)."""
    L, block, steps = 64, 16, 16
    x_prompt = build_template(2, L, prompt="to be or not to be that is the q")[0]  # 32 characters: two blocks
    assert int((x_prompt[0] != MASK).sum()) == 32
    calls = [run_sampler(make_step("semi-ar", block=block, inner="ancestral"), OracleDenoiser(L), x_init, steps,
                         cached=False).nfe for x_init in (torch.full((2, L), MASK), x_prompt)]
    assert calls == [steps, steps]
