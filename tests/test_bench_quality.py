"""The quality benchmark (``edlm.bench.quality``) end to end on tiny random runs: a sweep that keeps every
sample with its judge scores and states verdicts with 95% intervals (and resumes), generative frontiers of
judge NLL against entropy over a temperature sweep (``edlm.bench.frontier``), and the reveal-set twins compared
with the paper's whole-row weights.
"""

import json

import pytest
from toys import save_random_run as save_run

from edlm.bench import BenchError
from edlm.bench.quality import main as quality_main


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
        assert 0.0 <= r["mauve"]["mauve"] <= 1.0 and r["mauve"]["seeds"] == [25]  # mauve's default seed
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


# ----------------------------------------------------------------------------------------------------------
# generative frontiers: judge NLL against entropy over a temperature sweep


def test_frontier_keeps_the_points_no_other_beats_on_both_nll_and_entropy():
    from edlm.bench.frontier import frontier_points

    points = [{"setting": "a", "temperature": t, "judge_bpc": bpc, "entropy": h}
              for t, bpc, h in ((0.5, 1.0, 2.0), (0.8, 1.5, 3.0), (1.0, 2.5, 3.5), (1.2, 3.0, 3.4))]
    points.append({"setting": "b", "temperature": 1.0, "judge_bpc": 1.4, "entropy": 2.9})
    front = frontier_points(points, "judge_bpc")  # a at 1.2 has a worse NLL and less entropy than a at 1.0
    assert [(p["setting"], p["temperature"]) for p in front] == [("a", 0.5), ("b", 1.0), ("a", 0.8), ("a", 1.0)]


def test_quality_temperature_sweep_reports_frontiers(tmp_path):
    """Issue 19: generation quality as a frontier of judge NLL against entropy over temperatures, not points."""
    pytest.importorskip("matplotlib")
    mdlm, ar, judge = (save_run(tmp_path / "mdlm", "mdlm", 0), save_run(tmp_path / "ar", "ar", 1),
                       save_run(tmp_path / "judge", "ar", 2))
    out = tmp_path / "quality"
    assert quality_main(["--mdlm", str(mdlm), "--ar", str(ar), "--judge", f"run:{judge}", "--steps", "4",
                         "--num", "3", "--methods", "mdlm", "--temperatures", "0.5,1.0", "--device", "cpu",
                         "--bootstrap", "50", "--precision", "fp32", "--protocol", "remdm", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert sorted((r["setting"], r["temperature"]) for r in rows) == [
        ("ar", 0.5), ("ar", 1.0), ("cached:mdlm", 0.5), ("cached:mdlm", 1.0)]
    assert all(r["protocol"] == "remdm" and r["entropy_unit"] == "nats" for r in rows)
    summary = json.loads((out / "quality.json").read_text())
    curves = {(c["setting"], c["steps"]): c for c in summary["frontiers"]}
    curve = curves[("cached:mdlm", 4)]
    assert [p["temperature"] for p in curve["points"]] == [0.5, 1.0]
    for point in curve["points"]:
        assert point["entropy_ci95"][0] <= point["entropy"] <= point["entropy_ci95"][1]
        assert point["judge_bpc_ci95"][0] <= point["judge_bpc"] <= point["judge_bpc_ci95"][1]
    assert "Generative frontier" in (out / "quality.md").read_text()
    assert (out / "quality_frontier.png").is_file()


def test_quality_compares_reveal_set_twins_with_the_papers_weights(tmp_path):
    """Issue 18: reveal-set vs whole-row weighting at T = L/8 and L/4, judge bpc with intervals."""
    mdlm, ar, judge = (save_run(tmp_path / "mdlm", "mdlm", 0), save_run(tmp_path / "ar", "ar", 1),
                       save_run(tmp_path / "judge", "ar", 2))
    out = tmp_path / "quality"
    assert quality_main(["--mdlm", str(mdlm), "--ar", str(ar), "--judge", f"run:{judge}", "--steps", "4,8",
                         "--num", "3", "--methods", "mdlm,edlm-ar-coar-k2-w1.0,edlm-ar-coar-k2-w1.0-reveal",
                         "--device", "cpu", "--bootstrap", "50", "--precision", "fp32", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert {r["is_target"] for r in rows if r["method"].endswith("-reveal")} == {"reveal"}
    effects = json.loads((out / "quality.json").read_text())["reveal_effects"]
    assert {(e["setting"], e["steps"], e["baseline"]) for e in effects} == {
        ("cached:edlm-ar-coar-k2-w1.0-reveal", T, "cached:edlm-ar-coar-k2-w1.0") for T in (4, 8)}
    assert all("95% CI" in e["verdict"] for e in effects)
    assert "whole-row weights" in (out / "quality.md").read_text()
