"""The benchmarks that train on a tiny corpus: the learning curve (``edlm.bench.learning_curve``: trains,
evaluates and plots on the requested device) and scaling over one and two gloo processes
(``edlm.bench.scaling``, marked slow).
"""

import json

import pytest


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
