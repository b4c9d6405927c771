"""The likelihood figures on real (tiny, untrained) models: ``summarize`` (bits per character), the report of
``edlm eval`` (``likelihood_report``) with and without an energy and what each figure is called, the text that
``edlm eval --energy`` prints, and the table of the likelihood benchmark (discrete bounds only, paired verdicts).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from edlm.likelihood.nelbo import summarize


# ---------------------------------------------------------------------------------- bits per character


def test_summarize_bits_per_character():
    per_sequence = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    char = summarize(per_sequence, 4)
    assert char["bpc"] == pytest.approx(2.0 / math.log(2)) and char["ppl"] == pytest.approx(math.exp(2.0))
    assert char == summarize(per_sequence, 4, chars_per_token=1.0)  # a char model's bpc is unchanged
    subword = summarize(per_sequence, 4, chars_per_token=4.0)  # 4 characters per token
    assert subword["bpc"] == pytest.approx(char["bpc"] / 4) and subword["nll_nats"] == char["nll_nats"]
    assert subword["stderr_bpc"] == pytest.approx(char["stderr_bpc"] / 4) and subword["ppl"] == char["ppl"]


# -------------------------------------------------------------------------- the report on real models


def _tiny(kind: str, seed: int):
    import dataclasses

    from edlm.config import get_preset
    from edlm.models import build_model

    config = get_preset("char-tiny")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, kind=kind, seq_len=8,
                                                                   n_layers=1, hidden=32, cond_dim=16))
    torch.manual_seed(seed)
    model = build_model(config.model)
    with torch.no_grad():  # zero-initialised output layers would make every model uniform
        for name, parameter in model.named_parameters():
            if "adaLN_modulation" in name or "output_layer.linear" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed)))
    return config, model.eval()


def test_likelihood_report_names_every_figure_and_the_sampler():
    from edlm.config import ConfigError, LikelihoodConfig
    from edlm.energy.ar import AREnergy
    from edlm.likelihood.report import LikelihoodError, likelihood_report

    config, mdlm = _tiny("mdlm", 0)
    ar_config, ar = _tiny("ar", 1)
    chunks = torch.randint(0, 27, (6, 8), generator=torch.Generator().manual_seed(0))
    settings = LikelihoodConfig(steps=4, k=2, window=1.0, is_samples=4, inner=2, batch_size=4, max_sequences=5)
    plain = likelihood_report(settings, config, mdlm, chunks)
    assert plain["kind"] == "mdlm_nelbo_upper_bound" and plain["sequences"] == 5 and plain["precision"] == "fp32"
    assert plain["t_samples"] == settings.t_samples and plain["eps_t"] == 1e-3
    ar_only = likelihood_report(settings, ar_config, ar, chunks, chars_per_token=2.0)
    assert ar_only["kind"] == "ar_exact_nll"
    assert ar_only["bpc"] == pytest.approx(ar_only["nll_nats"] / 2.0 / math.log(2))
    coar = likelihood_report(settings, config, mdlm, chunks, energy=AREnergy(ar, config.model.mask_id, "coar"))
    estimators = coar["estimators"]
    assert estimators["paper_estimate"]["log_z"] == "none" and "paper_estimate_jackknife" not in estimators
    assert coar["bpc"] == estimators["bound"]["bpc"] and coar["precision"] == "fp32"
    bounded = coar["sampler_bounded"]
    assert bounded["t_min"] == 1e-5 and bounded["temperature"] == 1.0 and "greedy" in bounded["final_step"]
    assert bounded["greedy_fill_cost_nats_per_token"] == pytest.approx(1e-5, rel=1e-3)
    paired = estimators["mdlm_discrete_nelbo"]["nll_nats"] - estimators["bound"]["nll_nats"]
    assert estimators["bound_improvement_over_mdlm_same_T"]["nll_nats"] == pytest.approx(paired)
    assert "ar_nll" in estimators and estimators["mdlm_nelbo"]["t_samples"] == settings.t_samples
    full = likelihood_report(settings, config, mdlm, chunks, energy=AREnergy(ar, config.model.mask_id, "full"))
    paper = full["estimators"]["paper_estimate"]
    assert paper["log_z"] == "monte_carlo" and 1.0 <= paper["mean_ess"] <= 4.0
    assert "paper_estimate_jackknife" in full["estimators"]
    with pytest.raises(ConfigError, match="^is_samples must be >= 2"):
        LikelihoodConfig(is_samples=1)
    with pytest.raises(ConfigError, match=r"^window must be in \[0, 1\]"):
        LikelihoodConfig(window=1.5)
    nce_config = dataclasses_replace_kind(config, "nce")
    with pytest.raises(LikelihoodError, match="the energy nce:RUN_DIR"):
        likelihood_report(settings, nce_config, mdlm, chunks)


def test_eval_with_an_energy_says_what_each_figure_is_and_shows_progress_off_a_terminal(tiny_data, tmp_path,
                                                                                          capsys, monkeypatch):
    """``edlm eval --energy ar:RUN`` without --json: the bound named as a bound of the exact sampler, the MDLM
    bound of the same T, the paired improvement with its 95% interval (or "no significant difference"), the
    paper's estimate or why it is unavailable, the AR model's own NLL; and, stderr not being a terminal,
    progress lines while it runs (a long evaluation printed nothing until its end)."""
    import edlm.progress
    from toys import save_random_run

    from edlm.cli import main

    monkeypatch.setattr(edlm.progress, "EVERY_SECONDS", 0.0)
    mdlm, ar = save_random_run(tmp_path / "mdlm", "mdlm", 0), save_random_run(tmp_path / "ar", "ar", 1)
    base = ["eval", "--run", str(mdlm), "--data", str(tiny_data), "--energy", f"ar:{ar}", "--steps", "4", "--k",
            "2", "--max-sequences", "4", "--batch-size", "2", "--t-samples", "1", "--inner", "2", "--device", "cpu"]
    capsys.readouterr()
    assert main(base) == 0
    out, err = capsys.readouterr()
    assert "upper bound on the NLL of `edlm sample --steps 4 --k 2 --window 0.2 --is-target row`" in out, out
    lines = out.splitlines()
    for words in ("MDLM bound, same T", "improvement over the MDLM bound", "paper's estimate (not a bound)",
                  "AR model's own NLL"):
        assert sum(words in line for line in lines) == 1, (words, out)
    improvement = next(line for line in lines if "improvement over the MDLM bound" in line)
    assert "95% CI" in improvement and "bpc" in improvement
    assert "edlm likelihood: 1/2 batches" in err and "elapsed" in err, err
    # the paper's estimate when its log Z cannot be trusted: unavailable, with the reason
    assert main(base + ["--energy-mode", "full", "--is-samples", "2", "--min-ess", "100"]) == 0
    out = capsys.readouterr().out
    assert "paper's estimate (not a bound): unavailable: mean effective sample size" in out, out
    assert main(base + ["--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["kind"] == "edlm_likelihood" and "edlm likelihood:" not in err


def dataclasses_replace_kind(config, kind):
    import dataclasses

    return dataclasses.replace(config, model=dataclasses.replace(config.model, kind=kind))


def test_bench_likelihood_table_compares_discrete_bounds_only():
    from edlm.bench.likelihood import likelihood_table, paired_verdict
    from edlm.config import LikelihoodConfig
    from edlm.energy.ar import AREnergy
    from edlm.flags import add_config_flags, config_from_args

    config, mdlm = _tiny("mdlm", 0)
    _, ar = _tiny("ar", 1)
    chunks = torch.randint(0, 27, (4, 8), generator=torch.Generator().manual_seed(1))
    settings = LikelihoodConfig(steps=3, k=2, window=1.0, is_samples=2, inner=1, batch_size=4, t_samples=2)
    energies = [("coar", AREnergy(ar, 27, "coar")), ("full", AREnergy(ar, 27, "full"))]
    rows, raw = likelihood_table(settings, config, mdlm, chunks, energies)
    names = [row["estimator"] for row in rows]
    assert names[0] == "AR (exact NLL)" and "continuous time" in names[1] and names[2] == "MDLM NELBO (T = 3)"
    assert sum("bound" in name for name in names) == 2 and "coar paper estimate (no log Z)" in names
    assert all(("gap_closed" in row) == (row["kind"] == "upper bound" and i > 2) for i, row in enumerate(rows))
    assert rows[1]["kind"] == "upper bound, reference only" and set(raw) == {"coar", "full"}
    # t(0.975, 30) = 2.0423: 0.1 -+ 0.0204 over 31 sequences
    assert paired_verdict({"bpc": 0.1, "stderr_bpc": 0.01, "sequences": 31}) == "+0.1000 [+0.0796, +0.1204]"
    assert paired_verdict({"bpc": 0.01, "stderr_bpc": 0.01, "sequences": 31}).endswith("no significant difference")
    import argparse

    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser, LikelihoodConfig, defaults={"max_sequences": 64})
    args = parser.parse_args(["--window", "0.5", "--energy-mode", "full"])
    assert config_from_args(LikelihoodConfig, args) == LikelihoodConfig(window=0.5, energy_mode="full",
                                                                         max_sequences=64)
    assert "(default: 0.2)" in " ".join(parser.format_help().split())
    assert parser._option_string_actions["--precision"].choices == ["fp32", "bf16"]
