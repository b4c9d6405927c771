"""The verdicts the benchmarks state (``edlm.bench.verdicts``) on synthetic paired per-sample scores: a speed-up
at matched quality only where the interval clears, the ranking rule (a degenerate sampler never ranks first),
the Pareto front with its entropy floor, importance effects; and the markdown tables (``edlm.bench.common``).
"""

import math

import numpy as np
import pytest

from edlm.bench.common import markdown_table
from edlm.bench.verdicts import (
    importance_effects,
    matched_speedups,
    pareto_front,
    rank_settings,
)

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


def test_markdown_table_formats():
    table = markdown_table([{"a": 0.123456, "b": "x"}], ["a", "b"], {"a": ".2f"})
    assert table.splitlines()[2] == "| 0.12 | x |"
