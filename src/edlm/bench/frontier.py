"""Generative frontiers: sample quality as a curve of judge NLL against entropy over a temperature sweep.

A single (gen-PPL, entropy) point says little: lowering the sampling temperature trades entropy for a lower judge
NLL along a curve, and a method is better only if its whole curve lies below another's (lower NLL at the same
entropy). This is the reporting the field now asks for ("Generative Frontiers", arXiv 2604.02718). Each setting of
``bench quality`` (sampler, energy, steps) sampled at several temperatures gives one curve; the frontier over all
points is the set no other point beats on both axes. The entropy is the protocol's (``--protocol``); the NLL is
the judge's bits per character (or gen-PPL). Every point carries its 95% intervals.
"""

from __future__ import annotations

from edlm.bench.common import markdown_table


def _entropy(row: dict) -> tuple[float, list[float]]:
    """The row's protocol entropy and interval (character bits when the protocol's is unavailable)."""
    if row.get("entropy") is not None and "entropy" in row.get("ci95", {}):
        return row["entropy"], row["ci95"]["entropy"]
    return row["entropy_bits"], row["ci95"]["entropy_bits"]


def frontier_points(points: list[dict], metric: str) -> list[dict]:
    """Points (dicts with ``metric`` and ``entropy``) that no other point beats on both (lower or equal
    ``metric``, higher or equal entropy, one strictly), by point estimates, in order of entropy."""
    front = [p for p in points
             if not any(q[metric] <= p[metric] and q["entropy"] >= p["entropy"]
                        and (q[metric] < p[metric] or q["entropy"] > p["entropy"]) for q in points)]
    return sorted(front, key=lambda p: p["entropy"])


def frontiers(rows: list[dict], metric: str) -> list[dict]:
    """One curve per (setting, steps) over its temperatures: [{"setting", "steps", "entropy_unit", "points"}],
    each point {temperature, metric, metric_ci95, entropy, entropy_ci95, gen_ppl, on_frontier}."""
    points = []
    for row in rows:
        entropy, entropy_ci = _entropy(row)
        points.append({"setting": row["setting"], "steps": row["steps"], "temperature": row.get("temperature", 1.0),
                       metric: row[metric], f"{metric}_ci95": row["ci95"][metric], "entropy": entropy,
                       "entropy_ci95": entropy_ci, "gen_ppl": row["gen_ppl"],
                       "entropy_unit": row.get("entropy_unit", "bits")})
    front = {(p["setting"], p["steps"], p["temperature"]) for p in frontier_points(points, metric)}
    curves: dict[tuple, dict] = {}
    for point in sorted(points, key=lambda p: p["temperature"]):
        point["on_frontier"] = (point["setting"], point["steps"], point["temperature"]) in front
        curve = curves.setdefault((point["setting"], point["steps"]), {
            "setting": point["setting"], "steps": point["steps"], "entropy_unit": point["entropy_unit"],
            "points": []})
        curve["points"].append(point)
    return list(curves.values())


def frontier_table(curves: list[dict], metric: str) -> str:
    """The markdown section: every point of every curve with its intervals, frontier points marked."""
    rows = []
    for curve in curves:
        for p in curve["points"]:
            rows.append({"setting": curve["setting"], "steps": curve["steps"], "temperature": f"{p['temperature']:g}",
                         f"{metric} [95% CI]": f"{p[metric]:.4g} [{p[f'{metric}_ci95'][0]:.4g}, "
                                               f"{p[f'{metric}_ci95'][1]:.4g}]",
                         "entropy [95% CI]": f"{p['entropy']:.4g} [{p['entropy_ci95'][0]:.4g}, "
                                             f"{p['entropy_ci95'][1]:.4g}] {p['entropy_unit']}",
                         "gen_ppl": p["gen_ppl"], "on frontier": "yes" if p["on_frontier"] else ""})
    return ("Generative frontier: " + metric + " against entropy over the temperature sweep (lower NLL at higher "
            "entropy is better; a point is on the frontier when no other point beats it on both, by point "
            "estimates: compare intervals before calling two curves different)\n\n"
            + markdown_table(rows, ["setting", "steps", "temperature", f"{metric} [95% CI]", "entropy [95% CI]",
                                    "gen_ppl", "on frontier"], {"gen_ppl": ".3f"}))
