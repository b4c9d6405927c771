"""docs/python.md runs: every ```python block, in order and in one namespace (as a notebook would), in a folder
holding the page's data/, runs/mdlm, runs/ar and law/ (a small corpus, untrained char-tiny runs, a markov law)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import TEXT
from toys import save_random_run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_page_has_examples_for_every_api_function():
    code = "\n".join(python_blocks(PAGE.read_text()))
    from edlm import api

    types = ("ApiError", "LikelihoodJob", "Model", "Samples")  # returned or raised, not called
    missing = [name for name in api.__all__ if name not in types and f"api.{name}(" not in code]
    assert not missing, f"docs/python.md shows no example of {missing}"


def test_every_python_block_of_the_page_runs(tmp_path, monkeypatch, capsys):
    from edlm.data import prepare_corpus
    from edlm.law import make_law, make_law_folder

    (tmp_path / "text.txt").write_text(TEXT)
    prepare_corpus("files", tmp_path / "data", tmp_path / "text.txt")
    (tmp_path / "runs").mkdir()
    save_random_run(tmp_path / "runs" / "mdlm", "mdlm", seed=0)
    save_random_run(tmp_path / "runs" / "ar", "ar", seed=1)
    make_law_folder(make_law("markov", 27, 3, seed=0), tmp_path / "law", length=32)
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 8
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/python.md block {index}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "mdlm 32 char cpu" in printed and "law None 32" in printed
