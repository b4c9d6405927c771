"""The GPU sampling benchmarks on a CPU (``edlm bench step-cost``, ``edlm bench vs-mdlm``): smoke runs that check
what the tables carry, and MDLM's reference loop against the exact law of its step."""

import json

import torch
from toys import SCHEDULE, conditional_denoiser, random_joint, sequence_index

from edlm.bench import run_bench
from edlm.bench.mdlm_loop import mdlm_sample
from edlm.bench.step_cost import target_verdict
from edlm.likelihood.estimators import make_step_plan
from edlm.likelihood.exact import exact_sampler_distribution
from edlm.stats import Interval

TINY = ["--device", "cpu", "--preset", "char-tiny", "--num", "4", "--length", "16", "--steps", "8", "--prefix", "4",
        "--repeats", "2"]


def test_step_cost_smoke_run_reads_one_host_value_per_static_step(tmp_path):
    assert run_bench("step-cost", TINY + ["--k", "2", "--reveal-k", "2", "--fills", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "step_cost.json").read_text())
    rows = {(row["row"], row["mode"]): row for row in record["rows"]}
    assert set(rows) == {(name, mode) for mode in ("eager", "static") for name in
                         ("forward", "ancestral", "cached", "cached IS k=2", "cached reveal k=2")}
    assert all(row["ms_per_step_ci95"][0] <= row["ms_per_step"] <= row["ms_per_step_ci95"][1] for row in rows.values())
    reads = {key: row["host_reads_per_step"] for key, row in rows.items()}
    assert reads[("cached", "eager")] == 2 and reads[("cached reveal k=2", "eager")] == 3
    assert all(reads[(name, "static")] == 1 for name in ("ancestral", "cached", "cached IS k=2", "cached reveal k=2"))
    labels = [row["comparison"] for row in record["comparisons"]]
    assert "cached step / forward (static)" in labels and "cached: eager / static (speed-up)" in labels
    assert "verdict" in (tmp_path / "step_cost.md").read_text()


def test_vs_mdlm_smoke_run(tmp_path):
    assert run_bench("vs-mdlm", TINY + ["--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "vs_mdlm.json").read_text())["rows"]
    assert [row["loop"] for row in rows] == ["mdlm loop", "edlm cached (eager)", "edlm cached (static)"]
    for row in rows:
        low, high = row["tokens_per_s_ci95"]
        assert low <= row["tokens_per_s"] <= high
        assert abs(row["tokens_per_s"] * row["ms_per_step"] / 1e3 * 8 - 4 * 16) < 1e-6  # B L / (ms per step T)
    assert "target >= 3x" in rows[1]


def test_target_verdicts():
    assert target_verdict(Interval(1.5, 1.4, 1.6), 2.0).startswith("met")
    assert target_verdict(Interval(2.5, 2.2, 2.9), 2.0).startswith("not met: 2.50x")
    assert target_verdict(Interval(1.9, 1.7, 2.2), 2.0).startswith("undecided")
    assert target_verdict(Interval(3.5, 3.1, 3.9), 3.0, at_least=True).startswith("met")
    assert target_verdict(Interval(1.5, 1.4, 1.6), 3.0, at_least=True).startswith("not met: 1.50x")


class ToyNetwork(torch.nn.Module):
    """The toy's exact conditional log-probs as a network's logits (MDLM's SUBS renormalises them)."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the loop a device

    def forward(self, x):
        return self.denoiser(x)


def test_mdlm_reference_loop_samples_the_exact_law_of_its_step():
    """MDLM's step reveals with (t - s) / t, the log-linear schedule's reveal probability, and fills what is left
    greedily: the same T-step law as edlm's ancestral sampler (enumerated). Chi-square with 8 df."""
    V, L, T, draws = 3, 2, 3, 40_000
    denoiser = conditional_denoiser(random_joint(V, L, seed=6), V, L)
    exact = exact_sampler_distribution(V, L, denoiser, None, make_step_plan(SCHEDULE, T, t_min=1e-5))
    for gumbel in ("float64", "float32"):
        tokens, calls = mdlm_sample(ToyNetwork(denoiser), draws, L, V, T, torch.Generator().manual_seed(3),
                                    "fp32", gumbel)
        assert calls <= T + 1
        empirical = torch.bincount(sequence_index(tokens, V), minlength=V ** L).double() / draws
        chi_square = float(((empirical - exact) ** 2 / exact).sum() * draws)
        assert chi_square < 26.1, (gumbel, chi_square)
