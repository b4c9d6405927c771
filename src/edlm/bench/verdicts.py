"""Verdicts of the quality benchmark: pure functions of its rows (docs/method.md §2).

A row holds "setting", "sampler", "method", "steps", "seconds_per_sample", the metrics, "ci95" and "per_sample".
A difference is stated only when its 95% paired bootstrap interval excludes 0; a setting counts as better than
the baseline only where its interval clears the baseline's at equal or lower seconds per sample, with entropy
within ``ENTROPY_TOLERANCE`` of the baseline's.
"""

from __future__ import annotations

from edlm.stats import SampleScores, paired_difference, verdict

ENTROPY_TOLERANCE = 0.03  # a setting whose entropy is more than 3% below the baseline's never counts as better
BASELINE_METHOD = "mdlm"


def scores(row: dict) -> SampleScores:
    return SampleScores.from_metrics(row)


def compare(row: dict, base: dict, metric: str, num_resamples: int, seed: int = 0) -> dict:
    """``row`` against ``base`` on the same sample indices: relative difference of ``metric`` and of entropy."""
    quality = paired_difference(scores(base), scores(row), metric, True, num_resamples, seed)
    entropy = paired_difference(scores(base), scores(row), "entropy_bits", True, num_resamples, seed)
    return {"setting": row["setting"], "steps": row["steps"], "baseline": base["setting"],
            "baseline_steps": base["steps"], "metric": metric, "change": quality.estimate,
            "ci95": [quality.low, quality.high], "significant": quality.significant,
            "verdict": verdict(quality), "entropy_change": entropy.estimate,
            "entropy_ci95": [entropy.low, entropy.high], "entropy_verdict": verdict(entropy)}


def better_than(row: dict, baseline_rows: list[dict], metric: str, num_resamples: int) -> dict | None:
    """The first baseline point that ``row`` beats under the ranking rule, as a ``compare`` dict; else None.

    Rule: the paired 95% interval of (row / baseline - 1) on ``metric`` lies below 0, the row is no slower
    (seconds per sample <= the baseline point's) and its entropy is no more than 3% below the baseline's.
    """
    for base in sorted(baseline_rows, key=lambda r: r["seconds_per_sample"]):
        if row["seconds_per_sample"] > base["seconds_per_sample"]:
            continue
        if row["entropy_bits"] < (1 - ENTROPY_TOLERANCE) * base["entropy_bits"]:
            continue
        result = compare(row, base, metric, num_resamples)
        if result["significant"] and result["change"] < 0:
            return result
    return None


def rank_settings(rows: list[dict], baseline: str, metric: str, num_resamples: int) -> list[dict]:
    """Every row, best first: rows that count as better than the baseline (by ``metric``), then the
    baseline's own rows, then the rest; each group by ``metric``. ``beats`` names the beaten point."""
    baseline_rows = [r for r in rows if r["setting"] == baseline]
    ranked = []
    for row in rows:
        beaten = None if row["setting"] == baseline else better_than(row, baseline_rows, metric, num_resamples)
        group = 0 if beaten else 1 if row["setting"] == baseline else 2
        ranked.append((group, row[metric], row, beaten))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [{"setting": row["setting"], "steps": row["steps"], metric: value,
             "seconds_per_sample": row["seconds_per_sample"], "entropy_bits": row["entropy_bits"],
             "counts_as_better": group == 0,
             "beats": f"{beaten['baseline']} T={beaten['baseline_steps']}: {beaten['verdict']}" if beaten else ""}
            for group, value, row, beaten in ranked]


def matched_speedups(rows: list[dict], baseline: str, length: int, metric: str, num_resamples: int) -> list[dict]:
    """Speed-up at matched quality against the baseline at T = L (or its largest T).

    A setting's speed-up is baseline seconds / the seconds of its fastest point that is faster than the
    target AND significantly better on ``metric`` (paired 95% interval below 0) with entropy within 3%:
    a lower bound, since a slower-but-equal point is not claimed. Otherwise no speed-up is stated.
    """
    base_rows = [r for r in rows if r["setting"] == baseline]
    target = next((r for r in base_rows if r["steps"] == length), max(base_rows, key=lambda r: r["steps"]))
    out = []
    for setting in sorted({r["setting"] for r in rows} - {baseline}):
        points = sorted((r for r in rows if r["setting"] == setting and "per_sample" in r
                         and len(r["per_sample"]["nll"]) == len(target["per_sample"]["nll"])),
                        key=lambda r: r["seconds_per_sample"])
        entry = {"setting": setting, "target": f"{baseline} T={target['steps']}",
                 "target_seconds": target["seconds_per_sample"], "speedup": None}
        faster = [p for p in points if p["seconds_per_sample"] < target["seconds_per_sample"]]
        for point in faster:
            result = compare(point, target, metric, num_resamples)
            if (result["significant"] and result["change"] < 0
                    and point["entropy_bits"] >= (1 - ENTROPY_TOLERANCE) * target["entropy_bits"]):
                entry.update(steps=point["steps"], seconds=point["seconds_per_sample"],
                             speedup=target["seconds_per_sample"] / point["seconds_per_sample"],
                             verdict=result["verdict"], note="lower bound: significantly better and faster")
                break
        else:
            closest = [compare(p, target, metric, num_resamples) for p in faster[-1:]]
            entry["verdict"] = closest[0]["verdict"] if closest else "no faster point"
            entry["note"] = ("no significant difference: no speed-up at matched quality" if closest and
                             not closest[0]["significant"] else "no faster point is significantly better")
        out.append(entry)
    return out


def pareto_front(rows: list[dict], metric: str, min_entropy: float | None = None) -> list[dict]:
    """Rows no other row dominates (<= seconds and <= ``metric``, one strictly), by point estimates, fastest
    first. Points on the front can still be within each other's intervals: read the verdicts beside it.

    ``min_entropy``: rows with a lower unigram entropy (bits) are left out first, so that a sampler that buys a
    low judge NLL with less diverse text (as greedy confidence orders do) cannot take the front."""
    if min_entropy is not None:
        rows = [row for row in rows if row["entropy_bits"] >= min_entropy]
    front = []
    for row in rows:
        dominated = any(other["seconds_per_sample"] <= row["seconds_per_sample"] and other[metric] <= row[metric]
                        and (other["seconds_per_sample"] < row["seconds_per_sample"] or other[metric] < row[metric])
                        for other in rows)
        if not dominated:
            front.append(row)
    return sorted(front, key=lambda r: r["seconds_per_sample"])


def importance_effects(rows: list[dict], metric: str, num_resamples: int) -> list[dict]:
    """For each sampler and energy setting: does importance sampling move the sampler's quality at each T?
    Paired against the same sampler without energy at the same T."""
    out = []
    for row in rows:
        if row["method"] == BASELINE_METHOD or row["setting"] == "ar":
            continue
        plain = next((r for r in rows if r["sampler"] == row["sampler"] and r["method"] == BASELINE_METHOD
                      and r["steps"] == row["steps"]), None)
        if plain is not None:
            out.append({"sampler": row["sampler"], **compare(row, plain, metric, num_resamples)})
    return out


def reveal_effects(rows: list[dict], metric: str, num_resamples: int) -> list[dict]:
    """Each reveal-set setting (``...-reveal``) against its twin with the paper's whole-row weights, same sampler,
    same T, paired over samples."""
    out = []
    for row in rows:
        if not row["method"].endswith("-reveal"):
            continue
        twin = next((r for r in rows if r["sampler"] == row["sampler"] and r["steps"] == row["steps"]
                     and r["method"] == row["method"][:-len("-reveal")]), None)
        if twin is not None:
            out.append({"sampler": row["sampler"], **compare(row, twin, metric, num_resamples)})
    return out
