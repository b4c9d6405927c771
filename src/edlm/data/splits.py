"""A prepared data folder: reading ``meta.json``, memory-mapped splits, evaluation rows, its tokenizer; and the two
rules its writers share (the split dtype of a vocabulary, a writable output folder).

``meta.json`` (``FORMAT_VERSION`` 2) names the tokenizer (``{"name", "vocab_size", "mask_id", "eos_id",
"fingerprint"}``), the split dtype, the size of each split in tokens (``sizes``) and in characters of its decoded
text (``chars``; an EOS counts one). Folders of format 1 (char only, written before tokenizers existed) are read
as char folders with ``chars == sizes``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from edlm.data.errors import DataError
from edlm.data.tokenizers import CHAR_META, Tokenizer, tokenizer_from_meta
from edlm.fileio import FileFormatError, read_json

FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")
_HINT = "run `edlm data prepare` first"


def split_dtype(vocab_size: int) -> np.dtype:
    """The unsigned dtype of a folder's split files: the smallest of uint8 / uint16 / uint32 that holds the ids."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def prepare_out_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` if missing and check that it is writable (DataError, subject ``out``, otherwise);
    returns whether it was created."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise DataError(f"{out_dir}: not a writable folder ({error.strerror or error})", "out") from None
    return created


def load_meta(data_dir: str | Path) -> dict:
    """Read ``meta.json`` of a prepared folder (format 1 upgraded in memory); DataError if missing or unknown."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"data dir {folder}: no such folder; {_HINT}")
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing (preparation unfinished?); {_HINT}")
    try:
        meta = read_json(meta_path, "data folder meta.json")
    except FileFormatError as error:
        raise DataError(f"{error}; {_HINT}") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version == 1:
        meta = {**meta, "tokenizer": dict(CHAR_META), "eos_id": None, "chars": dict(meta["sizes"])}
    elif version != FORMAT_VERSION:
        raise DataError(f"{meta_path}: format_version {version!r}, expected 1 or {FORMAT_VERSION}; {_HINT}")
    return meta


def load_tokenizer(data_dir: str | Path) -> Tokenizer:
    """The tokenizer a data folder was prepared with (checked against the fingerprint in ``meta.json``)."""
    return tokenizer_from_meta(load_meta(data_dir)["tokenizer"], data_dir)


def load_split(data_dir: str | Path, split: str) -> np.ndarray:
    """Memory-map one split read-only: (N,) ids of the folder's dtype (uint8/uint16/uint32); DataError if
    missing or its size differs from meta."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    meta = load_meta(data_dir)
    bin_path = Path(data_dir) / f"{split}.bin"
    if not bin_path.is_file():
        raise DataError(f"{bin_path}: missing; run `edlm data prepare` again")
    dtype = np.dtype(meta.get("dtype", "uint8"))
    expected = int(meta["sizes"][split])
    actual = bin_path.stat().st_size
    if actual != expected * dtype.itemsize:
        raise DataError(f"{bin_path}: {actual} bytes but meta.json says {expected} {dtype.name} ids; "
                        "run `edlm data prepare` again")
    return np.memmap(bin_path, dtype=dtype, mode="r", shape=(expected,))


def chars_per_token(data_dir: str | Path, split: str) -> float:
    """Characters of decoded text per token in ``split`` (1.0 for char): bits/char = nats/token / this / ln 2."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    meta = load_meta(data_dir)
    return int(meta["chars"][split]) / int(meta["sizes"][split])


def eval_chunks(tokens: np.ndarray, seq_len: int) -> torch.Tensor:
    """Non-overlapping rows covering a split: tokens (N_tok,) unsigned ints -> (N, L) int64, N = N_tok // L.

    Rows wrap across document boundaries (EOS tokens stay in the stream, no padding); the tail shorter than
    ``seq_len`` is dropped; DataError if not even one row fits.
    """
    count = len(tokens) // seq_len if seq_len > 0 else 0
    if count == 0:
        raise DataError(f"seq_len={seq_len}: split has {len(tokens)} tokens, not enough for one evaluation chunk")
    chunks = np.array(tokens[: count * seq_len], dtype=np.int64)
    return torch.from_numpy(chunks).view(count, seq_len)  # (N, L)
