"""Every interval and verdict edlm prints: one statistics module (docs/method.md §2).

``Interval`` is a point estimate with its 95% interval. Three ways to get one:

- Bootstrap, for generation metrics over many samples. Samples drawn with the same seed by two methods share
  their index: sample i of method A and sample i of method B come from the same random stream. A paired
  bootstrap resamples those indices jointly (the same resampled index set for A and B), so whatever the two sets
  have in common cancels in the difference. Percentile intervals (2.5% and 97.5% quantiles of the replicates);
  resampling is vectorised: an (R, n) index matrix drawn once from a seeded numpy generator. A replicate whose
  metric is undefined (e.g. a resample of empty samples only) is left out and counted: ``Interval.dropped``,
  written as ``dropped_replicates`` and in the verdict.
- Half-sampling, for statistics that a duplicated sample distorts (MAUVE: duplicated features form tight
  clusters; distinct-n and self-BLEU: a copy repeats every n-gram): not resampled with replacement but R index
  sets of n // 2 distinct samples (``half_sample_indices``). For a mean, a half-sample drawn without replacement
  varies about its full-set value with variance sigma^2 / m * (1 - m / n) = sigma^2 / n at m = n / 2 (the finite
  population factor makes up for the halved size), which is the sampling variance of the full-set value; the
  interval is the full-set value plus the 2.5% and 97.5% quantiles of the half-sample values minus their mean
  (centred, so that a statistic that drifts with the sample size, as MAUVE does, shifts no interval). This is
  exact in the limit for smooth statistics and an approximation for MAUVE.
- Student t, for a handful of repeated timings and for means with a standard error (``t_interval``,
  ``geometric_interval``, ``welch_ratio``, ``paired_ratio``, ``mean_interval``), with an exact t quantile.

Verdicts say a difference in words only when its interval excludes "no difference" (``verdict``,
``format_ratio``), else "no significant difference".

Per-sample scores (one entry per sample, float64 numpy arrays of shape (n,)):
    nll           judge NLL of the sample's gen-PPL tokens, nats (the protocol's scoring)
    tokens        number of judge tokens that scoring counted
    characters    number of characters
    entropy_bits  unigram entropy of the sample's characters, bits (nan for an empty sample)
    bpc_nll       edlm's own judge NLL (every token behind the start token), nats; defaults to ``nll``
    entropy       the protocol's entropy of the sample; defaults to ``entropy_bits``

Metrics computed from a (resampled) index set:
    gen_ppl       exp(sum nll / sum tokens), pooled over the set (not a mean of per-sample perplexities)
    judge_bpc     sum bpc_nll / sum characters / ln 2
    entropy_bits  mean of the per-sample character entropies (empty samples left out)
    entropy       mean of the per-sample protocol entropies
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

LN2 = math.log(2.0)
METRICS = ("gen_ppl", "judge_bpc", "entropy_bits")  # compare_sets; "entropy" (the protocol's) is computed too
DEFAULT_RESAMPLES = 2000
DEFAULT_HALF_SAMPLES = 100  # half-sampling recomputes the statistic per resample (MAUVE: k-means each time)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval [low, high] (bootstrap, half-sampling or Student t); ``dropped``:
    resamples left out as undefined."""

    estimate: float
    low: float
    high: float
    dropped: int = 0

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (for a difference: the two methods differ at the 95% level)."""
        return not (self.low <= 0.0 <= self.high)

    def contains(self, point: float) -> bool:
        """For a ratio, ``contains(1.0)`` means no significant difference."""
        return self.low <= point <= self.high

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (a positive constant factor, e.g. FLOPs per token / peak)."""
        return Interval(self.estimate * factor, self.low * factor, self.high * factor)

    def as_dict(self) -> dict:
        out = {"estimate": self.estimate, "ci95": [self.low, self.high]}
        return {**out, "dropped_replicates": self.dropped} if self.dropped else out


@dataclass(frozen=True)
class SampleScores:
    """Per-sample scores of one sample set; every array is float64 of shape (n,)."""

    nll: np.ndarray
    tokens: np.ndarray
    characters: np.ndarray
    entropy_bits: np.ndarray
    bpc_nll: np.ndarray | None = None
    entropy: np.ndarray | None = None

    @classmethod
    def from_lists(cls, nll: Sequence[float], tokens: Sequence[float], characters: Sequence[float],
                   entropy_bits: Sequence[float | None], bpc_nll: Sequence[float] | None = None,
                   entropy: Sequence[float | None] | None = None) -> "SampleScores":
        def as_array(values):
            return None if values is None else np.array([np.nan if v is None else v for v in values],
                                                        dtype=np.float64)

        return cls(as_array(nll), as_array(tokens), as_array(characters), as_array(entropy_bits), as_array(bpc_nll),
                   as_array(entropy))

    @classmethod
    def from_metrics(cls, metrics: Mapping) -> "SampleScores":
        """From the ``per_sample`` field of ``generation_metrics`` output (or a row that holds one)."""
        per = metrics["per_sample"]
        return cls.from_lists(per["nll"], per["tokens"], per["characters"], per["entropy_bits"],
                              per.get("bpc_nll"), per.get("entropy"))

    def __len__(self) -> int:
        return len(self.nll)


def bootstrap_indices(n: int, num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(R, n) int64 indices, each row a resample with replacement of range(n); seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(num_resamples, n))


def metric_values(scores: SampleScores, metric: str, indices: np.ndarray | None = None) -> np.ndarray:
    """The metric on each index set: ``indices`` (R, n) -> (R,) float64; None -> the full set, shape (1,)."""
    if indices is None:
        indices = np.arange(len(scores))[None]  # (1, n)
    if metric == "gen_ppl":
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.exp(scores.nll[indices].sum(1) / scores.tokens[indices].sum(1))
    if metric == "judge_bpc":
        nll = scores.nll if scores.bpc_nll is None else scores.bpc_nll
        with np.errstate(divide="ignore", invalid="ignore"):
            return nll[indices].sum(1) / scores.characters[indices].sum(1) / LN2
    if metric in ("entropy_bits", "entropy"):
        values = scores.entropy if metric == "entropy" and scores.entropy is not None else scores.entropy_bits
        picked = values[indices]  # (R, n), nan for empty samples
        counts = np.isfinite(picked).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(counts > 0, np.nansum(picked, 1) / np.maximum(counts, 1), np.nan)
    raise ValueError(f"unknown metric {metric!r} (valid: {', '.join(METRICS)})")


def percentile_interval(estimate: float, replicates: np.ndarray) -> Interval:
    """Percentile interval of the finite ``replicates``; the undefined ones are counted in ``dropped``."""
    finite = replicates[np.isfinite(replicates)]
    dropped = int(replicates.size - finite.size)
    if finite.size == 0:
        return Interval(float(estimate), float("nan"), float("nan"), dropped)
    low, high = np.quantile(finite, [0.025, 0.975])
    return Interval(float(estimate), float(low), float(high), dropped)


def half_sample_indices(n: int, num_resamples: int = DEFAULT_HALF_SAMPLES, seed: int = 0) -> np.ndarray:
    """(R, n // 2) int64 indices, each row n // 2 distinct samples of range(n) (no duplicates); seeded."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n)[: n // 2] for _ in range(num_resamples)]) if num_resamples else \
        np.zeros((0, n // 2), dtype=np.int64)


def half_sample_interval(statistic: Callable[[np.ndarray], float], n: int,
                         num_resamples: int = DEFAULT_HALF_SAMPLES, seed: int = 0) -> Interval:
    """``statistic(indices)`` on all n samples with a 95% half-sampling interval (see the module docstring):
    the full-set value plus the quantiles of the centred half-sample values. Needs n >= 4."""
    estimate = float(statistic(np.arange(n)))
    values = np.array([statistic(row) for row in half_sample_indices(n, num_resamples, seed)], dtype=np.float64)
    return centred_interval(estimate, values)


def centred_interval(estimate: float, values: np.ndarray) -> Interval:
    """The interval of ``half_sample_interval`` from the half-sample ``values`` (R,): the estimate plus the
    quantiles of the values minus their mean (undefined values left out and counted)."""
    finite = np.isfinite(values)
    return percentile_interval(estimate, estimate + values - values[finite].mean() if finite.any() else values)


def bootstrap_ci(scores: SampleScores, metric: str, num_resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> Interval:
    """The metric of one sample set with its 95% interval (resampling the samples)."""
    indices = bootstrap_indices(len(scores), num_resamples, seed)
    return percentile_interval(float(metric_values(scores, metric)[0]), metric_values(scores, metric, indices))


def paired_difference(a: SampleScores, b: SampleScores, metric: str, relative: bool = True,
                      num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """B against A on the same sample indices: B / A - 1 (``relative``) or B - A, with its 95% interval.

    Sample i of A and sample i of B must come from the same seed (the paired design); both sets must have
    the same number of samples.
    """
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs equal sample counts, got {len(a)} and {len(b)}")
    indices = bootstrap_indices(len(a), num_resamples, seed)

    def difference(value_a: np.ndarray, value_b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return value_b / value_a - 1.0 if relative else value_b - value_a

    estimate = difference(metric_values(a, metric), metric_values(b, metric))[0]
    replicates = difference(metric_values(a, metric, indices), metric_values(b, metric, indices))
    return percentile_interval(float(estimate), replicates)


def paired_statistic_difference(statistic: Callable[[np.ndarray], tuple[float, float]], n: int,
                                relative: bool = False, num_resamples: int = DEFAULT_HALF_SAMPLES,
                                seed: int = 0) -> Interval:
    """Paired half-sampling interval for a statistic that is not a sum over samples (MAUVE): a Python loop.

    ``statistic(indices) -> (value for A, value for B)`` on that index subset of both sets; each resample takes
    the same n // 2 distinct indices from both (no sample twice), see ``half_sample_interval``.
    """
    difference = (lambda x, y: y / x - 1.0) if relative else (lambda x, y: y - x)
    return half_sample_interval(lambda rows: difference(*statistic(rows)), n, num_resamples, seed)


def verdict(interval: Interval, relative: bool = True, unit: str = "") -> str:
    """"X% lower (95% CI a..b%)" / "X% higher (...)", or "no significant difference (95% CI a..b)".

    ``interval`` is a difference B - A (or B / A - 1 when ``relative``); the words describe B.
    """
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "no interval (too few samples)"
    if interval.dropped:
        return f"{verdict(replace(interval, dropped=0), relative, unit)}; {interval.dropped} resamples undefined, " \
               f"left out"
    scale, suffix = (100.0, "%") if relative else (1.0, f" {unit}" if unit else "")
    low, high, estimate = interval.low * scale, interval.high * scale, interval.estimate * scale
    if not interval.significant:
        return f"no significant difference (95% CI {low:+.2f}..{high:+.2f}{suffix})"
    if estimate < 0:
        return f"{-estimate:.2f}{suffix} lower (95% CI {-high:.2f}..{-low:.2f}{suffix})"
    return f"{estimate:.2f}{suffix} higher (95% CI {low:.2f}..{high:.2f}{suffix})"


def compare_sets(a: SampleScores, b: SampleScores, num_resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> dict:
    """Every per-sample metric of B against A, paired: {metric: {estimate, ci95, verdict}} (relative)."""
    out = {}
    for metric in METRICS:
        interval = paired_difference(a, b, metric, True, num_resamples, seed)
        out[metric] = {**interval.as_dict(), "relative": True, "verdict": verdict(interval)}
    return out


# --- Student t intervals ------------------------------------------------------------------------------------
# Timings are repeated a few times (blocks of steps, repeats of a sampling run), so their intervals are Student t
# intervals on a handful of values, not bootstrap ones. Ratios of rates or times are taken on the log scale, where
# a ratio is a difference, and exponentiated back. The t quantile is exact (incomplete beta), without scipy.


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 <= x <= 1 and a, b > 0."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (any real df: Welch's are fractional)."""
    tail = 0.5 * regularized_beta(df / (df + t * t), 0.5 * df, 0.5)  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (0 < p < 1), by bisection on the CDF to float precision."""
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


def mean_interval(mean: float, stderr: float, n: int) -> Interval:
    """A mean over ``n`` >= 2 independent units with its standard error -> the 95% t-interval
    mean +- t(0.975, n - 1) * stderr (e.g. a likelihood averaged over sequences)."""
    if n < 2 or not math.isfinite(stderr):
        return Interval(mean, float("nan"), float("nan"))
    half = student_t_quantile(0.975, n - 1) * stderr
    return Interval(mean, mean - half, mean + half)


def t_interval(values) -> Interval:
    """Mean of ``values`` (n >= 2 floats) with its 95% t-interval: mean +- t(0.975, n - 1) * sd / sqrt(n)."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half)


def geometric_interval(values) -> Interval:
    """Geometric mean of positive ``values`` (n >= 2: rates or times) with the exponentiated 95% t-interval of
    the mean log: the interval of a positive quantity stays positive, and it matches the log-scale ratios."""
    logs = t_interval([math.log(float(v)) for v in values])
    return Interval(math.exp(logs.estimate), math.exp(logs.low), math.exp(logs.high))


def welch_ratio(numerator, denominator) -> Interval:
    """Ratio of two independent sets of positive rates, exp(mean log numerator - mean log denominator), with its
    95% Welch interval: the difference of mean logs +- t(0.975, df) * sqrt(s_a^2 / n_a + s_b^2 / n_b), df from
    Welch-Satterthwaite, exponentiated. Each set needs n >= 2 values."""
    logs_a, logs_b = [math.log(v) for v in numerator], [math.log(v) for v in denominator]
    if min(len(logs_a), len(logs_b)) < 2:
        raise ValueError(f"a Welch interval needs at least 2 values per side, got {len(logs_a)} and {len(logs_b)}")
    a, b = t_interval(logs_a), t_interval(logs_b)
    var_a = sum((v - a.estimate) ** 2 for v in logs_a) / (len(logs_a) - 1) / len(logs_a)  # squared standard errors
    var_b = sum((v - b.estimate) ** 2 for v in logs_b) / (len(logs_b) - 1) / len(logs_b)
    difference = a.estimate - b.estimate
    if var_a + var_b == 0.0:
        return Interval(math.exp(difference), math.exp(difference), math.exp(difference))
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(logs_a) - 1) + var_b ** 2 / (len(logs_b) - 1))
    half = student_t_quantile(0.975, df) * math.sqrt(var_a + var_b)
    return Interval(math.exp(difference), math.exp(difference - half), math.exp(difference + half))


def paired_ratio(numerator, denominator) -> Interval:
    """Ratio of paired positive values (pair r measured back to back): exp(mean_r log(numerator_r /
    denominator_r)) with the exponentiated 95% t-interval of the mean log ratio (n - 1 df)."""
    if len(numerator) != len(denominator):
        raise ValueError(f"a paired ratio needs equal counts, got {len(numerator)} and {len(denominator)}")
    logs = t_interval([math.log(a / b) for a, b in zip(numerator, denominator)])
    return Interval(math.exp(logs.estimate), math.exp(logs.low), math.exp(logs.high))


def format_interval(interval: Interval, spec: str) -> str:
    """'459,608 (452,100..467,300)' for spec ',.0f': the value, then its 95% interval."""
    return f"{interval.estimate:{spec}} ({interval.low:{spec}}..{interval.high:{spec}})"


def format_ratio(ratio: Interval) -> str:
    """'2.04x (1.98..2.10)', or 'no significant difference (0.97..1.02x)' when the interval contains 1."""
    if ratio.contains(1.0):
        return f"no significant difference ({ratio.low:.2f}..{ratio.high:.2f}x)"
    return f"{ratio.estimate:.2f}x ({ratio.low:.2f}..{ratio.high:.2f})"
