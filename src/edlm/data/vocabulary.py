"""The character alphabet: text8-style normalisation and the 27-symbol encode/decode.

Ids 0..25 are ``a``..``z``, id 26 is space; ``VOCAB_SIZE = 27`` real tokens and ``MASK_ID = 27``, so a
character model emits 28 logits. Subword vocabularies live in ``edlm.data.tokenizers``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np
import torch

ALPHABET = "abcdefghijklmnopqrstuvwxyz "
VOCAB_SIZE = len(ALPHABET)  # 27
MASK_ID = VOCAB_SIZE  # 27: the [MASK] id, one past the real tokens
MASK_CHAR = "_"  # how decode() shows MASK_ID

NORMALISATION = (
    "text8-style: NFKD (accents folded to ascii, e.g. e-acute -> e), lowercase, each digit spelled out as a "
    "word ('1984' -> ' one nine eight four '), every other character -> space, whitespace runs collapsed to "
    "one space, leading/trailing space stripped; sources joined with a single space"
)
TEXT8_NORMALISATION = "none: text8 is already normalised; characters checked against the alphabet, kept verbatim"

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_RE = re.compile(r"[0-9]")
_SPACES_RE = re.compile(r" {2,}")

# byte -> id lookup for encode; 255 marks a byte outside the alphabet.
_BAD_ID = 255
_ENCODE_TABLE = np.full(256, _BAD_ID, dtype=np.uint8)
_ENCODE_TABLE[np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(VOCAB_SIZE, dtype=np.uint8)
# id -> ascii byte lookup for decode (the mask id included).
_DECODE_TABLE = np.frombuffer((ALPHABET + MASK_CHAR).encode("ascii"), dtype=np.uint8)
# ascii byte -> ascii byte: keep a-z and space, every other byte becomes a space.
_ASCII_KEEP = bytes(c if chr(c) in ALPHABET else ord(" ") for c in range(256))


def _fold(text: str) -> str:
    """NFKD, lowercase, accents dropped, digits spelled out, everything else outside ``ALPHABET`` -> space."""
    text = unicodedata.normalize("NFKD", text).lower()
    if not text.isascii():
        # After NFKD an accented letter is base letter + combining mark: drop the marks, blank the rest.
        non_ascii = {c for c in set(text) if not c.isascii()}
        table = {ord(c): ("" if unicodedata.category(c).startswith("M") else " ") for c in non_ascii}
        text = text.translate(table)
    text = _DIGIT_RE.sub(lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text)
    return text.encode("ascii").translate(_ASCII_KEEP).decode("ascii")


def normalise(text: str) -> str:
    """text8-style normalisation (see ``NORMALISATION``); the result uses only the 27 ``ALPHABET`` symbols.

    >>> normalise("Héllo, World 1984!")
    'hello world one nine eight four'
    """
    return " ".join(_fold(text).split())


def normalise_piece(text: str) -> str:
    """Like ``normalise`` but keeps one leading/trailing space where ``text`` has whitespace there.

    For prompts and infill pieces: ``normalise_piece("to be or not ") == "to be or not "``.
    """
    return _SPACES_RE.sub(" ", _fold(text))


def encode(text: str) -> np.ndarray:
    """Map normalised text to token ids: (len(text),) uint8 in [0, VOCAB_SIZE).

    Raises ValueError naming the first character outside ``ALPHABET`` (run ``normalise`` first).
    """
    if not text.isascii():
        position, char = next((i, c) for i, c in enumerate(text) if not c.isascii())
        raise ValueError(
            f"encode: character {char!r} at position {position} is not in the alphabet; normalise() first"
        )
    return encode_bytes(text.encode("ascii"), source="encode")


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


def encode_bytes(raw: bytes | bytearray | memoryview, source: str) -> np.ndarray:
    """ASCII bytes (N,) -> (N,) uint8 ids; ValueError naming ``source`` and the first byte outside ``ALPHABET``."""
    ids = _ENCODE_TABLE[np.frombuffer(raw, dtype=np.uint8)]
    bad = ids == _BAD_ID
    if bad.any():
        position = int(bad.argmax())
        byte = int(np.frombuffer(raw, dtype=np.uint8)[position])
        shown = repr(chr(byte)) if byte < 128 else f"byte 0x{byte:02x}"
        raise ValueError(f"{source}: character {shown} at position {position} is not in the alphabet {ALPHABET!r}")
    return ids
