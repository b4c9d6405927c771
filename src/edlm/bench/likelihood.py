"""Likelihood table on the test split: AR exact NLL, MDLM NELBO (continuous and T-step), and for each energy
the paper's estimator beside the valid bound of the EDLM sampler.

    edlm bench likelihood --data DATA --mdlm RUN --ar RUN [--nce RUN] [--out bench/results] [LikelihoodConfig flags]

Rules the table follows:
- one precision for every row (``--precision``), stated in the header;
- comparisons are between discrete-time bounds only, on the same reveal paths (paired): EDLM bound vs the
  T-step MDLM bound, with a 95% confidence interval, or "no significant difference" when it contains 0;
- the continuous-time MDLM NELBO is a reference row (± its standard error over sequences x t draws), not
  compared; ``gap_closed`` = (T-step MDLM - EDLM bound) / (T-step MDLM - AR NLL), bound rows only;
- a paper estimate whose log Z has a mean effective sample size below ``--min-ess`` is shown as unavailable.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edlm.bench.common import environment, markdown_table, write_results
from edlm.config import LikelihoodConfig
from edlm.flags import OneLineParser, add_config_flags, config_from_args
from edlm.stats import mean_interval

#: the full test split is too slow for the EDLM bound on a CPU; the bench's only default of its own
BENCH_MAX_SEQUENCES = 64


def paired_verdict(gain: dict) -> str:
    """'T-step MDLM minus EDLM bound' as 'x [95% CI] bpc' (t-interval over the sequences), or 'no significant
    difference'."""
    interval = mean_interval(gain["bpc"], gain["stderr_bpc"], gain["sequences"])
    text = f"{gain['bpc']:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"
    return text if interval.significant else f"{text}: no significant difference"


def likelihood_table(settings: LikelihoodConfig, config, mdlm, chunks, energies: list[tuple[str, object]],
                     chars_per_token: float = 1.0, progress: bool = False) -> tuple[list[dict], dict]:
    """Rows of the table (JSON-able) and the raw estimator dicts, for ``energies`` = [(label, energy)]."""
    from edlm.likelihood.report import edlm_likelihood

    rows, raw = [], {}
    T = settings.steps
    for label, energy in energies:
        result = edlm_likelihood(settings, config, mdlm, chunks, energy, chars_per_token, progress)
        raw[label] = result
        if not rows:  # reference rows, computed with the first energy's pass
            if "ar_nll" in result:
                rows.append(_row("AR (exact NLL)", "exact", result["ar_nll"]))
            rows.append(_row(f"MDLM NELBO (continuous time, {settings.t_samples} t draws per sequence)",
                             "upper bound, reference only", result["mdlm_nelbo"]))
            rows.append(_row(f"MDLM NELBO (T = {T})", "upper bound", result["mdlm_discrete_nelbo"]))
        for name in ("paper_estimate", "paper_estimate_jackknife"):
            if name in result:
                paper = result[name]
                title = f"{label} paper estimate" + (", jackknife" if name.endswith("jackknife") else "")
                title += " (no log Z)" if paper.get("log_z") == "none" else f" (N = {settings.is_samples})"
                rows.append(_row(title, "estimate, not a bound", paper))
        rows.append(_row(f"{label} bound (T = {T}, k = {settings.k}, w = {settings.window}, "
                         f"N = {settings.inner})", "upper bound", result["bound"]))
        rows[-1]["paired_gain_vs_mdlm_T"] = paired_verdict(result["bound_improvement_over_mdlm_same_T"])
    mdlm_t = next(row for row in rows if row["estimator"].startswith("MDLM NELBO (T"))
    ar = next((row for row in rows if row["estimator"].startswith("AR")), None)
    for row in rows:
        if row["kind"] == "upper bound" and ar is not None and row is not mdlm_t and mdlm_t["bpc"] != ar["bpc"]:
            row["gap_closed"] = (mdlm_t["bpc"] - row["bpc"]) / (mdlm_t["bpc"] - ar["bpc"])
    return rows, raw


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="edlm bench likelihood")
    parser.add_argument("--data", required=True, help="data folder made by `edlm data prepare`")
    parser.add_argument("--mdlm", required=True, help="run folder of the MDLM denoiser")
    parser.add_argument("--ar", required=True, help="run folder of the AR model (baseline and EDLM-AR energy)")
    parser.add_argument("--nce", help="run folder of an NCE energy network (adds EDLM-NCE rows)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON and markdown")
    add_config_flags(parser, LikelihoodConfig, defaults={"max_sequences": BENCH_MAX_SEQUENCES})
    args = parser.parse_args(argv)
    settings = config_from_args(LikelihoodConfig, args)
    from edlm.checkpoint import load_model, load_run_tokenizer
    from edlm.data import eval_chunks, load_split
    from edlm.device import resolve_device
    from edlm.energy import make_energy

    device = resolve_device(args.device)
    config, mdlm = load_model(args.mdlm, device=device)
    chunks = eval_chunks(load_split(args.data, settings.split), config.model.seq_len)
    if settings.max_sequences is not None:
        chunks = chunks[: settings.max_sequences]
    specs = [("EDLM-AR coar", f"ar:{args.ar}", "coar"), ("EDLM-AR full", f"ar:{args.ar}", "full")]
    if args.nce:
        specs.append(("EDLM-NCE", f"nce:{args.nce}", "coar"))
    tokenizer = load_run_tokenizer(Path(args.mdlm), config)  # each energy must share it (ids, not only sizes)
    energies = [(label, make_energy(spec, config.model, mode, device, settings.precision, tokenizer))
                for label, spec, mode in specs]
    from edlm.data.splits import chars_per_token

    per_token = chars_per_token(args.data, settings.split)  # bits per character of the decoded text
    rows, raw = likelihood_table(settings, config, mdlm, chunks, energies, per_token, progress=True)
    table = markdown_table(rows, ["estimator", "kind", "bpc", "stderr_bpc", "gap_closed", "paired_gain_vs_mdlm_T",
                                  "note"],
                           {"bpc": ".4f", "stderr_bpc": ".4f", "gap_closed": "+.1%"})
    text = (f"Likelihood on {len(chunks)} {settings.split} sequences of {config.model.seq_len} tokens, all rows at "
            f"{settings.precision} (bits per character, ± one standard error over sequences). paired_gain_vs_mdlm_T "
            f"= T-step MDLM bound minus the EDLM bound on the same reveal paths, with its 95% confidence interval; "
            f"gap_closed = share of the T-step MDLM -> AR gap (discrete bounds only). The continuous-time NELBO is "
            f"a reference, not compared. Bounds are for `edlm sample --steps {settings.steps} --k {settings.k} "
            f"--window {settings.window}` (temperature 1, top-p 1, greedy fill below t = {settings.t_min}).\n\n"
            f"{table}")
    write_results(Path(args.out), "likelihood", {"rows": rows, "raw": raw, "settings": dataclasses.asdict(settings),
                                                 "inputs": {"data": args.data, "mdlm": args.mdlm, "ar": args.ar,
                                                            "nce": args.nce},
                                                 "environment": environment()}, text)
    return 0


def _row(name: str, kind: str, summary: dict) -> dict:
    if not summary.get("available", True):
        return {"estimator": name, "kind": kind, "bpc": "unavailable", "stderr_bpc": "",
                "note": f"log Z effective sample size {summary['mean_ess']:.2f} < {summary['min_ess_required']}"}
    return {"estimator": name, "kind": kind, "bpc": summary["bpc"], "stderr_bpc": summary["stderr_bpc"]}
