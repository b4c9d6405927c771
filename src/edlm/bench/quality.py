"""``edlm bench quality``: sample quality vs wall-clock over sampler x energy x steps, with 95% intervals.

    edlm bench quality --mdlm RUN --ar RUN --judge run:DIR|hf:DIR_OR_NAME [--nce RUN] [--samplers cached,...]
                       [--steps 8,16,32,64,128,256] [--num 16] [--grid cpu|full] [--device D]
                       [--metric judge_bpc|gen_ppl] [--reference DATA_DIR [--mauve-seeds 0,1,2]]
                       [--out bench/results/quality]

Every setting samples ``--num`` sequences with the same seed, so sample i of every setting starts from the
same random stream and two settings are compared with a paired bootstrap over sample indices
(``edlm.stats``). A separate judge (never the energy model) scores them. Outputs in ``--out``:

    quality.jsonl  one row per setting, with EVERY sample text and the per-sample judge scores (any judge can
                   re-score them later; ``--resume`` keeps the rows already there); with ``--reference``, each
                   row's MAUVE against the test split (judge features, k-means seeds reported)
    quality.json   the summary (rows without texts, comparisons, speed-ups, Pareto front, IS effects)
    quality.md     the tables; quality.png the plots

Rules (docs/method.md §2): a difference is stated ("X% lower (95% CI a..b)") only when its 95% paired
interval excludes 0, else "no significant difference". A setting counts as better than the baseline
(MDLM with the first ``--samplers`` entry) only where its interval clears the baseline's at equal or lower
seconds per sample, with entropy within 3% of the baseline's. A matched-quality speed-up is declared only
for a point that is significantly better than the baseline at T = L and faster; it is then a lower bound.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tqdm.auto import tqdm

from edlm.bench import BenchError
from edlm.bench.common import environment, markdown_table, pyplot, write_results
from edlm.bench.verdicts import (
    BASELINE_METHOD,
    ENTROPY_TOLERANCE,
    compare,
    importance_effects,
    matched_speedups,
    pareto_front,
    rank_settings,
)
from edlm.flags import OneLineParser, positive_int
from edlm.sampling import SAMPLERS


@dataclasses.dataclass(frozen=True)
class Method:
    """One energy setting of the sweep (``energy`` None: plain MDLM)."""

    name: str
    energy: str | None = None  # None (MDLM), "ar" or "nce"
    mode: str = "coar"
    k: int = 1
    window: float = 0.0
    steps: tuple[int, ...] | None = None  # None: every T of the sweep


def method_grid(grid: str, steps: list[int], has_nce: bool, length: int) -> list[Method]:
    """``full``: every mode x k in {2, 4, 8} x window in {0.2, 1.0} at every T (GPU-sized).
    ``cpu``: the complete curve for the main settings, the T = L/8, L/4, L points for the rest, and k = 8 only
    at L/8 and L/4 (it costs 8 AR passes per step)."""
    few = tuple(T for T in steps if T in (length // 8, length // 4, length)) or tuple(steps)
    fewer = tuple(T for T in few if T != length) or few
    methods = [Method(BASELINE_METHOD)]
    if grid == "full":
        for mode in ("coar", "full"):
            for k in (2, 4, 8):
                for window in (0.2, 1.0):
                    methods.append(Method(f"edlm-ar-{mode}-k{k}-w{window}", "ar", mode, k, window))
    else:
        methods += [Method("edlm-ar-coar-k2-w0.2", "ar", "coar", 2, 0.2),
                    Method("edlm-ar-coar-k2-w1.0", "ar", "coar", 2, 1.0),
                    Method("edlm-ar-full-k2-w1.0", "ar", "full", 2, 1.0, few),
                    Method("edlm-ar-coar-k4-w1.0", "ar", "coar", 4, 1.0, few),
                    Method("edlm-ar-coar-k4-w0.2", "ar", "coar", 4, 0.2, few),
                    Method("edlm-ar-coar-k8-w1.0", "ar", "coar", 8, 1.0, fewer)]
    if has_nce:
        methods += [Method("edlm-nce-k2-w1.0", "nce", "coar", 2, 1.0),
                    Method("edlm-nce-k4-w0.2", "nce", "coar", 4, 0.2, few)]
    return methods


# ----------------------------------------------------------------------------------------------------------
# the one place that turns a setting into samples (sampler configs are being reworked: change only this)


def draw_samples(model, config, sampler: str, steps: int, method: Method, energy, num: int, seed: int,
                 batch_size: int, precision: str, tokenizer=None) -> tuple[list[str], dict]:
    """Sample ``num`` texts of the model's length with one setting -> (texts, timing/NFE stats)."""
    from edlm.sampling.config import SampleConfig
    from edlm.sampling.generate import generate

    spec = SampleConfig(num=num, steps=steps, length=config.model.seq_len, sampler=sampler, seed=seed,
                        k=method.k, window=method.window, batch_size=batch_size, precision=precision)
    texts, result = generate(model, config, spec, energy, tokenizer=tokenizer)
    return texts, {"seconds": result.seconds, **result.costs()}


# ----------------------------------------------------------------------------------------------------------
# plots


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
    fig.tight_layout()
    path = out / "quality.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


# ----------------------------------------------------------------------------------------------------------
# the benchmark


def make_row(setting: str, sampler: str, method: Method, steps: int, texts: list[str], stats: dict,
             metrics: dict, num: int, seed: int) -> dict:
    """One JSONL row: the setting, timing, summary metrics with intervals, per-sample scores, every text."""
    keep = ("gen_ppl", "judge_bpc", "entropy_bits", "entropy_nats", "ci95", "distinct", "repetition_4",
            "self_bleu", "mauve", "per_sample")
    return {"setting": setting, "sampler": sampler, "method": method.name, "steps": steps, "k": method.k,
            "window": method.window, "energy": method.energy or "none",
            "mode": method.mode if method.energy else "", "seconds_per_sample": stats["seconds"] / num,
            **{key: value for key, value in stats.items() if key != "seconds"},
            **{key: metrics[key] for key in keep if key in metrics}, "seed": seed, "samples": texts}


def summary_tables(rows: list[dict], baseline: str, length: int, metric: str, num_resamples: int) -> tuple[dict, str]:
    """Every comparison of the benchmark -> (JSON-able dict, markdown)."""
    swept = [r for r in rows if r["setting"] != "ar"]
    comparisons = [compare(r, base, metric, num_resamples) for r in swept if r["setting"] != baseline
                   for base in [next((b for b in swept if b["setting"] == baseline and b["steps"] == r["steps"]),
                                     None)] if base is not None]
    speedups = matched_speedups(swept, baseline, length, metric, num_resamples)
    base_rows = [r for r in swept if r["setting"] == baseline]
    min_entropy = (1 - ENTROPY_TOLERANCE) * sum(r["entropy_bits"] for r in base_rows) / len(base_rows) \
        if base_rows else None
    front = pareto_front(swept, metric, min_entropy)
    effects = importance_effects(swept, metric, num_resamples)
    ranking = rank_settings(swept, baseline, metric, num_resamples)
    for row in rows:
        row["ci_text"] = {key: f"{row[key]:.4g} [{row['ci95'][key][0]:.4g}, {row['ci95'][key][1]:.4g}]"
                          for key in ("gen_ppl", "judge_bpc", "entropy_bits")}
    flat = [{**r, **{f"{key} [95% CI]": text for key, text in r["ci_text"].items()}} for r in rows]
    for r in flat:
        mauve = r.get("mauve") or {}
        r["MAUVE"] = "-" if mauve.get("mauve") is None else f"{mauve['mauve']:.3f}"
    table = markdown_table(flat, ["setting", "steps", "judge_bpc [95% CI]", "gen_ppl [95% CI]",
                                  "entropy_bits [95% CI]", "MAUVE", "nfe", "seconds_per_sample"],
                           {"seconds_per_sample": ".4f"})
    table += (f"\n\nAgainst {baseline} at the same T, paired over samples ({metric}; entropy):\n\n"
              + markdown_table(comparisons, ["steps", "setting", "verdict", "entropy_verdict"]))
    target = speedups[0]["target"].replace(" T=", " at T = ") if speedups else f"{baseline} at T = {length}"
    table += (f"\n\nSpeed-up at matched quality (target: {target}, the baseline at T = L or its largest T swept; "
              f"declared only where the "
              f"95% interval clears):\n\n"
              + markdown_table([{**s, "speedup": s["speedup"] or "none"} for s in speedups],
                               ["setting", "target", "steps", "seconds", "speedup", "verdict", "note"],
                               {"speedup": ".2f", "seconds": ".4f"}))
    table += (f"\n\nPareto front of {metric} vs seconds per sample (point estimates, fastest first; settings whose "
              f"entropy is more than {ENTROPY_TOLERANCE:.0%} below the baseline's are left out):\n\n"
              + markdown_table(front, ["setting", "steps", metric, "seconds_per_sample", "entropy_bits"],
                               {metric: ".4f", "seconds_per_sample": ".4f", "entropy_bits": ".4f"}))
    table += ("\n\nDoes importance sampling move each sampler? (against the same sampler without energy, "
              "same T)\n\n" + markdown_table(effects, ["sampler", "setting", "steps", "verdict", "entropy_verdict"]))
    table += (f"\n\nRanking (better than {baseline} = interval clears at equal or lower seconds, entropy within "
              f"{ENTROPY_TOLERANCE:.0%}):\n\n"
              + markdown_table(ranking[:10], ["setting", "steps", metric, "counts_as_better", "beats"],
                               {metric: ".4f"}))
    return {"comparisons": comparisons, "speedups": speedups, "pareto_front": [
        {"setting": r["setting"], "steps": r["steps"]} for r in front], "importance_effects": effects,
        "ranking": ranking}, table


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mdlm", required=True, help="MDLM run folder (the denoiser)")
    parser.add_argument("--ar", required=True, help="AR run used as the energy and as the AR baseline")
    parser.add_argument("--judge", required=True, help="run:DIR or hf:DIR_OR_NAME (must not be the energy model)")
    parser.add_argument("--nce", help="EDLM-NCE energy run folder (optional)")
    parser.add_argument("--samplers", default="cached",
                        help="comma-separated samplers to sweep; the first one's MDLM is the baseline "
                             f"(default: %(default)s; valid: {', '.join(SAMPLERS)})")
    parser.add_argument("--steps", default="8,16,32,64,128,256", help="comma-separated T values (default: %(default)s)")
    parser.add_argument("--num", type=positive_int("--num"), default=16,
                        help="samples per setting (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every setting")
    parser.add_argument("--grid", default="cpu", choices=["cpu", "full"], help="energy settings (default: %(default)s)")
    parser.add_argument("--methods", help="comma-separated subset of the grid's methods (--grid cpu: "
                        + ", ".join(m.name for m in method_grid("cpu", [], True, 256)) + "; --grid full: mdlm, "
                        + ", ".join(m.name for m in method_grid("full", [], True, 256)[1:]) + "; edlm-nce-* need "
                        "--nce)")
    parser.add_argument("--metric", default="judge_bpc", choices=["judge_bpc", "gen_ppl"],
                        help="quality metric of the verdicts and the Pareto front (default: %(default)s)")
    parser.add_argument("--bootstrap", type=positive_int("--bootstrap"), default=2000,
                        help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                        help="network precision (categorical draws are float64 either way)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    parser.add_argument("--reference", metavar="DATA_DIR",
                        help="also MAUVE of every row against this data folder's test split (needs mauve-text)")
    parser.add_argument("--mauve-seeds", default="0",
                        help="k-means seeds MAUVE is averaged over (default: %(default)s)")
    parser.add_argument("--out", default="bench/results/quality",
                        help="folder for the JSON, markdown, plot and the samples (JSONL)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in OUT/quality.jsonl")
    args = parser.parse_args(argv)
    from edlm.checkpoint import load_model, load_run_tokenizer
    from edlm.device import resolve_device
    from edlm.energy.ar import AREnergy, check_compatible
    from edlm.evaluation.generation import evaluate_samples
    from edlm.evaluation.judges import make_judge

    if Path(args.judge.split(":", 1)[-1]).resolve() == Path(args.ar).resolve():
        raise BenchError("--judge must not be the energy model (--ar): use a separately trained model")
    device = resolve_device(args.device)
    steps = sorted(int(s) for s in args.steps.split(","))
    samplers = [s for s in args.samplers.split(",") if s]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config, mdlm = load_model(args.mdlm, device=device)
    tokenizer = load_run_tokenizer(Path(args.mdlm), config)
    ar_config, ar_model = load_model(args.ar, device=device)
    check_compatible(ar_config.model, config.model, args.ar)
    energies = {("ar", mode): AREnergy(ar_model, config.model.mask_id, mode, precision=args.precision)
                for mode in ("coar", "full")}
    if args.nce:
        from edlm.energy import make_energy

        energies[("nce", "coar")] = make_energy(f"nce:{args.nce}", config.model, device=device,
                                                precision=args.precision)
    judge = make_judge(args.judge, device)
    length = config.model.seq_len
    methods = method_grid(args.grid, steps, bool(args.nce), length)
    if args.methods:
        wanted = set(args.methods.split(","))
        methods = [m for m in methods if m.name in wanted]
    jobs = [(sampler, m, T) for sampler in samplers for m in methods for T in (m.steps or steps)]
    results_file = out / "quality.jsonl"
    rows = [json.loads(line) for line in results_file.read_text().splitlines() if line.strip()] \
        if args.resume and results_file.exists() else []
    if any("setting" not in r or "per_sample" not in r for r in rows):
        raise BenchError(f"--resume: {results_file} was written by an older edlm (rows without per-sample "
                         f"scores); move it away or run without --resume")
    done = {(r["setting"], r["steps"]) for r in rows}
    if not args.resume:
        results_file.write_text("")

    def keep(row: dict) -> None:
        rows.append(row)
        with open(results_file, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    references, mauve_seeds = None, [int(seed) for seed in args.mauve_seeds.split(",")]
    if args.reference:
        from edlm.evaluation.mauve_score import reference_texts

        references = reference_texts(args.reference, args.num, length, seed=args.seed)

    def evaluate(texts: list[str]) -> dict:
        return evaluate_samples(texts, judge, references, mauve_seeds, num_resamples=args.bootstrap, seed=args.seed)

    todo = [job for job in jobs if (f"{job[0]}:{job[1].name}", job[2]) not in done]
    for sampler, method, T in tqdm(todo, desc="quality sweep"):
        energy = energies[(method.energy, method.mode)] if method.energy else None
        texts, stats = draw_samples(mdlm, config, sampler, T, method, energy, args.num, args.seed, args.num,
                                    args.precision, tokenizer)
        metrics = evaluate(texts)
        keep(make_row(f"{sampler}:{method.name}", sampler, method, T, texts, stats, metrics, args.num, args.seed))
    if not any(r["setting"] == "ar" for r in rows):
        from edlm.sampling.ar import generate_ar

        texts, stats = generate_ar(ar_model, ar_config, args.num, length, args.seed, batch_size=args.num,
                                   tokenizer=tokenizer)
        metrics = evaluate(texts)
        row = make_row("ar", "ar", Method("ar"), length, texts, stats, metrics, args.num, args.seed)
        keep({**row, "sampler": "ar", "nfe_per_sequence": stats["nfe"]})
    baseline = f"{samplers[0]}:{BASELINE_METHOD}"
    summary, table = summary_tables(rows, baseline, length, args.metric, args.bootstrap)
    front_rows = [r for r in rows if {"setting": r["setting"], "steps": r["steps"]} in summary["pareto_front"]]
    plots = plot(rows, front_rows, args.metric, out)
    if not plots:
        table += "\n\n(matplotlib not installed: no plots; pip install 'edlm[plot]')"
    brief = [{key: value for key, value in r.items() if key not in ("samples", "per_sample", "ci_text")}
             for r in rows]
    payload = {"rows": brief, **summary, "plots": plots, "baseline": baseline, "metric": args.metric,
               "samples_file": str(results_file), "settings": vars(args),
               "methods": [dataclasses.asdict(m) for m in methods],
               "models": {"mdlm": json.loads(config.to_json()), "ar": json.loads(ar_config.to_json())},
               "environment": environment()}
    write_results(out, "quality", payload, table)
    return 0
