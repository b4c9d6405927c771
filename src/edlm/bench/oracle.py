"""Sampler claims measured on a language whose law is known exactly: MDLM, the paper's EDLM and reveal-set EDLM.

    edlm bench oracle [--law DIR] [--mdlm RUN --ar RUN] [--fractions 16,8,4,2] [--k 4,16]
                      [--methods mdlm,row,reveal1,reveal4,reveal-cond4,reveal-exact] [--num 128] [--out DIR]

Two sets of models sample the law's rows (length L = the law's):
- ``exact``: the law's exact posterior marginals as the denoiser (a perfect MDLM) and its exact log-probability,
  smoothed by the law's epsilon (1e-3), as the energy (``--energy law:DIR``, full mode): what each weighting can do
  when nothing is learned;
- ``trained`` (with ``--mdlm RUN --ar RUN``, models trained on the law's corpus): an MDLM denoiser and an AR energy
  (full mode: its target is p_AR(x_M | visible), the law's posterior if the AR model were exact).
For each T = L / f (``--fractions``), each k and each method, ``--num`` rows are drawn (batches seeded by index, so
sample i of every setting shares its seed) and scored by the law (``edlm.evaluation.law_metrics``): the share of
forbidden positions and the smoothed true NLL per token above what exact rows score (the excess). Every figure has
a 95% bootstrap interval over rows; comparisons (B against A at the same T) are paired by row index. Seconds per
row come from the batches' wall clocks (a geometric-mean interval), energy rows per sampler step from the counters.

Verdicts printed (the targets of the reveal-set method, edlm's, against the paper's weighting):
1. exact models, T = L / 4, the largest k: does reveal-set weighting lower the forbidden rate by at least 40%
   against plain MDLM, and the paper's weighting by less?
2. trained models: is reveal-set EDLM significantly better than MDLM and than the paper's EDLM at the same T, and
   does some EDLM setting reach MDLM's quality at the largest T with at most half the steps in less wall-clock?
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edlm.bench.common import environment, markdown_table, pyplot, save_figure, write_results
from edlm.flags import OneLineParser, float_in, positive_int, positive_ints
from edlm.stats import (
    Interval,
    bootstrap_indices,
    format_interval,
    geometric_interval,
    percentile_interval,
    verdict,
    welch_ratio,
)

# name -> (importance target or None for plain MDLM, fills M, label in words)
METHODS = {
    "mdlm": (None, 1, "MDLM (no energy)"),
    "row": ("row", 1, "EDLM, the paper's weights (every masked token)"),
    "reveal1": ("reveal", 1, "EDLM, weights on the revealed tokens, 1 fill"),
    "reveal4": ("reveal", 4, "EDLM, weights on the revealed tokens, 4 shared fills"),
    "reveal-cond4": ("reveal-cond", 4, "EDLM, revealed tokens, 4 fills drawn given each candidate"),
    "reveal-exact": ("reveal-exact", 1, "EDLM, revealed tokens weighed by their exact marginal (ceiling)"),
}
REVEAL_METHODS = ("reveal1", "reveal4", "reveal-cond4", "reveal-exact")
TARGET_REDUCTION = 0.40


@dataclass
class ModelSet:
    name: str  # "exact" or "trained"
    denoiser: object  # DenoiserFn
    energy: object
    schedule: object
    device: torch.device


def exact_models(law_dir: str):
    from edlm.diffusion.schedule import make_schedule
    from edlm.energy.law import LawEnergy
    from edlm.law import open_law_run

    run = open_law_run(law_dir)
    energy = LawEnergy(run.law, run.mask_id, "full", run.epsilon)
    return run, ModelSet("exact", run.denoiser, energy, make_schedule(), torch.device("cpu"))


def trained_models(mdlm_dir: str, ar_dir: str, law_run, device: str, precision: str) -> ModelSet:
    from edlm.checkpoint import load_model
    from edlm.diffusion.schedule import schedule_for
    from edlm.energy.ar import AREnergy, check_compatible
    from edlm.models.denoiser import make_denoiser_fn

    config, mdlm = load_model(mdlm_dir, device=device)
    ar_config, ar = load_model(ar_dir, device=device)
    if config.model.vocab_size != law_run.vocab_size or config.model.seq_len < law_run.seq_len:
        raise SystemExit(f"edlm bench oracle: --mdlm {mdlm_dir} does not model the law's rows "
                         f"({config.model.vocab_size} symbols, length {config.model.seq_len}; the law: "
                         f"{law_run.vocab_size}, {law_run.seq_len})")
    check_compatible(ar_config.model, config.model, ar_dir)
    schedule = schedule_for(config)
    energy = AREnergy(ar, config.model.mask_id, "full", precision=precision)
    return ModelSet("trained", make_denoiser_fn(mdlm, config.model.mask_id, precision, schedule), energy, schedule,
                    torch.device(device))


def run_setting(models: ModelSet, law_run, method: str, steps: int, k: int, args) -> dict:
    """Draw ``args.num`` rows with one setting; per-row law scores, per-batch seconds, cost counters."""
    from edlm.parallel import batch_seed
    from edlm.sampling import SampleConfig
    from edlm.sampling.generate import build_sampler

    target, fills, _ = METHODS[method]
    sample = SampleConfig(num=args.num, steps=steps, sampler=args.sampler, seed=args.seed, batch_size=args.batch_size,
                          k=k if target else 1, window=args.window, is_target=target or "row", fills=fills)
    sampler = build_sampler(models.denoiser, models.schedule, law_run.mask_id, sample,
                            models.energy if target else None)
    rows, seconds, energy_rows, nfe, steps_run = [], [], 0, 0, 0
    for batch in range(math.ceil(args.num / args.batch_size)):
        count = min(args.batch_size, args.num - batch * args.batch_size)
        x_init = torch.full((count, law_run.seq_len), law_run.mask_id, device=models.device)
        generator = torch.Generator(device=models.device).manual_seed(batch_seed(args.seed, batch))
        started = time.perf_counter()
        result = sampler.sample(x_init, generator)
        seconds.append((time.perf_counter() - started) / count)
        rows.append(result.tokens.cpu())
        energy_rows, nfe = energy_rows + result.energy_rows, nfe + result.nfe
        steps_run = max(steps_run, result.iterations)
    tokens = torch.cat(rows)
    law = law_run.law
    return {"set": models.name, "method": method, "T": steps, "k": k if target else 1, "fills": fills,
            "forbidden": law.forbidden(tokens).sum(-1).double().numpy(),
            "nll": (-law.log_prob(tokens, law_run.epsilon)).numpy(), "tokens": tokens.shape[1],
            "seconds_per_row": seconds, "energy_rows_per_row_step": energy_rows / max(1, args.num * steps_run),
            "nfe": nfe, "steps_run": steps_run, "first_rows": tokens[:4].tolist(),
            "first_rows_forbidden": law.forbidden(tokens[:4]).tolist()}


def ratio_interval(numerator: np.ndarray, denominator: float, indices: np.ndarray) -> Interval:
    """sum(numerator) / (n * denominator) with its percentile bootstrap interval over rows."""
    estimate = numerator.sum() / (len(numerator) * denominator)
    return percentile_interval(float(estimate), numerator[indices].sum(1) / (indices.shape[1] * denominator))


def summarise(row: dict, entropy_per_token: float, indices: np.ndarray) -> dict:
    """Intervals of one setting's rates (forbidden share, NLL excess per token) and seconds per row."""
    excess = row["nll"] - entropy_per_token * row["tokens"]
    seconds = geometric_interval(row["seconds_per_row"])
    return {"forbidden_rate": ratio_interval(row["forbidden"], row["tokens"], indices),
            "nll_excess": ratio_interval(excess, row["tokens"], indices), "seconds": seconds}


def paired_relative(a: dict, b: dict, key: str, indices: np.ndarray) -> Interval:
    """(rate_B / rate_A - 1) for the per-row sums ``key`` of two settings drawn on the same row seeds."""
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = b[key].sum() / a[key].sum() - 1.0
        replicates = b[key][indices].sum(1) / a[key][indices].sum(1) - 1.0
    return percentile_interval(float(estimate), replicates[np.isfinite(replicates)])


def comparisons(rows: list[dict], indices: np.ndarray) -> list[dict]:
    """Every EDLM setting against MDLM at the same T, and every reveal-set one against the paper's weights."""
    index = {(r["set"], r["method"], r["T"], r["k"]): r for r in rows}
    out = []
    for row in rows:
        if row["method"] == "mdlm":
            continue
        references = [("mdlm", 1)] + ([("row", row["k"])] if row["method"] in REVEAL_METHODS else [])
        for reference, k in references:
            base = index.get((row["set"], reference, row["T"], k))
            if base is None:
                continue
            interval = paired_relative(base, row, "forbidden", indices)
            out.append({"set": row["set"], "T": row["T"], "k": row["k"], "method": row["method"],
                        "against": reference, **interval.as_dict(), "verdict": verdict(interval)})
    return out


def matched_quality(rows: list[dict], indices: np.ndarray) -> list[dict]:
    """For each set: MDLM at the largest T against every EDLM setting with at most half its steps: does it reach
    MDLM's forbidden rate (significantly lower, or no significant difference), and in less wall-clock?"""
    out = []
    for name in sorted({r["set"] for r in rows}):
        plain = [r for r in rows if r["set"] == name and r["method"] == "mdlm"]
        if not plain:
            continue
        best = max(plain, key=lambda r: r["T"])
        for row in (r for r in rows if r["set"] == name and r["method"] != "mdlm" and 2 * r["T"] <= best["T"]):
            quality = paired_relative(best, row, "forbidden", indices)
            speed = welch_ratio(best["seconds_per_row"], row["seconds_per_row"])
            out.append({"set": name, "reference_T": best["T"], "method": row["method"], "T": row["T"], "k": row["k"],
                        "quality": {**quality.as_dict(), "verdict": verdict(quality)},
                        "speedup": speed.as_dict(), "reaches": quality.high <= 0 or not quality.significant,
                        "faster": speed.low > 1.0})
    return out


def target_verdicts(summaries: dict, compared: list[dict], matched: list[dict], length: int, ks: list[int]) -> list[str]:
    """The two targets of the module docstring, each one plain sentence with its numbers."""
    lines = []
    by_key = {(c["set"], c["method"], c["T"], c["k"], c["against"]): c for c in compared}
    T, k = length // 4, max(ks)
    if any(key[0] == "exact" for key in summaries):
        base = summaries.get(("exact", "mdlm", T, 1))
        for method in ("row",) + REVEAL_METHODS:
            entry = by_key.get(("exact", method, T, k, "mdlm"))
            if entry is None or base is None:
                continue
            reduction = -entry["estimate"]
            met = reduction >= TARGET_REDUCTION and entry["ci95"][1] < 0
            lines.append(f"exact models, T = {T}, k = {k}: {METHODS[method][2]}: forbidden rate "
                         f"{entry['verdict']} than MDLM's {base['forbidden_rate'].estimate:.2%}"
                         + ("" if method == "row" else f" -> target (>= {TARGET_REDUCTION:.0%} lower) "
                                                       f"{'met' if met else 'NOT met'}"))
    for entry in (c for c in compared if c["set"] == "trained" and c["method"] in REVEAL_METHODS):
        lines.append(f"trained models, T = {entry['T']}, k = {entry['k']}: {METHODS[entry['method']][2]} against "
                     f"{'MDLM' if entry['against'] == 'mdlm' else 'the paper' + chr(39) + 's weights'}: forbidden rate "
                     f"{entry['verdict']}")
    for entry in (m for m in matched if m["set"] == "trained"):
        speed = entry["speedup"]
        lines.append(f"trained models: {METHODS[entry['method']][2]}, k = {entry['k']}, T = {entry['T']} against MDLM "
                     f"at T = {entry['reference_T']}: {entry['quality']['verdict']}; speed-up {speed['estimate']:.2f}x "
                     f"(95% CI {speed['ci95'][0]:.2f}..{speed['ci95'][1]:.2f}) -> "
                     f"{'reaches MDLM quality faster' if entry['reaches'] and entry['faster'] else 'no'}")
    return lines


def table(summaries: dict) -> str:
    rows = []
    for (name, method, T, k), s in sorted(summaries.items(), key=lambda item: (item[0][0], item[0][2], item[0][3],
                                                                               list(METHODS).index(item[0][1]))):
        rows.append({"models": name, "T": T, "method": METHODS[method][2], "k": k,
                     "forbidden rate": format_interval(s["forbidden_rate"], ".2%"),
                     "NLL excess (nats/token)": format_interval(s["nll_excess"], ".4f"),
                     "ms per row": format_interval(s["seconds"].scaled(1e3), ".1f"),
                     "energy rows per row and step": f"{s['energy_rows']:.1f}"})
    return markdown_table(rows, list(rows[0]) if rows else [])


def plot(summaries: dict, path: Path) -> str | None:
    """Forbidden rate and NLL excess against ms per row: one line per (models, method, k), points labelled by T."""
    plt = pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(15, 6))
    lines: dict = {}
    for (name, method, T, k), s in summaries.items():
        lines.setdefault((name, method, k), []).append((T, s))
    for (name, method, k), points in sorted(lines.items()):
        points.sort()
        label = f"{name} models: {METHODS[method][2]}" + (f", k = {k}" if method != "mdlm" else "")
        style = "-" if name == "exact" else "--"
        for axis, key in zip(axes, ("forbidden_rate", "nll_excess")):
            x = [s["seconds"].estimate * 1e3 for _, s in points]
            y = [max(s[key].estimate, 1e-5) for _, s in points]
            low = [max(s[key].estimate - s[key].low, 0) for _, s in points]
            high = [max(s[key].high - s[key].estimate, 0) for _, s in points]
            drawn = axis.errorbar(x, y, yerr=[low, high], fmt="o" + style, capsize=3, label=label)
            for T, xi, yi in zip((T for T, _ in points), x, y):
                axis.annotate(f"T={T}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                              color=drawn[0].get_color())
    for axis, name in zip(axes, ("share of forbidden positions", "true NLL above exact rows (nats/token)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("milliseconds per row (log)")
        axis.set_ylabel(f"{name} (log; 95% CI)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    figure.suptitle("Known law: quality against cost (lower left is better)")
    return save_figure(plt, figure, path)[0]


def parse_args(argv):
    parser = OneLineParser(prog="edlm bench oracle", description=__doc__.split("\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--law", help="law folder (`edlm law make`); default: make the order-1 chain over 27 symbols, "
                                      "support 3, L = 128 in --out")
    parser.add_argument("--mdlm", help="MDLM run trained on the law's corpus (with --ar: the trained models)")
    parser.add_argument("--ar", help="AR run trained on the law's corpus (the trained models' energy)")
    parser.add_argument("--no-exact", action="store_true", help="leave out the exact models")
    parser.add_argument("--fractions", type=positive_ints("--fractions"), default="16,8,4,2",
                        help="T = L / f for each f")
    parser.add_argument("--k", type=positive_ints("--k"), default="4,16", help="candidates per step")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    parser.add_argument("--window", type=float_in("--window", 0.0, 1.0), default=1.0,
                        help="importance sampling for t >= 1 - window (the rest of the steps are plain MDLM's)")
    parser.add_argument("--sampler", default="cached", help="the sampler (any with a stated reveal set)")
    parser.add_argument("--num", type=positive_int("--num"), default=128, help="rows per setting")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=32,
                        help="rows per sampler call (the timing's repeats: --num / --batch-size, at least 2)")
    parser.add_argument("--seed", type=int, default=0, help="row seeds (shared by every setting: paired comparisons)")
    parser.add_argument("--device", default="cpu", help="device of the trained models (the law runs on the CPU)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="trained models' precision")
    parser.add_argument("--resamples", type=positive_int("--resamples"), default=2000, help="bootstrap resamples")
    parser.add_argument("--out", default="bench/results/oracle", help="folder for oracle.json/.md/.png")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown[0]!r} (valid: {', '.join(METHODS)})")
    if bool(args.mdlm) != bool(args.ar):
        parser.error("--mdlm and --ar go together (the trained models)")
    if args.num < 2 * args.batch_size:
        parser.error(f"--num {args.num} must be at least 2 x --batch-size {args.batch_size} (timing repeats)")
    return args


def default_law(out: Path) -> str:
    from edlm.law import make_law, make_law_folder

    folder = out / "law"
    if not (folder / "law.json").is_file():
        make_law_folder(make_law("markov", 27, 3, seed=0, order=1), folder, length=128)
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    law_run, exact = exact_models(args.law or default_law(out))
    sets = [] if args.no_exact else [exact]
    if args.mdlm:
        sets.append(trained_models(args.mdlm, args.ar, law_run, args.device, args.precision))
    entropy = law_run.law.row_entropy(law_run.seq_len) / law_run.seq_len
    indices = bootstrap_indices(args.num, args.resamples, args.seed)
    rows, summaries = [], {}
    steps_list = sorted({max(1, law_run.seq_len // f) for f in args.fractions})
    for models in sets:
        for steps in steps_list:
            for method in args.methods:
                if method == "reveal-exact" and models.name != "exact":
                    continue
                for k in ([1] if method == "mdlm" else args.k):
                    row = run_setting(models, law_run, method, steps, k, args)
                    rows.append(row)
                    summary = summarise(row, entropy, indices)
                    summary["energy_rows"] = row["energy_rows_per_row_step"]
                    summaries[(models.name, method, steps, row["k"])] = summary
                    print(f"{models.name:7s} T={steps:<4d} {method:13s} k={row['k']:<3d} forbidden "
                          f"{format_interval(summary['forbidden_rate'], '.2%')}  "
                          f"{summary['seconds'].estimate * 1e3:.1f} ms/row", flush=True)
    compared, matched = comparisons(rows, indices), matched_quality(rows, indices)
    verdicts = target_verdicts(summaries, compared, matched, law_run.seq_len, args.k)
    figure = plot(summaries, out / "oracle.png")
    payload = {"law": {"folder": args.law or str(out / "law"), "length": law_run.seq_len,
                       "vocab_size": law_run.vocab_size, "entropy_per_token_of_exact_rows": entropy},
               "settings": {k: v for k, v in vars(args).items()}, "environment": environment(args.device),
               "rows": [{**{k: v for k, v in r.items() if k not in ("forbidden", "nll")},
                         **{name: (s.as_dict() if isinstance(s, Interval) else s)
                            for name, s in summaries[(r["set"], r["method"], r["T"], r["k"])].items()},
                         "per_row": {"forbidden": r["forbidden"].tolist(), "nll": r["nll"].tolist()}} for r in rows],
               "comparisons": compared, "matched_quality": matched, "verdicts": verdicts}
    text = "\n".join(["## Verdicts", ""] + [f"- {line}" for line in verdicts]
                     + ["", "## Every setting (95% CI over rows)", "", table(summaries)]
                     + (["", f"![quality against cost]({Path(figure).name})"] if figure else []))
    write_results(out, "oracle", payload, text)
    print("\n" + "\n".join(verdicts))
    return 0
