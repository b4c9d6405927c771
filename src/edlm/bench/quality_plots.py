"""The plots of ``bench quality``: quality against seconds and steps, and the generative frontiers."""

from __future__ import annotations

from pathlib import Path

from edlm.bench.common import pyplot, save_figure
from edlm.bench.verdicts import BASELINE_METHOD


def plot(rows: list[dict], front: list[dict], metric: str, out: Path) -> list[str]:
    """quality.png: (1) ``metric`` vs seconds per sample with the Pareto front, (2) gen-PPL vs T,
    (3) entropy vs T; 95% intervals as error bars; log axes, T axes labelled at the sampled T values."""
    plt = pyplot()
    if plt is None:
        return []
    from matplotlib.ticker import FixedLocator, NullLocator
    settings = sorted({r["setting"] for r in rows if r["setting"] != "ar"}, key=lambda s: (BASELINE_METHOD not in s, s))
    steps = sorted({r["steps"] for r in rows if r["setting"] != "ar"})
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))

    def errorbar(axis, points, x_key, y_key, **style):
        ys = [p[y_key] for p in points]
        lows = [p[y_key] - p["ci95"][y_key][0] for p in points]
        highs = [p["ci95"][y_key][1] - p[y_key] for p in points]
        axis.errorbar([p[x_key] for p in points], ys, yerr=[lows, highs], capsize=2, marker="o", **style)

    for setting in settings:
        points = sorted((r for r in rows if r["setting"] == setting), key=lambda r: r["steps"])
        style = dict(linewidth=2.5 if setting.endswith(BASELINE_METHOD) else 1.2, label=setting)
        errorbar(axes[0], points, "seconds_per_sample", metric, **style)
        errorbar(axes[1], points, "steps", "gen_ppl", **style)
        errorbar(axes[2], points, "steps", "entropy_bits", **style)
    axes[0].plot([p["seconds_per_sample"] for p in front], [p[metric] for p in front], color="black",
                 linestyle=":", linewidth=1, label="Pareto front (point estimates)")
    for row in (r for r in rows if r["setting"] == "ar"):
        axes[1].axhline(row["gen_ppl"], color="gray", linestyle="--", label="AR model")
        axes[2].axhline(row["entropy_bits"], color="gray", linestyle="--", label="AR model")
    label = {"judge_bpc": "judge NLL, bits per character", "gen_ppl": "generative perplexity (judge)"}[metric]
    for axis, xlabel, ylabel in ((axes[0], "seconds per sample (wall-clock, log)", f"{label} (lower is better)"),
                                 (axes[1], "sampling steps T (log)", "generative perplexity (lower is better)"),
                                 (axes[2], "sampling steps T (log)", "unigram entropy, bits (higher = more diverse)")):
        axis.set_xscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    for axis in axes[1:]:
        axis.xaxis.set_major_locator(FixedLocator(steps))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticklabels([str(T) for T in steps])
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("quality vs wall-clock and steps (95% bootstrap intervals; judge != energy model)")
    return save_figure(plt, fig, out / "quality.png")


def plot_frontiers(curves: list[dict], metric: str, out: Path) -> list[str]:
    """quality_frontier.png: one line per curve through its temperatures (each point labelled with its
    temperature), 95% intervals on both axes; [] without matplotlib."""
    plt = pyplot()
    if plt is None or not curves:
        return []
    fig, axis = plt.subplots(figsize=(8, 6))
    for curve in curves:
        points = curve["points"]
        xs, ys = [p["entropy"] for p in points], [p[metric] for p in points]
        xerr = [[x - p["entropy_ci95"][0] for x, p in zip(xs, points)],
                [p["entropy_ci95"][1] - x for x, p in zip(xs, points)]]
        yerr = [[y - p[f"{metric}_ci95"][0] for y, p in zip(ys, points)],
                [p[f"{metric}_ci95"][1] - y for y, p in zip(ys, points)]]
        line = axis.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", capsize=2,
                             label=f"{curve['setting']} T={curve['steps']}")
        for x, y, p in zip(xs, ys, points):
            axis.annotate(f"temp {p['temperature']:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                          fontsize=7, color=line[0].get_color())
    unit = curves[0]["entropy_unit"]
    label = {"judge_bpc": "judge NLL, bits per character", "gen_ppl": "generative perplexity"}[metric]
    axis.set_xlabel(f"entropy ({unit}; higher = more diverse)")
    axis.set_ylabel(f"{label} (lower is better)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    axis.set_title("generative frontier over sampling temperature (95% intervals)")
    return save_figure(plt, fig, out / "quality_frontier.png")
