"""Corpus preparation from files and the prepared splits (``edlm.data.prepare`` and ``edlm.data.splits``):
train/val/test splits that are disjoint, complete and sized, meta.json with the vocabulary and hashes,
determinism, read-only memmaps, errors that name the culprit and leave no .bin behind, a failed rerun that
keeps the previous split, load errors, evaluation chunks, and format-1 folders that still load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toys import RAW_TEXT
from toys import prepared_bins as _bins
from toys import prepared_stream as _stream

from edlm.data import (
    ALPHABET,
    VOCAB_SIZE,
    CharTokenizer,
    DataError,
    chars_per_token,
    encode,
    eval_chunks,
    load_meta,
    load_split,
    load_tokenizer,
    normalise,
    prepare_corpus,
)


# ----------------------------------------------------------------------------------------------------------
# prepare_corpus: files


def test_files_splits_disjoint_complete_and_sized(text_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    meta = prepare_corpus("files", out, text_folder)
    expected = " ".join(
        normalise((text_folder / name).read_text(encoding="utf-8")) for name in ("a.txt", "b.txt", "sub/c.md")
    )
    assert _stream(out) == encode(expected).tobytes()
    total = len(expected)
    sizes = meta["sizes"]
    assert sum(sizes.values()) == total
    for split, fraction in (("train", 0.9), ("val", 0.05), ("test", 0.05)):
        assert abs(sizes[split] - fraction * total) <= 1
        assert load_split(out, split).shape == (sizes[split],)
    assert [source["name"] for source in meta["sources"]] == ["a.txt", "b.txt", "sub/c.md"]


def test_meta_records_vocab_and_hashes(text_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_corpus("files", out, text_folder)
    meta = load_meta(out)
    assert meta["alphabet"] == ALPHABET and meta["vocab_size"] == 27 and meta["mask_id"] == 27
    assert meta["corpus"] == "files" and meta["format_version"] == 2 and meta["normalisation"]
    for split in ("train", "val", "test"):
        digest = hashlib.sha256((out / f"{split}.bin").read_bytes()).hexdigest()
        assert meta["bin_sha256"][split] == digest
    for source in meta["sources"]:
        assert source["sha256"] == hashlib.sha256((text_folder / source["name"]).read_bytes()).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.bin", "train.bin", "val.bin"]


def test_prepare_is_deterministic(text_folder: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    prepare_corpus("files", first, text_folder)
    prepare_corpus("files", second, text_folder)
    for name in ("train.bin", "val.bin", "test.bin", "meta.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_out_dir_inside_source_folder_is_skipped(text_folder: Path) -> None:
    first = prepare_corpus("files", text_folder / "prepared", text_folder)
    second = prepare_corpus("files", text_folder / "prepared", text_folder)
    assert first == second and all(not s["name"].startswith("prepared/") for s in second["sources"])


def test_single_file_path(tmp_path: Path) -> None:
    source = tmp_path / "book.txt"
    source.write_text(RAW_TEXT, encoding="utf-8")
    meta = prepare_corpus("files", tmp_path / "out", source)
    assert _stream(tmp_path / "out") == encode(normalise(RAW_TEXT)).tobytes()
    assert meta["sources"][0]["name"] == "book.txt"


def test_load_split_is_readonly_memmap(text_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_corpus("files", out, text_folder)
    train = load_split(out, "train")
    assert isinstance(train, np.memmap) and train.dtype == np.uint8
    with pytest.raises(ValueError):
        train[0] = 1


# ----------------------------------------------------------------------------------------------------------
# prepare_corpus: errors name the culprit and leave no .bin behind


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.txt", b""),
        ("blank.txt", b" \n\t \r\n ... !!! "),
        ("binary.txt", b"hello\x00world" * 10),
        ("short.txt", b"tiny text"),
    ],
)
def test_bad_files_raise_data_error(tmp_path: Path, name: str, content: bytes) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=name):
        prepare_corpus("files", out, source)
    assert _bins(out) == []


def test_bad_file_inside_folder_is_named(text_folder: Path, tmp_path: Path) -> None:
    (text_folder / "sub" / "zz.bin").write_bytes(b"\x89PNG\x00\x00")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="zz.bin"):
        prepare_corpus("files", out, text_folder)
    assert _bins(out) == []


def test_missing_path_and_unknown_corpus(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match="nowhere.txt"):
        prepare_corpus("files", out, tmp_path / "nowhere.txt")
    with pytest.raises(DataError, match="^path needed by corpus 'text8'"):
        prepare_corpus("text8", out)
    with pytest.raises(DataError, match="'wiki'.*shakespeare, text8, files"):
        prepare_corpus("wiki", out, tmp_path)
    assert _bins(out) == []


def test_bad_split_and_unwritable_out_dir(text_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split"):
        prepare_corpus("files", tmp_path / "out", text_folder, split=(0.5, 0.5, 0.5))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="a_file"):
        prepare_corpus("files", blocker / "out", text_folder)


def test_failed_rerun_keeps_previous_split(text_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_corpus("files", out, text_folder)
    before = _stream(out)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00")
    with pytest.raises(DataError, match="bad.txt"):
        prepare_corpus("files", out, bad)
    assert _stream(out) == before and load_meta(out)["corpus"] == "files"
    assert not list(out.glob(".*tmp"))


def test_load_errors(text_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="edlm data prepare"):
        load_meta(tmp_path / "missing")
    out = tmp_path / "out"
    prepare_corpus("files", out, text_folder)
    with (out / "val.bin").open("ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(DataError, match="val.bin"):
        load_split(out, "val")
    (out / "test.bin").unlink()
    with pytest.raises(DataError, match="test.bin.*edlm data prepare"):
        load_split(out, "test")
    with pytest.raises(DataError, match="'dev'"):
        load_split(out, "dev")
    (out / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json.*edlm data prepare"):
        load_split(out, "train")


# ----------------------------------------------------------------------------------------------------------
# batches


def test_eval_chunks_shapes_and_content() -> None:
    tokens = np.arange(103, dtype=np.uint8) % VOCAB_SIZE
    chunks = eval_chunks(tokens, 10)
    assert chunks.shape == (10, 10) and chunks.dtype == torch.int64
    assert torch.equal(chunks.flatten(), torch.from_numpy(tokens[:100].astype(np.int64)))
    assert eval_chunks(tokens, 103).shape == (1, 103)
    with pytest.raises(DataError, match="seq_len=104.*103"):
        eval_chunks(tokens, 104)


# ----------------------------------------------------------------------------------------------------------
# folders prepared by older versions


def test_format_1_folder_still_loads(text_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_corpus("files", out, text_folder)
    meta = json.loads((out / "meta.json").read_text())
    old = {key: meta[key] for key in ("corpus", "alphabet", "vocab_size", "mask_id", "dtype", "normalisation",
                                      "split_fractions", "sizes", "bin_sha256", "sources")}
    (out / "meta.json").write_text(json.dumps({"format_version": 1, **old}))
    loaded = load_meta(out)
    assert loaded["tokenizer"]["name"] == "char" and loaded["chars"] == loaded["sizes"]
    assert load_tokenizer(out).fingerprint == CharTokenizer().fingerprint
    assert chars_per_token(out, "val") == 1.0
    assert np.array_equal(load_split(out, "train"), np.frombuffer((out / "train.bin").read_bytes(), np.uint8))
