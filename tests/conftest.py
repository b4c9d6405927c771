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


@pytest.fixture(scope="session")
def tiny_bpe_run(tmp_path_factory):
    """(run folder, data folder): a bpe:300 corpus of ``TEXT`` and an MDLM trained on it for one step (a subword
    run, tokenizer files included). Skipped without the tokenizers package."""
    pytest.importorskip("tokenizers", reason="bpe:N tokenizers need the tokenizers package (pip install -e '.[text]')")
    from edlm.cli import main

    root = tmp_path_factory.mktemp("bpe")
    (root / "text.txt").write_text(TEXT)
    data, run = root / "data", root / "run"
    assert main(["data", "prepare", "--corpus", "files", "--path", str(root / "text.txt"), "--tokenizer", "bpe:300",
                 "--out", str(data), "--no-progress"]) == 0
    assert main(["train", "--data", str(data), "--preset", "char-tiny", "--out", str(run), "--max-steps", "1",
                 "--no-progress", "--device", "cpu", "model.seq_len=16", "model.hidden=32", "model.n_layers=1",
                 "train.batch_size=4", "train.eval_batches=1", "train.precision=fp32"]) == 0
    return run, data


@pytest.fixture()
def text_folder(tmp_path):
    """A source folder for ``prepare_corpus("files", ...)``: two texts, a nested .md file and a hidden binary."""
    from toys import RAW_TEXT

    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text(RAW_TEXT, encoding="utf-8")
    (folder / "a.txt").write_text("Second in name order? No: first! " * 20, encoding="utf-8")
    (folder / "sub" / "c.md").write_text("Nested file 7 " * 10, encoding="utf-8")
    (folder / ".hidden").write_bytes(b"\x00\x01 ignored")
    return folder


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory):
    """A saved tiny AR checkpoint (random adaLN/output layers so the judge is not uniform): (run, model, config).
    Module-scoped: one untrained run per judge or eval-gen test file, no training."""
    from toys import save_random_run

    from edlm.checkpoint import load_model

    run = save_random_run(tmp_path_factory.mktemp("judge") / "run", "ar", seed=0)
    config, model = load_model(run)
    return run, model, config
