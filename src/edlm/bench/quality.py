"""``edlm bench quality``: sample quality vs wall-clock over sampler x energy x steps, with 95% intervals.

    edlm bench quality --mdlm RUN --ar RUN --judge run:DIR|hf:DIR_OR_NAME [--nce RUN] [--samplers cached,...]
                       [--steps 8,16,32,64,128,256] [--temperatures 0.8,0.9,1.0] [--num 16] [--grid cpu|full]
                       [--protocol native|mdlm|remdm|edlm] [--device D] [--metric judge_bpc|gen_ppl]
                       [--reference DATA_DIR [--mauve-seeds 25,26]] [--out bench/results/quality]

Every setting samples ``--num`` sequences with the same seed, so sample i of every setting starts from the
same random stream and two settings are compared with a paired bootstrap over sample indices
(``edlm.stats``). A separate judge (never the energy model) scores them. Outputs in ``--out``:

    quality.jsonl  one row per setting and temperature, with EVERY sample text and the per-sample judge scores
                   (any judge can re-score them later; ``--resume`` keeps the rows already there); with
                   ``--reference``, each row's MAUVE by ReMDM's protocol (``evaluation.mauve_score``)
    quality.json   the summary (rows without texts, comparisons, speed-ups, Pareto front, IS effects, the
                   generative frontiers over ``--temperatures``); every row names its ``--protocol``
    quality.md     the tables; quality.png the plots, quality_frontier.png the frontiers (``bench.frontier``)

The verdict tables compare settings at one temperature (1.0 when swept, else the highest); a temperature sweep
is reported as generative frontiers of judge NLL against entropy, one curve per setting.

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
from edlm.bench.common import environment, markdown_table, write_results
from edlm.bench.verdicts import (
    BASELINE_METHOD,
    ENTROPY_TOLERANCE,
    compare,
    importance_effects,
    matched_speedups,
    pareto_front,
    rank_settings,
    reveal_effects,
)
from edlm.evaluation.protocols import PROTOCOLS
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
    is_target: str = "row"  # where the importance weights look (SampleConfig.is_target)
    fills: int = 1  # M, for the reveal targets


def method_grid(grid: str, steps: list[int], has_nce: bool, length: int) -> list[Method]:
    """``full``: every mode x k in {2, 4, 8} x window in {0.2, 1.0} at every T (GPU-sized).
    ``cpu``: the complete curve for the main settings, the T = L/8, L/4, L points for the rest, and k = 8 only
    at L/8 and L/4 (it costs 8 AR passes per step). Both grids add reveal-set twins (``-reveal``: weights on the
    tokens a step reveals, one shared fill, as many energy rows as the row weighting) of the k = 2 and k = 4 settings
    with window 1.0 at T = L/8 and L/4."""
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
    quarter = tuple(T for T in steps if T in (length // 8, length // 4)) or fewer
    twins = [m for m in methods if m.energy == "ar" and m.window == 1.0 and m.k in (2, 4)]
    methods += [dataclasses.replace(m, name=f"{m.name}-reveal", steps=quarter, is_target="reveal") for m in twins]
    return methods


# ----------------------------------------------------------------------------------------------------------
# the one place that turns a setting into samples (sampler configs are being reworked: change only this)


def draw_samples(model, config, sampler: str, steps: int, method: Method, energy, num: int, seed: int,
                 batch_size: int, precision: str, tokenizer=None, temperature: float = 1.0
                 ) -> tuple[list[str], dict, list[list[int]]]:
    """Sample ``num`` texts of the model's length with one setting -> (texts, timing/NFE stats, token ids)."""
    from edlm.sampling.config import SampleConfig
    from edlm.sampling.generate import generate

    spec = SampleConfig(num=num, steps=steps, length=config.model.seq_len, sampler=sampler, seed=seed,
                        k=method.k, window=method.window, batch_size=batch_size, precision=precision,
                        temperature=temperature, is_target=method.is_target, fills=method.fills)
    texts, result = generate(model, config, spec, energy, tokenizer=tokenizer)
    return texts, {"seconds": result.seconds, **result.costs()}, result.tokens.tolist()


# ----------------------------------------------------------------------------------------------------------
# the benchmark


def make_row(setting: str, sampler: str, method: Method, steps: int, texts: list[str], stats: dict,
             metrics: dict, num: int, seed: int, temperature: float = 1.0) -> dict:
    """One JSONL row: the setting, timing, summary metrics with intervals, per-sample scores, every text."""
    keep = ("gen_ppl", "judge_bpc", "entropy_bits", "entropy_nats", "protocol", "entropy", "entropy_unit",
            "entropy_of", "ci95", "distinct", "repetition_4", "self_bleu", "mauve", "per_sample")
    return {"setting": setting, "sampler": sampler, "method": method.name, "steps": steps,
            "temperature": temperature, "k": method.k, "window": method.window, "energy": method.energy or "none",
            "mode": method.mode if method.energy else "", "is_target": method.is_target if method.energy else "",
            "seconds_per_sample": stats["seconds"] / num,
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
    reveal = reveal_effects(swept, metric, num_resamples)
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
    table += ("\n\nWeights on the revealed tokens against the paper's whole-row weights (same energy, k, sampler and "
              "T)\n\n" + markdown_table(reveal, ["sampler", "setting", "steps", "verdict", "entropy_verdict"]))
    table += (f"\n\nRanking (better than {baseline} = interval clears at equal or lower seconds, entropy within "
              f"{ENTROPY_TOLERANCE:.0%}):\n\n"
              + markdown_table(ranking[:10], ["setting", "steps", metric, "counts_as_better", "beats"],
                               {metric: ".4f"}))
    return {"comparisons": comparisons, "speedups": speedups, "pareto_front": [
        {"setting": r["setting"], "steps": r["steps"]} for r in front], "importance_effects": effects,
        "reveal_effects": reveal,
        "ranking": ranking}, table


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="edlm bench quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mdlm", required=True, help="MDLM run folder (the denoiser)")
    parser.add_argument("--ar", required=True, help="AR run used as the energy and as the AR baseline")
    parser.add_argument("--judge", required=True, help="run:DIR or hf:DIR_OR_NAME (must not be the energy model)")
    parser.add_argument("--nce", help="EDLM-NCE energy run folder (optional)")
    parser.add_argument("--samplers", default="cached",
                        help="comma-separated samplers to sweep; the first one's MDLM is the baseline "
                             f"(default: %(default)s; valid: {', '.join(SAMPLERS)})")
    parser.add_argument("--steps", default="8,16,32,64,128,256", help="comma-separated T values (default: %(default)s)")
    parser.add_argument("--temperatures", default="1.0",
                        help="comma-separated sampling temperatures: every setting at each, reported as generative "
                             "frontiers of judge NLL against entropy (default: %(default)s)")
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
    parser.add_argument("--protocol", default="native", choices=list(PROTOCOLS),
                        help="gen-PPL and entropy rules (as `edlm eval-gen --protocol`; default: %(default)s)")
    parser.add_argument("--bootstrap", type=positive_int("--bootstrap"), default=2000,
                        help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                        help="network precision (categorical draws are float64 either way)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    parser.add_argument("--reference", metavar="DATA_DIR",
                        help="also MAUVE of every row against whole val rows of this data folder (needs mauve-text)")
    parser.add_argument("--mauve-seeds", default="25",
                        help="k-means seeds MAUVE is averaged over (default: %(default)s, mauve's own)")
    parser.add_argument("--out", default="bench/results/quality",
                        help="folder for the JSON, markdown, plot and the samples (JSONL)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in OUT/quality.jsonl")
    return parser


@dataclasses.dataclass
class Setup:
    """Everything the sweep reads: the models, their tokenizer, the energies and the judge."""

    config: object
    mdlm: object
    tokenizer: object
    ar_config: object
    ar_model: object
    energies: dict
    judge: object


def load_setup(args, device) -> Setup:
    from edlm.checkpoint import load_model, load_run_tokenizer
    from edlm.energy.ar import AREnergy, check_compatible
    from edlm.evaluation.judges import make_judge

    if Path(args.judge.split(":", 1)[-1]).resolve() == Path(args.ar).resolve():
        raise BenchError("--judge must not be the energy model (--ar): use a separately trained model")
    config, mdlm = load_model(args.mdlm, device=device)
    tokenizer = load_run_tokenizer(Path(args.mdlm), config)
    ar_config, ar_model = load_model(args.ar, device=device)
    check_compatible(ar_config.model, config.model, args.ar)
    energies = {("ar", mode): AREnergy(ar_model, config.model.mask_id, mode, precision=args.precision)
                for mode in ("coar", "full")}
    if args.nce:
        from edlm.energy import make_energy

        energies[("nce", "coar")] = make_energy(f"nce:{args.nce}", config.model, device=device,
                                                precision=args.precision, tokenizer=tokenizer)
    return Setup(config, mdlm, tokenizer, ar_config, ar_model, energies, make_judge(args.judge, device))


def read_rows(results_file: Path, resume: bool) -> list[dict]:
    """The rows a ``--resume`` keeps (none otherwise: the file is emptied)."""
    if not resume:
        results_file.write_text("")
        return []
    rows = [json.loads(line) for line in results_file.read_text().splitlines() if line.strip()] \
        if results_file.exists() else []
    if any("setting" not in r or "per_sample" not in r for r in rows):
        raise BenchError(f"--resume: {results_file} was written by an older edlm (rows without per-sample "
                         f"scores); move it away or run without --resume")
    return rows


def sweep(args, setup: Setup, methods: list[Method], steps: list[int], temperatures: list[float], rows: list[dict],
          results_file: Path) -> None:
    """Sample and score every (sampler, method, T, temperature) not in ``rows`` yet (T: ``steps`` unless the
    method names its own), and the AR baseline at each temperature; each row is appended to ``results_file`` as
    soon as it is done."""
    length = setup.config.model.seq_len
    references, mauve_seeds = None, [int(seed) for seed in args.mauve_seeds.split(",")]
    if args.reference:
        from edlm.evaluation.mauve_score import reference_texts

        references = reference_texts(args.reference, args.num, length, seed=args.seed)

    def keep(row: dict) -> None:
        rows.append(row)
        with open(results_file, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def evaluate(texts: list[str], token_ids=None) -> dict:
        from edlm.evaluation.generation import evaluate_samples

        return evaluate_samples(texts, setup.judge, references, mauve_seeds, num_resamples=args.bootstrap,
                                seed=args.seed, protocol=args.protocol, max_tokens=length, token_ids=token_ids,
                                sampler_tokenizer=setup.tokenizer)

    done = {(r["setting"], r["steps"], r.get("temperature", 1.0)) for r in rows}
    jobs = [(sampler, m, T, tau) for sampler in [s for s in args.samplers.split(",") if s] for m in methods
            for T in (m.steps or steps) for tau in temperatures if (f"{sampler}:{m.name}", T, tau) not in done]
    for sampler, method, T, tau in tqdm(jobs, desc="quality sweep"):
        energy = setup.energies[(method.energy, method.mode)] if method.energy else None
        texts, stats, token_ids = draw_samples(setup.mdlm, setup.config, sampler, T, method, energy, args.num,
                                               args.seed, args.num, args.precision, setup.tokenizer, tau)
        keep(make_row(f"{sampler}:{method.name}", sampler, method, T, texts, stats, evaluate(texts, token_ids),
                      args.num, args.seed, tau))
    for tau in (tau for tau in temperatures if ("ar", length, tau) not in done):
        from edlm.sampling.ar import generate_ar

        texts, stats = generate_ar(setup.ar_model, setup.ar_config, args.num, length, args.seed, temperature=tau,
                                   batch_size=args.num, precision=args.precision, tokenizer=setup.tokenizer)
        row = make_row("ar", "ar", Method("ar"), length, texts, stats, evaluate(texts), args.num, args.seed, tau)
        keep({**row, "sampler": "ar", "nfe_per_sequence": stats["nfe"]})


def _floats(text: str) -> list[float]:
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        raise BenchError(f"--temperatures {text!r}: expected comma-separated numbers, e.g. 0.8,0.9,1.0") from None
    if any(not value > 0 for value in values):
        raise BenchError(f"--temperatures {text!r}: every temperature must be > 0")
    return values


def write_outputs(args, setup: Setup, methods: list[Method], temperatures: list[float], rows: list[dict],
                  results_file: Path) -> None:
    """The summary (verdicts at the reference temperature, frontiers over all temperatures), tables and plots."""
    from edlm.bench.frontier import frontier_table, frontiers
    from edlm.bench.quality_plots import plot, plot_frontiers

    out, length = Path(args.out), setup.config.model.seq_len
    reference_tau = 1.0 if 1.0 in temperatures else max(temperatures)
    at_tau = [r for r in rows if r.get("temperature", 1.0) == reference_tau]
    baseline = f"{args.samplers.split(',')[0]}:{BASELINE_METHOD}"
    summary, table = summary_tables(at_tau, baseline, length, args.metric, args.bootstrap)
    front_rows = [r for r in at_tau if {"setting": r["setting"], "steps": r["steps"]} in summary["pareto_front"]]
    plots = plot(at_tau, front_rows, args.metric, out)
    curves = frontiers(rows, args.metric)
    plots += plot_frontiers(curves, args.metric, out) if len(temperatures) > 1 else []
    table = (f"Protocol: {args.protocol}. Verdicts at temperature {reference_tau:g}.\n\n{table}\n\n"
             f"{frontier_table(curves, args.metric)}")
    if not plots:
        table += "\n\n(matplotlib not installed: no plots; pip install 'edlm[plot]')"
    brief = [{key: value for key, value in r.items() if key not in ("samples", "per_sample", "ci_text")}
             for r in rows]
    payload = {"rows": brief, **summary, "frontiers": curves, "plots": plots, "baseline": baseline,
               "metric": args.metric, "protocol": args.protocol, "reference_temperature": reference_tau,
               "samples_file": str(results_file), "settings": vars(args),
               "methods": [dataclasses.asdict(m) for m in methods],
               "models": {"mdlm": json.loads(setup.config.to_json()), "ar": json.loads(setup.ar_config.to_json())},
               "environment": environment()}
    write_results(out, "quality", payload, table)


def main(argv: list[str] | None = None) -> int:
    from edlm.device import resolve_device

    args = build_parser().parse_args(argv)
    temperatures = _floats(args.temperatures)  # checked before the models load
    setup = load_setup(args, resolve_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = sorted(int(s) for s in args.steps.split(","))
    methods = method_grid(args.grid, steps, bool(args.nce), setup.config.model.seq_len)
    if args.methods:
        methods = [m for m in methods if m.name in set(args.methods.split(","))]
    results_file = out / "quality.jsonl"
    rows = read_rows(results_file, args.resume)
    sweep(args, setup, methods, steps, temperatures, rows, results_file)
    write_outputs(args, setup, methods, temperatures, rows, results_file)
    return 0
