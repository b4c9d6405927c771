"""The numbers the benchmarks report: verdicts with paired intervals, matched-quality speed-ups, the ranking
rule (a degenerate sampler never ranks first), the Pareto front, FLOP counting, tables, and a tiny end-to-end
quality sweep that keeps every sample."""

import json
import math

import numpy as np
import pytest
from toys import save_random_run as save_run

from edlm.bench import BenchError
from edlm.bench.common import markdown_table
from edlm.bench.quality import main as quality_main
from edlm.bench.throughput import flops_per_token
from edlm.bench.verdicts import (
    importance_effects,
    matched_speedups,
    pareto_front,
    rank_settings,
)
from edlm.config import get_preset
from edlm.models import build_model

N = 40


def row(setting, steps, seconds, bpc_per_sample, entropy_per_sample, sampler="cached"):
    """A quality row with per-sample scores: 10 characters (= judge tokens) per sample."""
    chars = np.full(N, 10.0)
    nll = np.asarray(bpc_per_sample) * chars * math.log(2)
    entropy = np.asarray(entropy_per_sample, dtype=float)
    bpc = nll.sum() / chars.sum() / math.log(2)
    return {"setting": f"{sampler}:{setting}", "sampler": sampler, "method": setting, "steps": steps,
            "seconds_per_sample": seconds, "judge_bpc": bpc, "gen_ppl": math.exp(nll.sum() / chars.sum()),
            "entropy_bits": float(entropy.mean()),
            "per_sample": {"nll": list(nll), "tokens": list(chars), "characters": list(chars),
                           "entropy_bits": list(entropy)}}


@pytest.fixture
def base():
    """Per-sample bpc of MDLM (shared by the settings below: the paired design) and its entropies."""
    rng = np.random.default_rng(0)
    return rng.normal(2.5, 0.3, N), rng.normal(4.0, 0.1, N), rng


def test_speedup_only_where_the_interval_clears(base):
    bpc, entropy, rng = base
    rows = [row("mdlm", 64, 1.0, bpc + 0.3, entropy), row("mdlm", 256, 4.0, bpc, entropy),
            # 1% lower on average but with per-sample noise of 0.3 bpc: inside the noise
            row("edlm-noisy", 64, 1.5, bpc * 0.99 + rng.normal(0, 0.3, N), entropy),
            # 10% lower on every sample
            row("edlm-clear", 64, 1.5, bpc * 0.9, entropy - 0.02)]
    entries = {e["setting"]: e for e in matched_speedups(rows, "cached:mdlm", 256, "judge_bpc", 500)}
    noisy, clear = entries["cached:edlm-noisy"], entries["cached:edlm-clear"]
    assert noisy["speedup"] is None and noisy["note"].startswith("no significant difference")
    assert noisy["verdict"].startswith("no significant difference")
    assert clear["speedup"] == pytest.approx(4.0 / 1.5) and clear["verdict"].startswith("10.00% lower")


def test_degenerate_sampler_never_ranks_first(base):
    bpc, entropy, _ = base
    mdlm = [row("mdlm", 64, 1.0, bpc + 0.3, entropy), row("mdlm", 256, 4.0, bpc, entropy)]
    # lowest bpc and fastest, but its entropy is half of MDLM's: "always the most frequent word"
    degenerate = row("degenerate", 64, 0.5, bpc * 0.5, entropy * 0.5)
    ranking = rank_settings(mdlm + [degenerate], "cached:mdlm", "judge_bpc", 300)
    assert ranking[0]["setting"] == "cached:mdlm" and ranking[-1]["setting"] == "cached:degenerate"
    assert not ranking[-1]["counts_as_better"]
    # a setting 10% better at equal time with entropy within 3% does rank first, ahead of the degenerate one
    good = row("edlm", 64, 1.0, (bpc + 0.3) * 0.9, entropy * 0.99)
    ranking = rank_settings(mdlm + [degenerate, good], "cached:mdlm", "judge_bpc", 300)
    assert ranking[0]["setting"] == "cached:edlm" and ranking[0]["counts_as_better"]
    assert "cached:mdlm T=64" in ranking[0]["beats"] and ranking[-1]["setting"] == "cached:degenerate"
    # slower than every MDLM point: not better, however good
    slow = row("slow", 64, 5.0, bpc * 0.5, entropy)
    assert not rank_settings(mdlm + [slow], "cached:mdlm", "judge_bpc", 300)[0]["counts_as_better"]


def test_pareto_front_and_importance_effects(base):
    bpc, entropy, _ = base
    rows = [row("mdlm", 16, 1.0, bpc + 0.5, entropy), row("mdlm", 64, 4.0, bpc, entropy),
            row("edlm", 16, 2.0, bpc + 0.2, entropy), row("edlm", 64, 8.0, bpc + 0.1, entropy)]
    front = [(r["setting"], r["steps"]) for r in pareto_front(rows, "judge_bpc")]
    assert front == [("cached:mdlm", 16), ("cached:edlm", 16), ("cached:mdlm", 64)]  # edlm T=64 is dominated
    greedy = row("greedy", 16, 0.5, bpc - 1.0, entropy * 0.8)  # fastest and best NLL, but 20% less entropy
    assert ("cached:greedy", 16) in [(r["setting"], r["steps"]) for r in pareto_front(rows + [greedy], "judge_bpc")]
    kept = pareto_front(rows + [greedy], "judge_bpc", min_entropy=0.97 * float(np.mean(entropy)))
    assert [(r["setting"], r["steps"]) for r in kept] == front
    effects = {(e["setting"], e["steps"]): e for e in importance_effects(rows, "judge_bpc", 300)}
    assert effects[("cached:edlm", 16)]["verdict"].endswith("%)") and effects[("cached:edlm", 16)]["change"] < 0
    assert effects[("cached:edlm", 64)]["change"] > 0 and effects[("cached:edlm", 64)]["significant"]


def test_flops_per_token_counts_per_token_matmuls_only():
    config = get_preset("char-tiny").model
    model = build_model(config)
    H, layers, V = config.hidden, config.n_layers, config.vocab_size + 1
    per_layer = 3 * H * H + H * H + 2 * 4 * H * H
    expected = 6 * (layers * per_layer + H * V) + 12 * layers * config.seq_len * H
    assert flops_per_token(model, config) == expected


def test_markdown_table_formats():
    table = markdown_table([{"a": 0.123456, "b": "x"}], ["a", "b"], {"a": ".2f"})
    assert table.splitlines()[2] == "| 0.12 | x |"


@pytest.mark.parametrize("name", ["throughput", "sampling", "quality", "learning-curve", "likelihood"])
def test_bench_help(name, capsys):
    from edlm.bench import run_bench

    with pytest.raises(SystemExit) as info:
        run_bench(name, ["--help"])
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_quality_sweep_keeps_every_sample_and_states_verdicts(tmp_path, tiny_data):
    pytest.importorskip("matplotlib")
    pytest.importorskip("mauve")
    mdlm, ar, judge = (save_run(tmp_path / "mdlm", "mdlm", 0), save_run(tmp_path / "ar", "ar", 1),
                       save_run(tmp_path / "judge", "ar", 2))
    out = tmp_path / "quality"
    assert quality_main(["--mdlm", str(mdlm), "--ar", str(ar), "--judge", f"run:{judge}", "--steps", "4,32",
                         "--num", "3", "--methods", "mdlm,edlm-ar-coar-k2-w1.0", "--device", "cpu",
                         "--bootstrap", "100", "--precision", "fp32", "--reference", str(tiny_data),
                         "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert {(r["setting"], r["steps"]) for r in rows} == {
        ("cached:mdlm", 4), ("cached:mdlm", 32), ("cached:edlm-ar-coar-k2-w1.0", 4),
        ("cached:edlm-ar-coar-k2-w1.0", 32), ("ar", 32)}
    for r in rows:  # every sample, full length, with its judge scores
        assert len(r["samples"]) == 3 and all(len(text) == 32 for text in r["samples"])
        assert len(r["per_sample"]["nll"]) == 3 and r["ci95"]["judge_bpc"][0] <= r["judge_bpc"]
        assert 0.0 <= r["mauve"]["mauve"] <= 1.0 and r["mauve"]["seeds"] == [0]
    summary = json.loads((out / "quality.json").read_text())
    assert summary["baseline"] == "cached:mdlm" and summary["pareto_front"]
    for entry in summary["comparisons"] + summary["speedups"]:
        assert "95% CI" in entry["verdict"] or entry["verdict"] == "no faster point"
    assert (out / "quality.png").is_file()
    table = (out / "quality.md").read_text()
    assert "Speed-up at matched quality" in table and "Pareto front" in table and "[95% CI]" in table
    # --resume keeps every row (nothing is sampled again) but refuses a file from the old format
    assert quality_main(["--mdlm", str(mdlm), "--ar", str(ar), "--judge", f"run:{judge}", "--steps", "4,32",
                         "--num", "3", "--methods", "mdlm", "--device", "cpu", "--bootstrap", "50",
                         "--out", str(out), "--resume"]) == 0
    assert len((out / "quality.jsonl").read_text().splitlines()) == 5
    (out / "quality.jsonl").write_text(json.dumps({"method": "mdlm", "steps": 4}) + "\n")
    with pytest.raises(BenchError, match="older edlm"):
        quality_main(["--mdlm", str(mdlm), "--ar", str(ar), "--judge", f"run:{judge}", "--out", str(out),
                      "--resume"])


def test_learning_curve_trains_evaluates_and_plots_on_the_requested_device(tmp_path, tiny_data):
    from edlm.bench import run_bench

    out = tmp_path / "results"
    assert run_bench("learning-curve", ["--data", str(tiny_data), "--preset", "char-tiny", "--run",
                                        str(tmp_path / "run"), "--minutes", "1", "--device", "cpu", "--out", str(out),
                                        "train.max_steps=6", "train.eval_every=3", "train.precision=fp32"]) == 0
    result = json.loads((out / "learning-curve-char-tiny-mdlm.json").read_text())
    assert [point["step"] for point in result["curve"]] == [3, 6]
    assert 0 < result["test"]["bpc"] < 10 and result["settings"]["device"] == "cpu"


@pytest.mark.slow
def test_scaling_runs_one_and_two_gloo_processes(tmp_path, tiny_data):
    from edlm.bench import run_bench

    out = tmp_path / "results"
    assert run_bench("scaling", ["--data", str(tiny_data), "--preset", "char-tiny", "--steps", "4",
                                 "--no-threads-baseline", "--out", str(out), "train.batch_size=4"]) == 0
    result = json.loads((out / "scaling.json").read_text())
    assert result["device"] == "cpu" and [run["processes"] for run in result["runs"]] == [1, 2]
    assert all(run["tokens_per_s"] > 0 for run in result["runs"]) and result["scaling_efficiency"] > 0
