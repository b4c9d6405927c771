"""A checkout installed with ``pip install -e '.[dev]'`` has none of the optional packages (tiktoken, tokenizers,
transformers, the GPT-2 ranks file of openai-whisper, MAUVE, sacrebleu, scipy): the tests that need one skip and
name it; none fails or errors.

The test modules that touch an optional package run in a subprocess whose ``sitecustomize`` hides those packages
from the import system (a path finder that answers "not found" for them, so ``import x`` raises and
``importlib.util.find_spec("x")`` is None, as on a machine without them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ("tiktoken", "tokenizers", "transformers", "huggingface_hub", "whisper", "mauve", "sacrebleu", "faiss",
          "sklearn", "scipy")
# what a skip reason may name for each hidden import (the pip name, the import name, or the file it carries)
NAMES = HIDDEN + ("openai-whisper", "mauve-text", "ranks file", "hf_folder")
MODULES = ["test_tokenizers.py", "test_energies.py", "test_eval_gen_metrics.py", "test_eval_gen_mauve.py",
           "test_eval_gen_judges.py", "test_eval_gen_cli.py", "test_cli.py", "test_hub.py", "test_interop.py",
           "test_safe_loading.py", "test_bench_verdicts.py", "test_bench_speed.py", "test_bench_flags.py",
           "test_bench_quality.py", "test_bench_training.py", "test_protocols.py"]
HIDER = f'''
import importlib.machinery

_HIDDEN = {HIDDEN!r}
_find_spec = importlib.machinery.PathFinder.find_spec.__func__


def _hiding_find_spec(cls, fullname, path=None, target=None):
    if fullname.split(".")[0] in _HIDDEN:
        return None
    return _find_spec(cls, fullname, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_hiding_find_spec)
'''


def hidden_env(folder: Path) -> dict:
    (folder / "sitecustomize.py").write_text(HIDER)
    paths = [str(folder), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


@pytest.mark.slow
def test_tests_needing_optional_packages_skip_with_the_reason_when_they_are_missing(tmp_path):
    env = hidden_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; import torch, numpy; "
                            f"print([n for n in {HIDDEN!r} if u.find_spec(n) is not None])"],
                           capture_output=True, text=True, env=env)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr  # really hidden
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                             *[str(ROOT / "tests" / name) for name in MODULES]],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", summary) and re.search(r"\d+ skipped", summary), summary
    reasons = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    unnamed = [line for line in reasons if "CUDA" not in line and not any(name in line for name in NAMES)]
    assert not unnamed, "skips that do not name the missing package:\n" + "\n".join(unnamed)
