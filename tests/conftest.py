import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

TEXT = ("the quick brown fox jumps over the lazy dog and the cat sat on the mat while the dog barked "
        "at the moon and the stars shone over the quiet town where nobody ever slept before dawn ") * 60


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small prepared corpus (a few KB of repetitive English)."""
    from edlm.data import prepare_corpus

    root = tmp_path_factory.mktemp("corpus")
    (root / "text.txt").write_text(TEXT)
    out = root / "data"
    prepare_corpus("files", out, root / "text.txt")
    return out
