"""The numbers the benchmarks report: matched-quality interpolation, FLOP counting, tables."""

import math

import pytest

from edlm.bench.common import markdown_table
from edlm.bench.quality import interpolate_match, matched_speedups
from edlm.bench.throughput import flops_per_token
from edlm.config import get_preset
from edlm.models import build_model


def point(method, steps, ppl, seconds, entropy=4.0):
    return {"method": method, "steps": steps, "gen_ppl": ppl, "seconds_per_sample": seconds,
            "entropy_bits": entropy}


def test_interpolation_in_log_steps():
    points = [point("e", 16, 12.0, 1.0, 4.0), point("e", 64, 8.0, 3.0, 3.8)]
    match = interpolate_match(points, 10.0)  # halfway in gen-PPL -> halfway in log T
    assert match["exact"] and math.isclose(match["steps"], 32.0)
    assert math.isclose(match["seconds"], 2.0) and math.isclose(match["entropy_bits"], 3.9)
    assert interpolate_match(points, 5.0) is None
    early = interpolate_match(points, 20.0)
    assert not early["exact"] and early["steps"] == 16


def test_matched_speedup_against_mdlm_at_t_equals_l():
    rows = [point("mdlm", 64, 14.0, 1.0), point("mdlm", 256, 10.0, 4.0, 4.0),
            point("edlm", 64, 11.0, 1.5, 3.98), point("edlm", 256, 9.0, 6.0, 3.9)]
    (entry,) = matched_speedups(rows, 256)
    # EDLM reaches 10.0 halfway between T = 64 and 256 (T = 128), at 3.75 s: speed-up 4 / 3.75
    assert math.isclose(entry["matched_steps"], 128.0)
    assert math.isclose(entry["speedup"], 4.0 / 3.75)
    assert math.isclose(entry["entropy_drop"], 1 - 3.94 / 4.0)
    assert "within 2%" in entry["note"]


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
