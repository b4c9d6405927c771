"""Bootstrap intervals: closed forms (identical sets, constant shifts, constant ratios), coverage, verdicts."""

import math

import numpy as np
import pytest

from edlm.evaluation.stats import (
    Interval,
    SampleScores,
    bootstrap_ci,
    bootstrap_indices,
    compare_sets,
    metric_values,
    paired_difference,
    paired_statistic_difference,
    verdict,
)


def random_scores(n=30, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, 20, n).astype(float)
    nll = tokens * rng.uniform(1.0, 3.0, n)
    return SampleScores(nll, tokens, tokens * 2, rng.uniform(3.0, 4.0, n) + shift)


def test_indices_are_seeded_and_in_range():
    a, b = bootstrap_indices(7, 50, seed=3), bootstrap_indices(7, 50, seed=3)
    assert a.shape == (50, 7) and (a == b).all() and a.min() >= 0 and a.max() <= 6
    assert not (a == bootstrap_indices(7, 50, seed=4)).all()


def test_metrics_pool_over_samples():
    scores = SampleScores.from_lists([2.0, 6.0], [1, 3], [2, 4], [1.0, None])
    assert metric_values(scores, "gen_ppl")[0] == pytest.approx(math.exp(8 / 4))  # pooled, not mean of ratios
    assert metric_values(scores, "judge_bpc")[0] == pytest.approx(8 / 6 / math.log(2))
    assert metric_values(scores, "entropy_bits")[0] == pytest.approx(1.0)  # the empty sample is left out
    replicates = metric_values(scores, "gen_ppl", np.array([[0, 0], [1, 1], [0, 1]]))
    assert replicates == pytest.approx([math.exp(2.0), math.exp(2.0), math.exp(2.0)])


def test_identical_sets_give_exactly_zero_and_no_significant_difference():
    a = random_scores()
    for metric in ("gen_ppl", "judge_bpc", "entropy_bits"):
        interval = paired_difference(a, a, metric)
        assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
        assert not interval.significant
        assert verdict(interval).startswith("no significant difference")


def test_constant_shift_gives_the_shift_as_interval():
    a = random_scores()
    b = random_scores(shift=0.25)  # same samples, entropy + 0.25 bits each
    interval = paired_difference(a, b, "entropy_bits", relative=False)
    assert interval.estimate == pytest.approx(0.25) and interval.low == pytest.approx(0.25)
    assert interval.high == pytest.approx(0.25) and interval.significant
    assert verdict(interval, relative=False, unit="bits") == "0.25 bits higher (95% CI 0.25..0.25 bits)"


def test_constant_nll_ratio_gives_exact_relative_difference():
    a = random_scores()
    b = SampleScores(a.nll * 0.9, a.tokens, a.characters, a.entropy_bits)  # bpc exactly 10% lower everywhere
    interval = paired_difference(a, b, "judge_bpc")
    assert interval.low == pytest.approx(-0.1) and interval.high == pytest.approx(-0.1)
    assert verdict(interval) == "10.00% lower (95% CI 10.00..10.00%)"
    # gen-PPL = exp(mean nll): the ratio is exp(-0.1 * pooled nll per token) - 1 on each resample
    expected = math.exp(-0.1 * a.nll.sum() / a.tokens.sum()) - 1
    assert paired_difference(a, b, "gen_ppl").estimate == pytest.approx(expected)


def test_single_set_interval_collapses_when_every_sample_is_equal():
    tokens = np.full(10, 4.0)
    scores = SampleScores(tokens * math.log(27), tokens, tokens, np.full(10, 2.0))
    interval = bootstrap_ci(scores, "gen_ppl")
    assert interval.estimate == pytest.approx(27) and interval.low == pytest.approx(27)
    assert interval.high == pytest.approx(27)


def test_paired_interval_covers_the_true_mean_difference_about_95_percent():
    """Normal per-sample differences, true mean 0.3: the percentile interval covers 0.3 in ~95% of trials."""
    rng = np.random.default_rng(123)
    trials, n, hits = 300, 60, 0
    for trial in range(trials):
        common = rng.normal(3.0, 1.0, n)  # shared by A and B (the paired design)
        a = SampleScores(np.ones(n), np.ones(n), np.ones(n), common)
        b = SampleScores(np.ones(n), np.ones(n), np.ones(n), common + 0.3 + rng.normal(0, 0.5, n))
        interval = paired_difference(a, b, "entropy_bits", relative=False, num_resamples=1000, seed=trial)
        hits += interval.low <= 0.3 <= interval.high
    assert 0.91 <= hits / trials <= 0.98


def test_pairing_gives_narrower_intervals_than_the_spread_of_samples():
    rng = np.random.default_rng(0)
    common = rng.normal(3.0, 1.0, 50)
    a = SampleScores(np.ones(50), np.ones(50), np.ones(50), common)
    b = SampleScores(np.ones(50), np.ones(50), np.ones(50), common + 0.1 + rng.normal(0, 0.05, 50))
    paired = paired_difference(a, b, "entropy_bits", relative=False)
    assert paired.significant and paired.high - paired.low < 0.05  # the unpaired spread would be ~0.55


def test_unequal_sample_counts_are_refused():
    with pytest.raises(ValueError, match="equal sample counts"):
        paired_difference(random_scores(10), random_scores(12), "gen_ppl")


def test_generic_statistic_bootstrap_matches_vectorised_one_for_means():
    a, b = random_scores(20, seed=1), random_scores(20, seed=2)
    loop = paired_statistic_difference(lambda idx: (a.entropy_bits[idx].mean(), b.entropy_bits[idx].mean()),
                                       20, num_resamples=500, seed=7)
    vector = paired_difference(a, b, "entropy_bits", relative=False, num_resamples=500, seed=7)
    assert loop.estimate == pytest.approx(vector.estimate)
    assert loop.low == pytest.approx(vector.low) and loop.high == pytest.approx(vector.high)


def test_verdict_wording():
    assert verdict(Interval(-0.05, -0.08, -0.02)) == "5.00% lower (95% CI 2.00..8.00%)"
    assert verdict(Interval(0.05, 0.02, 0.08)) == "5.00% higher (95% CI 2.00..8.00%)"
    assert verdict(Interval(-0.01, -0.03, 0.01)) == "no significant difference (95% CI -3.00..+1.00%)"
    assert verdict(Interval(0.0, float("nan"), float("nan"))).startswith("no interval")
    result = compare_sets(random_scores(), random_scores())
    assert set(result) == {"gen_ppl", "judge_bpc", "entropy_bits"} and result["gen_ppl"]["ci95"] == [0.0, 0.0]
