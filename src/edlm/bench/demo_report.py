"""The demo's report (``bench.demo``): ``summary.json`` with every number, and ``report.html``, one self-contained
page (no network: the plot is embedded) with the headline, the plot, the samples side by side, the likelihoods and
what it means."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from edlm.bench.demo_html import LAW_LABELS, TEXT_LABELS, render
from edlm.stats import Interval


def _interval(value) -> dict:
    return value.as_dict() if isinstance(value, Interval) else value


def law_summary(law: dict) -> dict:
    settings = [{"method": method, "label": LAW_LABELS[method], "T": T,
                 **{name: _interval(value) for name, value in summary.items()}}
                for (method, T), summary in law["summaries"].items()]
    return {"length": law["length"], "entropy_per_token": law["entropy"], "models": law["models"],
            "settings": settings, "comparisons": law["comparisons"], "matched_quality": law["matched"],
            "samples": law["samples"]}


def text_summary(text: dict) -> dict:
    rows = {method: {"label": TEXT_LABELS[method], "texts": row["texts"], "costs": row["costs"],
                     "seconds_per_sample": row["seconds_per_sample"],
                     **{key: row["metrics"][key] for key in ("judge_bpc", "gen_ppl", "entropy_bits", "ci95")}}
            for method, row in text["rows"].items()}
    return {key: text[key] for key in ("models", "steps", "length", "tokenizer", "comparisons", "judge",
                                       "likelihood")} | {"rows": rows}


def _setting(summary: dict, method: str, T: int) -> dict | None:
    return next((s for s in summary["law"]["settings"] if s["method"] == method and s["T"] == T), None)


def _compared(entries: list[dict], method: str, against: str, T: int | None = None) -> dict | None:
    return next((c for c in entries if c["method"] == method and c["against"] == against
                 and (T is None or c["T"] == T)), None)


def headline(summary: dict) -> list[str]:
    """The demo's answer in plain sentences, with their 95% intervals."""
    law, text, lines = summary["law"], summary["text"], []
    swept = {s["T"] for s in law["settings"] if s["method"] == "reveal1"}
    T = max(swept)  # the most steps all three methods ran: each step reveals the fewest tokens
    parts = {m: _setting(summary, m, T) for m in LAW_LABELS}
    if all(parts.values()):
        rate = {m: p["forbidden_rate"] for m, p in parts.items()}
        row, reveal = (_compared(law["comparisons"], m, "mdlm", T) for m in ("row", "reveal1"))
        versus = _compared(law["comparisons"], "reveal1", "row", T)
        lines.append(f"Known law, {T} steps for a row of {law['length']}: plain MDLM writes "
                     f"{rate['mdlm']['estimate']:.1%} forbidden transitions, the paper's EDLM "
                     f"{rate['row']['estimate']:.1%} ({row['verdict']}), reveal-set EDLM "
                     f"{rate['reveal1']['estimate']:.1%} ({reveal['verdict']}; against the paper's: "
                     f"{versus['verdict']}).")
    matched = [m for m in law["matched_quality"] if m["method"] == "reveal1"]
    if matched:
        best = max(matched, key=lambda m: m["T"])
        speed = best["speedup"]
        if best["reaches"] and best["faster"]:
            lines.append(f"Reveal-set EDLM at {best['T']} steps matches MDLM at {best['reference_T']} steps "
                         f"({best['quality']['verdict']}) {speed['estimate']:.2f}x faster (95% CI "
                         f"{speed['ci95'][0]:.2f}..{speed['ci95'][1]:.2f}).")
        else:
            lines.append(f"Reveal-set EDLM at {best['T']} steps against MDLM at {best['reference_T']} steps: "
                         f"{best['quality']['verdict']}, speed {speed['estimate']:.2f}x (95% CI "
                         f"{speed['ci95'][0]:.2f}..{speed['ci95'][1]:.2f}): no speed-up at matched quality here.")
    bpc = {m: r["judge_bpc"] for m, r in text["rows"].items()}
    row, reveal = (_compared(text["comparisons"], m, "mdlm") for m in ("row", "reveal"))
    versus = _compared(text["comparisons"], "reveal", "row")
    lines.append(f"Shakespeare, {text['steps']} steps, judge bits per character (lower is better): MDLM "
                 f"{bpc['mdlm']:.3f}, the paper's EDLM {bpc['row']:.3f} ({row['verdict']}), reveal-set EDLM "
                 f"{bpc['reveal']:.3f} ({reveal['verdict']}; against the paper's: {versus['verdict']}); "
                 f"character entropy against MDLM (lower is less varied text): the paper's "
                 f"{row['entropy_verdict']}, reveal-set {reveal['entropy_verdict']}.")
    return lines


def plot_png(summary: dict) -> bytes | None:
    """Quality against seconds per sample: the law (forbidden share) and Shakespeare (judge bits per character)."""
    from edlm.bench.common import pyplot

    plt = pyplot()
    if plt is None:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for method, label in LAW_LABELS.items():
        points = sorted((s for s in summary["law"]["settings"] if s["method"] == method), key=lambda s: s["T"])
        x = [s["seconds"]["estimate"] * 1e3 for s in points]
        y = [100 * s["forbidden_rate"]["estimate"] for s in points]
        errors = [[100 * (s["forbidden_rate"]["estimate"] - s["forbidden_rate"]["ci95"][0]) for s in points],
                  [100 * (s["forbidden_rate"]["ci95"][1] - s["forbidden_rate"]["estimate"]) for s in points]]
        drawn = left.errorbar(x, y, yerr=errors, fmt="o-", capsize=3, label=label)
        for s, xi, yi in zip(points, x, y):
            left.annotate(f"{s['T']} steps", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8,
                          color=drawn[0].get_color())
    left.set(xscale="log", xlabel="milliseconds per sample (log)", ylabel="forbidden transitions (%, 95% CI)",
             title=f"A known law: rows of {summary['law']['length']} characters")
    for method, row in summary["text"]["rows"].items():
        low, high = row["ci95"]["judge_bpc"]
        drawn = right.errorbar([row["seconds_per_sample"] * 1e3], [row["judge_bpc"]],
                               yerr=[[row["judge_bpc"] - low], [high - row["judge_bpc"]]], fmt="o", capsize=3,
                               label=row["label"])
        right.annotate(f"{summary['text']['steps']} steps", (row["seconds_per_sample"] * 1e3, row["judge_bpc"]),
                       textcoords="offset points", xytext=(5, 5), fontsize=8, color=drawn[0].get_color())
    right.set(xscale="log", xlabel="milliseconds per sample (log)", ylabel="judge bits per character (95% CI)",
              title=f"Shakespeare, {summary['text']['tokenizer']} tokens")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Quality against sampling cost (lower is better on both axes)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def write_report(out: Path, plan, law: dict, text: dict, seconds: float) -> dict:
    """Write summary.json, demo.png and report.html into ``out``; returns the summary."""
    summary = {"seconds": seconds, "plan": {"law_length": plan.law_length, "k": plan.k, "law_num": plan.law_num,
                                            "text_num": plan.text_num, "text_tokenizer": plan.text_tokenizer,
                                            "training_seconds": plan.seconds},
               "law": law_summary(law), "text": text_summary(text)}
    summary["headline"] = headline(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    png = plot_png(summary)
    if png is not None:
        (out / "demo.png").write_bytes(png)
    image = f"data:image/png;base64,{base64.b64encode(png).decode()}" if png else None
    (out / "report.html").write_text(render(summary, image, html.escape))
    return summary
