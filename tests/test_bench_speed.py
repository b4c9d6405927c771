"""The speed benchmarks on tiny CPU runs: FLOP counting and the throughput benchmark (``edlm.bench.throughput``:
timed blocks, 95% intervals, speed-ups against the first row, one block giving no interval), and the sampling
benchmark (``edlm.bench.sampling_speed``: repeats with intervals and paired ratios, a subword run decoded with
its tokenizer, host syncs per step under the profiler).
"""

import importlib.util
import json
import math

import numpy as np
import pytest

from edlm.bench import BenchError
from edlm.bench.throughput import flops_per_token
from edlm.config import get_preset
from edlm.models import build_model
from edlm.stats import Interval, format_ratio, paired_ratio


def test_flops_per_token_counts_per_token_matmuls_only():
    config = get_preset("char-tiny").model
    model = build_model(config)
    H, layers, V = config.hidden, config.n_layers, config.vocab_size + 1
    per_layer = 3 * H * H + H * H + 2 * 4 * H * H
    expected = 6 * (layers * per_layer + H * V) + 12 * layers * config.seq_len * H
    assert flops_per_token(model, config) == expected


def assert_interval(row, key):
    low, high = row[f"{key}_ci95"]
    assert low <= row[key] <= high, (key, row)


def test_throughput_blocks_give_intervals_and_speedups(tmp_path, monkeypatch):
    import edlm.bench.throughput as throughput

    monkeypatch.setattr(throughput, "matmul_peak", lambda dtype, device, size=2048: 1e11)  # 2 s each on a CPU
    out = tmp_path / "results"
    args = ["--presets", "char-tiny", "--steps", "2", "--device", "cpu", "--batch-sizes", "2", "--out", str(out)]
    assert throughput.main(args + ["--blocks", "2"]) == 0
    rows = json.loads((out / "throughput.json").read_text())["rows"]
    assert len(rows) == 5 and rows[0]["levers"].startswith("sync/step")
    for index, row in enumerate(rows):
        assert len(row["tokens_per_s_blocks"]) == 2 and row["tokens_per_s"] == pytest.approx(
            math.exp(np.mean(np.log(row["tokens_per_s_blocks"]))))
        for key in ("tokens_per_s", "model_tflops", "fraction_of_bf16_peak", "fraction_of_bf16_peak_8192"):
            assert_interval(row, key)
        ratio = row["fraction_of_bf16_peak_ci95"][0] / row["tokens_per_s_ci95"][0]  # the same interval, scaled
        assert ratio == pytest.approx(row["fraction_of_bf16_peak"] / row["tokens_per_s"])
        if index == 0:
            assert row["vs_first_row"] == "reference"
        else:
            assert_interval(row, "speedup_vs_first_row")
            speedup = Interval(row["speedup_vs_first_row"], *row["speedup_vs_first_row_ci95"])
            assert row["vs_first_row"] == format_ratio(speedup)
    table = (out / "throughput.md").read_text()
    assert "2 blocks of 2 timed steps" in table and "| vs first row |" in table and "95% t-interval" in table
    assert "no repeated trials" not in table
    if importlib.util.find_spec("matplotlib"):  # the same intervals as a picture
        assert (out / "throughput.png").stat().st_size > 5_000
        assert json.loads((out / "throughput.json").read_text())["plots"] == [str(out / "throughput.png")]
    # one block (the compile warm-up of scripts/gpu_check.sh): the mean rate, and no interval rather than a fake one
    assert throughput.main(args + ["--blocks", "1"]) == 0
    rows = json.loads((out / "throughput.json").read_text())["rows"]
    assert all(row["tokens_per_s"] == row["tokens_per_s_blocks"][0] and row["tokens_per_s_ci95"] is None
               for row in rows)
    assert rows[1]["vs_first_row"] == "no interval (one block)"
    with pytest.raises(BenchError, match="--blocks 0"):
        throughput.main(args + ["--blocks", "0"])


def test_sampling_repeats_give_intervals_and_paired_ratios(tmp_path):
    from edlm.bench.sampling_speed import main as sampling_main

    out = tmp_path / "results"
    args = ["--device", "cpu", "--num", "2", "--length", "16", "--steps", "4", "--out", str(out)]
    assert sampling_main(args + ["--repeats", "2"]) == 0
    result = json.loads((out / "sampling.json").read_text())
    if importlib.util.find_spec("matplotlib"):
        assert result["plots"] == [str(out / "sampling.png")] and (out / "sampling.png").stat().st_size > 5_000
    rows = {(r["sampler"], r["proposal"]): r for r in result["rows"]}
    assert set(rows) == {(s, p) for s in ("ancestral", "cached") for p in ("plain", "IS k=4")}
    for (sampler, proposal), row in rows.items():
        assert len(row["seconds_repeats"]) == 2 and row["seconds"] == pytest.approx(
            math.exp(np.mean(np.log(row["seconds_repeats"]))))
        assert_interval(row, "seconds")
        assert_interval(row, "ms_per_step")
        assert row["ms_per_step"] == pytest.approx(1e3 * row["seconds"] / 4)
        if proposal == "plain":
            assert "overhead_vs_plain" not in row
        else:
            assert_interval(row, "overhead_vs_plain")
            expected = paired_ratio(row["seconds_repeats"], rows[(sampler, "plain")]["seconds_repeats"])
            assert row["overhead_vs_plain"] == pytest.approx(expected.estimate)
    comparisons = {c["proposal"]: c for c in result["cached_vs_ancestral"]}
    assert set(comparisons) == {"plain", "IS k=4"}
    for proposal, comparison in comparisons.items():
        assert_interval(comparison, "speedup")
        expected = paired_ratio(rows[("ancestral", proposal)]["seconds_repeats"],
                                rows[("cached", proposal)]["seconds_repeats"])
        assert comparison["speedup"] == pytest.approx(expected.estimate)
    table = (out / "sampling.md").read_text()
    assert "ran 2 times per T, interleaved" in table and "Cached against ancestral" in table
    assert "Single runs" not in table
    with pytest.raises(BenchError, match="--repeats 1"):
        sampling_main(args + ["--repeats", "1"])


def test_sampling_bench_on_a_subword_run_decodes_with_the_runs_tokenizer(tmp_path, tiny_bpe_run):
    from edlm.bench.sampling_speed import main as sampling_main

    run, _ = tiny_bpe_run
    out = tmp_path / "results"
    assert sampling_main(["--run", str(run), "--device", "cpu", "--num", "2", "--length", "8", "--steps", "2",
                          "--repeats", "2", "--k", "2", "--samplers", "cached", "--precision", "fp32",
                          "--out", str(out)]) == 0
    rows = json.loads((out / "sampling.json").read_text())["rows"]
    assert [row["proposal"] for row in rows] == ["plain", "IS k=2"]


def test_sampling_profile_counts_host_syncs_per_step(tmp_path):
    """--profile: one extra run per setting under torch.profiler; the top operators go to a file per setting and
    the host-synchronising calls per step into the JSON (the loop's `.any()`/`.item()` checks are among them)."""
    from edlm.bench.sampling_speed import main as sampling_main

    out = tmp_path / "results"
    assert sampling_main(["--device", "cpu", "--num", "2", "--length", "16", "--steps", "4", "--repeats", "2",
                          "--samplers", "cached", "--profile", "--out", str(out)]) == 0
    rows = json.loads((out / "sampling.json").read_text())["rows"]
    assert [row["profile"]["file"] for row in rows] == ["profile-4-cached-plain.txt", "profile-4-cached-is4.txt"]
    for row in rows:
        assert "aten::addmm" in (out / row["profile"]["file"]).read_text()
        assert row["profile"]["ops_per_step"] > 10
        assert row["profile"]["host_syncs_per_step"] == pytest.approx(sum(row["profile"]["host_syncs_by_op"].values()))
        assert 2 <= row["profile"]["host_syncs_per_step"] < 4  # see test_sampling_loop.test_host_syncs_per_step
