"""``edlm bench oracle`` (src/edlm/bench/oracle.py): every setting drawn on shared row seeds, exact law scores with
intervals, paired comparisons, the matched-quality check and the plot, on a tiny law and tiny random runs."""

import json

import numpy as np
import pytest
from toys import save_random_run

from edlm.bench import oracle
from edlm.law import make_law, make_law_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    make_law_folder(make_law("markov", 27, 3, seed=0, order=1), root / "law", length=32)
    return root, save_random_run(root / "mdlm", "mdlm", seed=0), save_random_run(root / "ar", "ar", seed=1)


def test_oracle_runs_both_model_sets_and_reports_every_comparison(tiny):
    root, mdlm, ar = tiny
    out = root / "out"
    assert oracle.main(["--law", str(root / "law"), "--mdlm", str(mdlm), "--ar", str(ar), "--fractions", "4,2",
                        "--k", "2", "--num", "8", "--batch-size", "4", "--resamples", "200",
                        "--out", str(out)]) == 0
    result = json.loads((out / "oracle.json").read_text())
    settings = {(r["set"], r["method"], r["T"], r["k"]) for r in result["rows"]}
    assert ("exact", "reveal-exact", 8, 2) in settings and ("trained", "reveal-exact", 8, 2) not in settings
    assert ("trained", "reveal4", 16, 2) in settings and ("exact", "mdlm", 16, 1) in settings
    for row in result["rows"]:
        low, high = row["forbidden_rate"]["ci95"]
        assert low <= row["forbidden_rate"]["estimate"] <= high
        assert len(row["per_row"]["forbidden"]) == 8 and row["steps_run"] <= row["T"]
        assert (row["energy_rows_per_row_step"] > 0) == (row["method"] != "mdlm")
    against = {(c["set"], c["method"], c["against"]) for c in result["comparisons"]}
    assert ("exact", "reveal1", "row") in against and ("trained", "row", "mdlm") in against
    assert all(c["verdict"] for c in result["comparisons"])
    assert {m["reference_T"] for m in result["matched_quality"]} == {16}  # MDLM at the largest T
    assert all(m["T"] <= 8 for m in result["matched_quality"])
    assert (out / "oracle.md").read_text().count("| exact |") == 2 * 6  # per T: MDLM + 5 EDLM methods at one k
    assert (out / "oracle.png").is_file() or "matplotlib" not in str(result["environment"])


def test_settings_share_their_row_seeds_so_comparisons_are_paired(tiny):
    root, _, _ = tiny
    run, models = oracle.exact_models(str(root / "law"))
    args = oracle.parse_args(["--num", "8", "--batch-size", "4", "--law", str(root / "law"), "--window", "0.5"])
    first = oracle.run_setting(models, run, "mdlm", 8, 1, args)
    again = oracle.run_setting(models, run, "mdlm", 8, 1, args)
    assert np.array_equal(first["forbidden"], again["forbidden"]) and np.array_equal(first["nll"], again["nll"])
    indices = np.random.default_rng(0).integers(0, 8, size=(100, 8))
    same = oracle.paired_relative(first, again, "forbidden", indices)
    assert same.estimate == 0 or np.isnan(same.estimate)


def test_bad_flags_fail_in_one_line(tiny, capsys):
    root, mdlm, _ = tiny
    for argv, message in ((["--mdlm", str(mdlm)], "--mdlm and --ar go together"),
                          (["--methods", "mdlm,magic"], "unknown 'magic'"),
                          (["--num", "4", "--batch-size", "4"], "at least 2 x --batch-size")):
        with pytest.raises(SystemExit):
            oracle.parse_args(argv)
        assert message in capsys.readouterr().err
