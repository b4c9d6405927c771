"""Bootstrap confidence intervals for generation metrics, single-set and paired (docs/method.md §2).

Samples drawn with the same seed by two methods share their index: sample i of method A and sample i of
method B come from the same random stream. A paired bootstrap resamples those indices jointly (the same
resampled index set for A and B), so whatever the two sets have in common cancels in the difference.

Per-sample scores (one entry per sample, float64 numpy arrays of shape (n,)):
    nll           judge NLL of the sample, nats (summed over its judge tokens)
    tokens        number of judge tokens scored
    characters    number of characters
    entropy_bits  unigram entropy of the sample's characters, bits (nan for an empty sample)

Metrics computed from a (resampled) index set:
    gen_ppl       exp(sum nll / sum tokens), pooled over the set (not a mean of per-sample perplexities)
    judge_bpc     sum nll / sum characters / ln 2
    entropy_bits  mean of the per-sample entropies (empty samples left out)

Intervals are percentile intervals (2.5% and 97.5% quantiles of the bootstrap replicates); resampling is
vectorised: an (R, n) index matrix drawn once from a seeded numpy generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

LN2 = math.log(2.0)
METRICS = ("gen_ppl", "judge_bpc", "entropy_bits")
DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (for a difference: the two methods differ at the 95% level)."""
        return not (self.low <= 0.0 <= self.high)

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "ci95": [self.low, self.high]}


@dataclass(frozen=True)
class SampleScores:
    """Per-sample scores of one sample set; every array is float64 of shape (n,)."""

    nll: np.ndarray
    tokens: np.ndarray
    characters: np.ndarray
    entropy_bits: np.ndarray

    @classmethod
    def from_lists(cls, nll: Sequence[float], tokens: Sequence[float], characters: Sequence[float],
                   entropy_bits: Sequence[float | None]) -> "SampleScores":
        as_array = lambda values: np.array([np.nan if v is None else v for v in values], dtype=np.float64)  # noqa: E731
        return cls(as_array(nll), as_array(tokens), as_array(characters), as_array(entropy_bits))

    @classmethod
    def from_metrics(cls, metrics: Mapping) -> "SampleScores":
        """From the ``per_sample`` field of ``generation_metrics`` output (or a row that holds one)."""
        per = metrics["per_sample"]
        return cls.from_lists(per["nll"], per["tokens"], per["characters"], per["entropy_bits"])

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
        with np.errstate(divide="ignore", invalid="ignore"):
            return scores.nll[indices].sum(1) / scores.characters[indices].sum(1) / LN2
    if metric == "entropy_bits":
        picked = scores.entropy_bits[indices]  # (R, n), nan for empty samples
        counts = np.isfinite(picked).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(counts > 0, np.nansum(picked, 1) / np.maximum(counts, 1), np.nan)
    raise ValueError(f"unknown metric {metric!r} (valid: {', '.join(METRICS)})")


def _interval(estimate: float, replicates: np.ndarray) -> Interval:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Interval(float(estimate), float("nan"), float("nan"))
    low, high = np.quantile(finite, [0.025, 0.975])
    return Interval(float(estimate), float(low), float(high))


def bootstrap_ci(scores: SampleScores, metric: str, num_resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> Interval:
    """The metric of one sample set with its 95% interval (resampling the samples)."""
    indices = bootstrap_indices(len(scores), num_resamples, seed)
    return _interval(float(metric_values(scores, metric)[0]), metric_values(scores, metric, indices))


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
    return _interval(float(estimate), replicates)


def paired_statistic_difference(statistic: Callable[[np.ndarray], tuple[float, float]], n: int,
                                relative: bool = False, num_resamples: int = 200, seed: int = 0) -> Interval:
    """Paired bootstrap for a statistic that is not a sum over samples (MAUVE): a Python loop over resamples.

    ``statistic(indices (n,)) -> (value for A, value for B)`` on that index subset of both sets.
    """
    difference = (lambda x, y: y / x - 1.0) if relative else (lambda x, y: y - x)
    estimate = difference(*statistic(np.arange(n)))
    replicates = np.array([difference(*statistic(row)) for row in bootstrap_indices(n, num_resamples, seed)])
    return _interval(float(estimate), replicates)


def verdict(interval: Interval, relative: bool = True, unit: str = "") -> str:
    """"X% lower (95% CI a..b%)" / "X% higher (...)", or "no significant difference (95% CI a..b)".

    ``interval`` is a difference B - A (or B / A - 1 when ``relative``); the words describe B.
    """
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "no interval (too few samples)"
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
