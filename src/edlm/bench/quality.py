"""Generation quality vs steps and vs wall-clock: MDLM, EDLM-AR (coar/full), EDLM-NCE and the AR model.

    edlm bench quality --mdlm RUN --ar RUN --judge run:DIR [--nce RUN] [--steps 8,16,32,64,128,256]
                       [--num 16] [--grid cpu|full] [--out bench/results/quality]

Every configuration samples the same number of sequences with the same seed; a separate judge (never the
energy model) scores them. Writes quality.json / quality.md and PNG plots (gen-PPL vs steps, gen-PPL vs
seconds per sample, entropy vs steps), and states the speed-up at matched quality: the wall-clock ratio
MDLM / EDLM at the gen-PPL MDLM reaches with T = L steps, interpolated between measured points (log T),
with the entropy at that point compared to MDLM's (flagged if more than 2% lower).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from edlm.bench import BenchError
from edlm.bench.common import environment, markdown_table, write_results
from edlm.checkpoint import load_model
from edlm.config import SampleConfig
from edlm.sampling.generate import generate


@dataclasses.dataclass(frozen=True)
class Method:
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
    methods = [Method("mdlm")]
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


def interpolate_match(points: list[dict], target: float) -> dict | None:
    """First crossing of gen_ppl below ``target`` along increasing T, interpolated in log T.

    Returns {"steps", "seconds", "entropy_bits", "exact": bool}; ``exact`` False means the curve was already
    below target at its smallest T (the time there is an upper bound, the speed-up a lower bound).
    """
    points = sorted(points, key=lambda p: p["steps"])
    if points[0]["gen_ppl"] <= target:
        p = points[0]
        return {"steps": p["steps"], "seconds": p["seconds_per_sample"], "entropy_bits": p["entropy_bits"],
                "exact": False}
    for a, b in zip(points, points[1:]):
        if a["gen_ppl"] > target >= b["gen_ppl"]:
            f = (a["gen_ppl"] - target) / (a["gen_ppl"] - b["gen_ppl"])
            log_steps = math.log(a["steps"]) + f * (math.log(b["steps"]) - math.log(a["steps"]))
            lerp = lambda key: a[key] + f * (b[key] - a[key])  # noqa: E731
            return {"steps": math.exp(log_steps), "seconds": lerp("seconds_per_sample"),
                    "entropy_bits": lerp("entropy_bits"), "exact": True}
    return None


def matched_speedups(rows: list[dict], length: int) -> list[dict]:
    mdlm = [r for r in rows if r["method"] == "mdlm"]
    reference = next((r for r in mdlm if r["steps"] == length), max(mdlm, key=lambda r: r["steps"]))
    out = []
    for method in sorted({r["method"] for r in rows} - {"mdlm", "ar"}):
        points = [r for r in rows if r["method"] == method]
        if len(points) < 2:
            continue
        match = interpolate_match(points, reference["gen_ppl"])
        entry = {"method": method, "target_gen_ppl": reference["gen_ppl"],
                 "mdlm_seconds": reference["seconds_per_sample"], "mdlm_entropy_bits": reference["entropy_bits"]}
        if match is None:
            entry.update(speedup=None, note="never reaches MDLM's quality at T = L in the sweep")
        else:
            drop = 1 - match["entropy_bits"] / reference["entropy_bits"]
            entry.update(matched_steps=match["steps"], edlm_seconds=match["seconds"],
                         speedup=reference["seconds_per_sample"] / match["seconds"],
                         entropy_bits=match["entropy_bits"], entropy_drop=drop,
                         note=("" if match["exact"] else "already below target at the smallest T: speed-up is "
                               "a lower bound; ") + ("entropy within 2%" if drop <= 0.02 else
                                                     "ENTROPY MORE THAN 2% BELOW MDLM"))
        out.append(entry)
    return out


def plot(rows: list[dict], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install 'edlm[plot]')")
        return []
    methods = sorted({r["method"] for r in rows if r["method"] != "ar"}, key=lambda m: (m != "mdlm", m))
    ar = [r for r in rows if r["method"] == "ar"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for method in methods:
        points = sorted((r for r in rows if r["method"] == method), key=lambda r: r["steps"])
        style = dict(marker="o", linewidth=2.5 if method == "mdlm" else 1.3, color="black" if method == "mdlm"
                     else None)
        axes[0].plot([p["steps"] for p in points], [p["gen_ppl"] for p in points], label=method, **style)
        axes[1].plot([p["seconds_per_sample"] for p in points], [p["gen_ppl"] for p in points], label=method,
                     **style)
        axes[2].plot([p["steps"] for p in points], [p["entropy_bits"] for p in points], label=method, **style)
    for r in ar:
        axes[0].axhline(r["gen_ppl"], color="gray", linestyle="--", label="AR model")
        axes[1].axhline(r["gen_ppl"], color="gray", linestyle="--", label="AR model")
        axes[2].axhline(r["entropy_bits"], color="gray", linestyle="--", label="AR model")
    titles = [("sampling steps T", "generative perplexity (judge)"),
              ("seconds per sample (wall-clock)", "generative perplexity (judge)"),
              ("sampling steps T", "unigram entropy (bits)")]
    for axis, (xlabel, ylabel) in zip(axes, titles):
        axis.set_xscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("MDLM vs EDLM: quality vs steps and vs wall-clock (float64 sampling)")
    fig.tight_layout()
    path = out / "quality.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edlm bench quality")
    parser.add_argument("--mdlm", required=True)
    parser.add_argument("--ar", required=True, help="AR run used as the energy and as the AR baseline")
    parser.add_argument("--judge", required=True, help="run:DIR or hf:DIR (must not be the energy model)")
    parser.add_argument("--nce")
    parser.add_argument("--steps", default="8,16,32,64,128,256")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default="cpu", choices=["cpu", "full"])
    parser.add_argument("--methods", help="comma-separated subset of method names")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                        help="network precision (categorical draws are float64 either way)")
    parser.add_argument("--out", default="bench/results/quality")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in OUT/quality.jsonl")
    args = parser.parse_args(argv)
    from edlm.energy.ar import AREnergy, check_compatible
    from edlm.evaluation.generation import generation_metrics, load_judge

    if args.judge.split(":", 1)[-1].rstrip("/") == args.ar.rstrip("/"):
        raise BenchError("--judge must not be the energy model (--ar): use a separately trained model")
    steps = sorted(int(s) for s in args.steps.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config, mdlm = load_model(args.mdlm)
    ar_config, ar_model = load_model(args.ar)
    check_compatible(ar_config.model, config.model, args.ar)
    energies = {("ar", mode): AREnergy(ar_model, config.model.mask_id, mode, precision=args.precision)
                for mode in ("coar", "full")}
    if args.nce:
        from edlm.energy import make_energy

        energies[("nce", "coar")] = make_energy(f"nce:{args.nce}", config.model, precision=args.precision)
    judge = load_judge(args.judge, "cpu")
    length = config.model.seq_len
    methods = method_grid(args.grid, steps, bool(args.nce), length)
    if args.methods:
        wanted = set(args.methods.split(","))
        methods = [m for m in methods if m.name in wanted]
    jobs = [(m, T) for m in methods for T in (m.steps or steps)]
    results_file = out / "quality.jsonl"
    rows = [json.loads(line) for line in results_file.read_text().splitlines() if line.strip()] \
        if args.resume and results_file.exists() else []
    done = {(r["method"], r["steps"]) for r in rows}
    if not args.resume:
        results_file.write_text("")
    for method, T in tqdm([job for job in jobs if (job[0].name, job[1]) not in done], desc="quality sweep"):
        energy = energies[(method.energy, method.mode)] if method.energy else None
        spec = SampleConfig(num=args.num, steps=T, length=length, sampler="cached", seed=args.seed,
                            k=method.k, window=method.window, batch_size=args.num, precision=args.precision)
        texts, result = generate(mdlm, config, spec, energy)
        row = {"method": method.name, "steps": T, "k": method.k, "window": method.window,
               "energy": method.energy or "none", "mode": method.mode if method.energy else "",
               "seconds_per_sample": result.seconds / args.num, "nfe": result.nfe,
               "nfe_per_sequence": result.nfe_rows, **{f"energy_{k}": v for k, v in result.extra.items()},
               **_metrics(generation_metrics(texts, judge)), "seed": args.seed, "sample": texts[0][:120]}
        rows.append(row)
        with open(results_file, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    from edlm.sampling.ar import generate_ar

    if not any(r["method"] == "ar" for r in rows):
        texts, stats = generate_ar(ar_model, ar_config, args.num, length, args.seed, batch_size=args.num)
        rows.append({"method": "ar", "steps": length, "k": 1, "window": 0.0, "energy": "", "mode": "",
                     "seconds_per_sample": stats["seconds"] / args.num, "nfe": stats["nfe"],
                     "nfe_per_sequence": stats["nfe"], **_metrics(generation_metrics(texts, judge)),
                     "seed": args.seed, "sample": texts[0][:120]})
        with open(results_file, "a") as handle:
            handle.write(json.dumps(rows[-1]) + "\n")
    speedups = matched_speedups(rows, length)
    comparisons = compare_at(rows, [length // 8, length // 4, length])
    plots = plot(rows, out)
    columns = ["method", "steps", "gen_ppl", "judge_bpc", "entropy_bits", "nfe", "seconds_per_sample"]
    table = markdown_table(rows, columns, {"gen_ppl": ".3f", "judge_bpc": ".3f", "entropy_bits": ".4f",
                                           "seconds_per_sample": ".3f"})
    table += "\n\nMDLM vs EDLM at matched steps (relative gen-PPL reduction, entropy change):\n\n"
    table += markdown_table(comparisons, ["steps", "method", "mdlm_gen_ppl", "gen_ppl", "reduction",
                                          "mdlm_entropy", "entropy", "entropy_change"],
                            {"reduction": ".1%", "entropy_change": "+.1%", "mdlm_gen_ppl": ".3f",
                             "gen_ppl": ".3f", "mdlm_entropy": ".4f", "entropy": ".4f"})
    table += "\n\nSpeed-up at matched quality (MDLM at T = L as the target):\n\n"
    table += markdown_table(speedups, ["method", "target_gen_ppl", "matched_steps", "mdlm_seconds",
                                       "edlm_seconds", "speedup", "entropy_drop", "note"],
                            {"speedup": ".2f", "entropy_drop": "+.1%", "target_gen_ppl": ".3f",
                             "matched_steps": ".1f", "mdlm_seconds": ".3f", "edlm_seconds": ".3f"})
    payload = {"rows": rows, "speedups": speedups, "comparisons": comparisons, "plots": plots,
               "settings": vars(args), "methods": [dataclasses.asdict(m) for m in methods],
               "models": {"mdlm": json.loads(config.to_json()), "ar": json.loads(ar_config.to_json())},
               "environment": environment()}
    write_results(out, "quality", payload, table)
    return 0


def _metrics(metrics: dict) -> dict:
    """The row's quality figures; ``gen_ppl_rel_stderr`` ≈ the relative standard error of gen-PPL, from the
    spread of the judge's per-sample NLL per token (std / sqrt(n) nats, so exp of it minus 1)."""
    spread = metrics["nll_spread"]
    return {"gen_ppl": metrics["gen_ppl"], "judge_bpc": metrics.get("judge_bpc", float("nan")),
            "entropy_bits": metrics["entropy_bits"], "entropy_nats": metrics["entropy_nats"],
            "gen_ppl_rel_stderr": math.expm1(spread["std"] / math.sqrt(metrics["num_samples"]))}


def compare_at(rows: list[dict], steps: list[int]) -> list[dict]:
    out = []
    for T in steps:
        base = next((r for r in rows if r["method"] == "mdlm" and r["steps"] == T), None)
        if base is None:
            continue
        for r in rows:
            if r["steps"] == T and r["method"] not in ("mdlm", "ar"):
                out.append({"steps": T, "method": r["method"], "mdlm_gen_ppl": base["gen_ppl"],
                            "gen_ppl": r["gen_ppl"], "reduction": 1 - r["gen_ppl"] / base["gen_ppl"],
                            "mdlm_entropy": base["entropy_bits"], "entropy": r["entropy_bits"],
                            "entropy_change": r["entropy_bits"] / base["entropy_bits"] - 1})
    return out
