"""The statistics module: bootstrap intervals (closed forms: identical sets, constant shifts, constant ratios;
coverage; verdicts) and Student t intervals of repeated timings (the exact t quantile against closed forms and
tables, t/Welch/paired intervals, coverage, formats)."""

import math
import statistics

import numpy as np
import pytest

from edlm.stats import (
    Interval,
    SampleScores,
    bootstrap_ci,
    bootstrap_indices,
    compare_sets,
    format_interval,
    format_ratio,
    geometric_interval,
    mean_interval,
    metric_values,
    paired_difference,
    paired_ratio,
    paired_statistic_difference,
    student_t_cdf,
    student_t_quantile,
    t_interval,
    verdict,
    welch_ratio,
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


def test_generic_paired_statistic_agrees_with_the_vectorised_bootstrap_for_means():
    """The loop half-samples (no duplicates, for MAUVE); for a mean it agrees with the paired bootstrap."""
    a, b = random_scores(40, seed=1), random_scores(40, seed=2)
    loop = paired_statistic_difference(lambda idx: (a.entropy_bits[idx].mean(), b.entropy_bits[idx].mean()),
                                       40, num_resamples=2000, seed=7)
    vector = paired_difference(a, b, "entropy_bits", relative=False, num_resamples=2000, seed=7)
    assert loop.estimate == pytest.approx(vector.estimate)
    assert loop.high - loop.low == pytest.approx(vector.high - vector.low, rel=0.15)
    assert (loop.low + loop.high) / 2 == pytest.approx((vector.low + vector.high) / 2, abs=0.05)


def test_verdict_wording():
    assert verdict(Interval(-0.05, -0.08, -0.02)) == "5.00% lower (95% CI 2.00..8.00%)"
    assert verdict(Interval(0.05, 0.02, 0.08)) == "5.00% higher (95% CI 2.00..8.00%)"
    assert verdict(Interval(-0.01, -0.03, 0.01)) == "no significant difference (95% CI -3.00..+1.00%)"
    assert verdict(Interval(0.0, float("nan"), float("nan"))).startswith("no interval")
    result = compare_sets(random_scores(), random_scores())
    assert set(result) == {"gen_ppl", "judge_bpc", "entropy_bits"} and result["gen_ppl"]["ci95"] == [0.0, 0.0]


def test_undefined_replicates_are_counted_not_silently_dropped():
    """Issue 19 item 8: resamples whose metric is undefined (here: only empty samples) were left out silently."""
    from edlm.stats import bootstrap_ci

    scores = SampleScores.from_lists([3.0, 0.0], [3, 0], [3, 0], [1.0, None])
    interval = bootstrap_ci(scores, "entropy_bits", num_resamples=200, seed=0)
    assert 20 < interval.dropped < 100  # about a quarter of the resamples hold the empty sample twice
    assert interval.as_dict()["dropped_replicates"] == interval.dropped


def test_half_sampling_never_duplicates_and_matches_the_bootstrap_for_a_mean():
    """Statistics that duplicated samples bias (MAUVE, distinct-n, self-BLEU) are resampled without replacement."""
    from edlm.stats import half_sample_interval, half_sample_indices

    indices = half_sample_indices(50, 100, seed=0)
    assert indices.shape == (100, 25) and all(len(set(row)) == 25 for row in indices.tolist())
    values = np.random.default_rng(1).normal(size=400)
    half = half_sample_interval(lambda rows: float(values[rows].mean()), len(values), 400, seed=0)
    boot = np.quantile(values[np.random.default_rng(2).integers(0, 400, (2000, 400))].mean(1), [0.025, 0.975])
    assert half.estimate == pytest.approx(values.mean())
    assert (half.high - half.low) == pytest.approx(boot[1] - boot[0], rel=0.2)


# ----------------------------------------------------------------------------------------------------------
# Student t


T975 = {1: 12.706204736174707, 2: 4.302652729749464, 4: 2.7764451051977934, 10: 2.2281388519862744,
        30: 2.0422724563012373}  # two-sided 95% critical values of Student's t (statistical tables)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.1])
def test_student_t_quantile_matches_closed_forms(p):
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)  # Cauchy
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
    assert student_t_quantile(p, 1e7) == pytest.approx(statistics.NormalDist().inv_cdf(p), rel=1e-6)
    for df in (1.3, 2.5, 7.7):  # Welch's fractional df: the quantile inverts the CDF
        assert student_t_cdf(student_t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


def test_student_t_quantile_matches_tables_and_scipy():
    for df, value in T975.items():
        assert student_t_quantile(0.975, df) == pytest.approx(value, rel=1e-10)
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.5, 3, 7.7, 50.5):
        assert student_t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-10)


def test_t_interval_closed_form():
    geometric = geometric_interval([1.0, 2.0, 4.0])  # logs 0, log 2, 2 log 2: mean log 2, sd log 2
    half = 4.302652729911275 * math.log(2.0) / math.sqrt(3.0)
    assert geometric.estimate == pytest.approx(2.0) and geometric.low > 0
    assert (geometric.low, geometric.high) == pytest.approx((2.0 * math.exp(-half), 2.0 * math.exp(half)))
    interval = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1
    half = T975[2] / math.sqrt(3)
    assert (interval.estimate, interval.low, interval.high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert t_interval([5.0, 5.0]) == Interval(5.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        t_interval([1.0])


def test_welch_ratio_closed_forms():
    rates = [100.0, 110.0, 95.0, 105.0, 98.0]
    same = welch_ratio(rates, rates)
    assert same.estimate == pytest.approx(1.0) and same.contains(1.0) and same.low < 1.0 < same.high
    # equal sizes and variances: Welch's df is 2(n - 1) and the interval exp(log c +- t * sd * sqrt(2 / n))
    doubled = welch_ratio([2 * r for r in rates], rates)
    logs = [math.log(r) for r in rates]
    half = student_t_quantile(0.975, 8) * statistics.stdev(logs) * math.sqrt(2 / 5)
    assert (doubled.estimate, doubled.low, doubled.high) == pytest.approx((2.0, 2 * math.exp(-half), 2 * math.exp(half)))
    assert not doubled.contains(1.0) and format_ratio(doubled).startswith("2.00x (")
    # one side without noise: df = n - 1 of the other side, the one-sample interval of its log mean
    one_sided = welch_ratio(rates, [50.0, 50.0, 50.0])
    logs_interval = t_interval(logs)
    assert one_sided.low == pytest.approx(math.exp(logs_interval.low) / 50)
    assert one_sided.high == pytest.approx(math.exp(logs_interval.high) / 50)


def test_paired_ratio_is_the_t_interval_of_log_ratios_and_cancels_shared_noise():
    base = [1.0, 3.0, 0.5]
    ratio = paired_ratio([b * math.exp(x) for b, x in zip(base, [1.0, 2.0, 3.0])], base)
    half = T975[2] / math.sqrt(3)
    assert (ratio.estimate, ratio.low, ratio.high) == pytest.approx((math.exp(2), math.exp(2 - half), math.exp(2 + half)))
    # noise shared by both runs of a repeat cancels in the paired ratio but not in the unpaired (Welch) one
    rng = np.random.default_rng(0)
    plain = list(rng.lognormal(0.0, 0.3, 5))
    importance = [1.05 * p * math.exp(e) for p, e in zip(plain, rng.normal(0, 0.005, 5))]
    assert not paired_ratio(importance, plain).contains(1.0) and welch_ratio(importance, plain).contains(1.0)
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_intervals_cover_the_truth_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    trials = 400
    mean_hits = sum(t_interval(rng.normal(10.0, 2.0, 4)).contains(10.0) for _ in range(trials))
    # rates with unequal spreads and sizes; the true ratio of geometric means is exp(0.2)
    welch_hits = sum(welch_ratio(np.exp(rng.normal(0.2, 0.05, 4)), np.exp(rng.normal(0.0, 0.15, 6))).contains(
        math.exp(0.2)) for _ in range(trials))
    paired_hits = 0
    for _ in range(trials):
        shared = rng.normal(0.0, 0.5, 3)  # run-to-run noise common to the pair
        paired_hits += paired_ratio(np.exp(shared + 0.3 + rng.normal(0, 0.1, 3)), np.exp(shared)).contains(
            math.exp(0.3))
    for hits in (mean_hits, welch_hits, paired_hits):  # binomial sd at 400 trials: 0.011
        assert 0.92 <= hits / trials <= 0.98


def test_interval_formats():
    assert format_interval(Interval(459608.0, 452100.0, 467300.0), ",.0f") == "459,608 (452,100..467,300)"
    assert format_ratio(Interval(2.04, 1.98, 2.10)) == "2.04x (1.98..2.10)"
    assert format_ratio(Interval(0.5, 0.4, 0.6)) == "0.50x (0.40..0.60)"
    assert format_ratio(Interval(1.01, 0.97, 1.05)) == "no significant difference (0.97..1.05x)"
    assert Interval(2.0, 1.0, 3.0).scaled(0.5) == Interval(1.0, 0.5, 1.5)


def test_mean_interval_is_the_t_interval_of_the_values_it_summarises():
    values = [2.0, 3.5, 1.0, 4.0, 2.5]
    stderr = statistics.stdev(values) / math.sqrt(len(values))
    assert mean_interval(statistics.mean(values), stderr, len(values)) == t_interval(values)
    one = mean_interval(1.0, float("nan"), 1)
    assert one.estimate == 1.0 and math.isnan(one.low) and math.isnan(one.high)
