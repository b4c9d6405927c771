"""scripts/gpu_check.sh runs on GPU machines only a few minutes a month: a broken script wastes them. Its CPU
smoke mode (GPU_CHECK_QUICK=1 DEVICE=cpu) runs every step here, and its own deadline is checked with a small
budget."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gpt2_corpus(tmp_path: Path) -> Path:
    """A tiny GPT-2-tokenised corpus (the owt-paper steps' GPU_DATA_OWT)."""
    from conftest import TEXT

    from edlm.data import prepare_corpus

    (tmp_path / "owt.txt").write_text(TEXT)
    prepare_corpus("files", tmp_path / "gpt2", tmp_path / "owt.txt", tokenizer="gpt2")
    return tmp_path / "gpt2"


def run_check(tmp_path: Path, data: Path, budget: int, out: Path | None = None
              ) -> tuple[subprocess.CompletedProcess, float, str]:
    env = dict(os.environ, GPU_CHECK_QUICK="1", DEVICE="cpu", PYTHON=sys.executable, GPU_DATA=str(data),
               GPU_DATA_OWT=str(gpt2_corpus(tmp_path)), GPU_CHECK_WORK=str(tmp_path / "work"),
               GPU_CHECK_BUDGET_S=str(budget), OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    if out is not None:
        env["OUT"] = str(out)
    started = time.perf_counter()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                            env=env, timeout=600)
    report = (tmp_path / "work" / "results" / "report.md").read_text()
    return result, time.perf_counter() - started, report


def step_rows(report: str) -> dict[str, str]:
    """{step: status} from the report's summary table."""
    rows = re.findall(r"^\| ([\w -]+) \| [-\d]+ \| \d+ \| (.+) \|$", report, flags=re.MULTILINE)
    return {name: status for name, status in rows if name != "step"}


@pytest.mark.slow
def test_every_step_of_the_smoke_run_succeeds(tmp_path, tiny_data):
    committed = ROOT / "bench" / "results" / "gpu" / "report.md"
    before = committed.read_bytes() if committed.exists() else None
    out = tmp_path / "device-out"
    out.mkdir()
    result, _, report = run_check(tmp_path, tiny_data, budget=600, out=out)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = step_rows(report)
    expected = {"pytest -m gpu", "throughput-warmup", "throughput-warmup-small", "train-mdlm", "train-ar",
                "eval-mdlm", "eval-ar", "owt-train", "owt-eval",
                "eval-edlm-bound", "sample-mdlm", "sample-edlm-ar", "eval-gen-mdlm", "eval-gen-edlm-ar",
                "bench-step-cost", "bench-vs-mdlm", "bench-throughput-owt", "bench-throughput",
                "bench-throughput-small"}
    assert set(rows) == expected, set(rows) ^ expected
    failed = {name: status for name, status in rows.items() if status not in ("ok", "skipped (DEVICE=cpu)")}
    assert not failed, (failed, report[-3000:])
    results = tmp_path / "work" / "results"
    for name in ("step-cost", "vs-mdlm", "throughput-owt-paper", "throughput-text8-paper", "throughput-char-small"):
        assert (results / f"{name}.json").is_file() and f"## {name}" in report, name
    for name in ("throughput-owt-paper", "throughput-text8-paper", "throughput-char-small"):
        assert (results / f"{name}.png").is_file() or importlib.util.find_spec("matplotlib") is None, name
    assert "Cut by the deadline: none." in report and "verdict" in report and "target >= 3x" in report
    assert re.search(r"owt-eval: [^\n]*?: \d+\.\d+ ± \S+ bpc", report), report[-3000:]  # a finite bpc
    assert re.search(r"commit [0-9a-f]{7,}", report)
    assert sorted(path.name for path in out.iterdir()) == ["gpu_logs.tar.gz", "gpu_report.md", "gpu_results.tar.gz"]
    assert (committed.read_bytes() if committed.exists() else None) == before  # the GPU's report is left alone


@pytest.mark.slow
def test_the_script_keeps_its_deadline(tmp_path, tiny_data):
    budget = 12
    result, seconds, report = run_check(tmp_path, tiny_data, budget=budget)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = step_rows(report)
    skipped = [name for name, status in rows.items() if status.startswith("skipped: the")]
    assert {"bench-step-cost", "bench-vs-mdlm", "bench-throughput-owt", "bench-throughput",
            "bench-throughput-small"} <= set(skipped), rows
    assert "Cut by the deadline: " in report and "bench-step-cost" in report.split("Cut by the deadline: ")[1]
    assert seconds < budget + 20, seconds  # the deadline, the kill grace of a stopped step, the report
