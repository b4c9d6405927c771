"""``report.html`` of the demo: one self-contained page rendered from ``summary.json`` (``bench.demo_report``)."""

from __future__ import annotations

ALPHABET = "abcdefghijklmnopqrstuvwxyz "
LAW_LABELS = {"mdlm": "MDLM", "row": "EDLM, the paper's weights", "reveal1": "EDLM, weights on the revealed tokens"}
TEXT_LABELS = {"mdlm": "MDLM", "row": "EDLM, the paper's weights", "reveal": "EDLM, weights on the revealed tokens"}
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.headline { background: #f3f7fc; border-left: 5px solid #3a72b8; padding: 0.8em 1.2em; font-size: 1.08em; }
.headline p { margin: 0.4em 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.row { font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 0.9em; word-break: break-all; }
.bad { background: #f8c9c9; color: #9b1c1c; font-weight: bold; }
.samples td { width: 33%; white-space: pre-wrap; font-family: Georgia, serif; font-size: 0.9em; }
.muted { color: #666; font-size: 0.9em; } img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 0.25em; }
"""


def _ci(entry: dict, scale: float = 1.0, spec: str = ".2f", unit: str = "") -> str:
    low, high = entry["ci95"]
    return (f"{entry['estimate'] * scale:{spec}}{unit} <span class=muted>({low * scale:{spec}}.."
            f"{high * scale:{spec}}{unit})</span>")


def _law_rows(summary: dict) -> str:
    cells = []
    order = ["mdlm", "row", "reveal1"]
    for s in sorted(summary["law"]["settings"], key=lambda s: (s["T"], order.index(s["method"]))):
        cells.append(f"<tr><td class=num>{s['T']}</td><td>{s['label']}</td>"
                     f"<td class=num>{_ci(s['forbidden_rate'], 100, '.2f', '%')}</td>"
                     f"<td class=num>{_ci(s['nll_excess'], 1, '.3f')}</td>"
                     f"<td class=num>{s['seconds']['estimate'] * 1e3:.1f}</td></tr>")
    return ("<table><tr><th>steps T</th><th>sampler</th><th>forbidden transitions (95% CI)</th>"
            "<th>true NLL above exact rows, nats/token (95% CI)</th><th>ms per sample</th></tr>"
            + "".join(cells) + "</table>")


def _law_samples(summary: dict, escape) -> str:
    rows = []
    for method, sample in summary["law"]["samples"].items():
        for tokens, bad in zip(sample["rows"], sample["forbidden"]):
            text = "".join(f"<span class=bad>{escape(ALPHABET[t]).replace(' ', '&middot;')}</span>" if flag
                           else escape(ALPHABET[t]).replace(" ", "&middot;") for t, flag in zip(tokens, bad))
            rows.append(f"<tr><td>{LAW_LABELS[method]}</td><td class=num>{sum(bad)}</td>"
                        f"<td class=row>{text}</td></tr>")
    return ("<table><tr><th>sampler</th><th>forbidden</th><th>a sampled row (&middot; = space; red: a transition "
            "the law forbids)</th></tr>" + "".join(rows) + "</table>")


def _text_rows(summary: dict) -> str:
    cells = []
    for row in summary["text"]["rows"].values():
        entry = {"estimate": row["judge_bpc"], "ci95": row["ci95"]["judge_bpc"]}
        cells.append(f"<tr><td>{row['label']}</td><td class=num>{_ci(entry, 1, '.3f')}</td>"
                     f"<td class=num>{row['gen_ppl']:.1f}</td><td class=num>{row['entropy_bits']:.3f}</td>"
                     f"<td class=num>{row['seconds_per_sample'] * 1e3:.0f}</td></tr>")
    return ("<table><tr><th>sampler</th><th>judge bits per character (95% CI)</th><th>judge perplexity per "
            "token</th><th>character entropy (bits)</th><th>ms per sample</th></tr>" + "".join(cells) + "</table>")


def _text_samples(summary: dict, escape) -> str:
    rows = summary["text"]["rows"]
    head = "".join(f"<th>{row['label']}</th>" for row in rows.values())
    body = "".join("<tr>" + "".join(f"<td>{escape(row['texts'][i])}</td>" for row in rows.values()) + "</tr>"
                   for i in range(min(3, min(len(row["texts"]) for row in rows.values()))))
    return f"<table class=samples><tr>{head}</tr>{body}</table>"


def _likelihoods(summary: dict) -> str:
    like = summary["text"]["likelihood"]
    rows = [("MDLM, continuous-time NELBO (an upper bound on its NLL)", like["mdlm_nelbo"]),
            ("AR energy, exact NLL", like["ar_nll"])]
    cells = "".join(f"<tr><td>{name}</td><td class=num>{entry['bpc']:.3f} &plusmn; {entry['stderr_bpc']:.3f}</td></tr>"
                    for name, entry in rows)
    return (f"<table><tr><th>model (test split, {like['sequences']} rows)</th><th>bits per character</th></tr>"
            f"{cells}</table>")


def _models(summary: dict) -> str:
    cells = "".join(f"<tr><td>{m['name']}</td><td>{m['size']}</td><td class=num>{m['steps']}</td>"
                    f"<td class=num>{(m['seconds'] or 0):.0f}</td>"
                    f"<td class=num>{'' if m['val_bpc'] is None else format(m['val_bpc'], '.3f')}</td></tr>"
                    for m in summary["law"]["models"] + summary["text"]["models"])
    return ("<table><tr><th>model</th><th>layers x width</th><th>steps</th><th>seconds</th>"
            "<th>validation bits per character</th></tr>" + cells + "</table>")


def _meaning(summary: dict) -> str:
    return (
        "<p>A masked diffusion model (MDLM) writes a whole sequence in T steps, revealing many positions per step, "
        "each drawn on its own: with few steps, neighbouring tokens that must agree are drawn as if independent. "
        "EDLM draws k candidates per step and keeps one with probability proportional to exp(-energy), here from an "
        "autoregressive model that scores how well tokens fit together. The paper weighs each candidate by every "
        "masked position, although a step keeps only the tokens it reveals; edlm can aim the weights at those "
        "tokens (the reveal set), at the same cost.</p><p>The known law makes the comparison exact: a forbidden "
        "transition is a mistake no judge can argue with. Read the headline's intervals before the point "
        "estimates: where an interval crosses zero the difference is noise. Where the law and text disagree, the "
        "text part is the weaker evidence (a small judge, a few minutes of training).</p>")


def render(summary: dict, image: str | None, escape) -> str:
    headline = "".join(f"<p>{escape(line)}</p>" for line in summary["headline"])
    plot = f"<img alt='quality against sampling cost' src='{image}'>" if image else "<p>(matplotlib missing)</p>"
    plan = summary["plan"]
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>edlm demo</title>
<style>{STYLE}</style></head><body>
<h1>edlm demo: what energy-based diffusion buys</h1>
<p class=muted>Made by <code>edlm demo</code> in {summary['seconds'] / 60:.1f} minutes. Every number, with its 95%
interval, is in <code>summary.json</code>; importance sampling with k = {plan['k']} candidates per step.</p>
<div class=headline>{headline}</div>
<h2>Quality against cost</h2>{plot}
<h2>What this means</h2>{_meaning(summary)}
<h2>A language whose law is known</h2>
<p>An order-1 Markov chain over the 27 characters (each allows 3 successors) wrote the training corpus; the models
never see the law, the scores come from it. {plan['law_num']} rows per setting, the same random seed for row i of
every setting (paired comparisons).</p>{_law_rows(summary)}{_law_samples(summary, escape)}
<h2>Shakespeare</h2>
<p>The same three samplers at T = {summary['text']['steps']} steps for {summary['text']['length']} tokens, scored by
a separately trained AR judge (never the energy).</p>{_text_rows(summary)}{_text_samples(summary, escape)}
<h2>Likelihoods</h2>{_likelihoods(summary)}
<h2>The models</h2>{_models(summary)}
<h2>Reproduce</h2><p><code>bash scripts/demo.sh</code> (this page), <code>edlm bench oracle</code> (the known-law
study at full size), <code>edlm bench quality</code> (text, any judge). See the README.</p>
</body></html>
"""
