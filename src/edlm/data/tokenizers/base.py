"""What every tokenizer offers (``Tokenizer``), the errors, and the helpers the families share.

A tokenizer owns all of text <-> ids: encoding corpus text, the prompt and infill templates of sampling, decoding
a sampled row, and splitting a sample into its documents. The model only ever sees ids.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from edlm.data.errors import DataError
from edlm.errors import EdlmError

EOS_TEXT = "<|endoftext|>"  # how a decoded sample shows the end-of-text token (document separator)
MASK_TEXT = "[MASK]"  # how a subword decode shows the mask id


class TokenizerMismatchError(DataError):
    """A model, energy or judge was made with another tokenizer than the data or model it meets."""


class PromptError(EdlmError, ValueError):
    """A prompt or infill template that cannot be used; the message names the flag."""


class Tokenizer(Protocol):
    """What every tokenizer offers. Ids are int64 in [0, vocab_size); ``mask_id == vocab_size``."""

    name: str  # "char", "gpt2" or "bpe:N"
    vocab_size: int  # real tokens (EOS included), excluding the mask
    mask_id: int  # == vocab_size
    eos_id: int | None  # the document separator, None for char
    fingerprint: str  # sha256 hex of what defines the tokenizer

    def normalise(self, text: str) -> str:
        """The text this tokenizer actually sees (char: text8 folding without stripping; subword: unchanged)."""
        ...

    def encode(self, text: str) -> np.ndarray:
        """text -> (N,) int64 ids; never emits the EOS for literal '<|endoftext|>' text."""
        ...

    def decode(self, ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
        """(N,) ids -> text, the whole row: the mask id shows as '_' (char) or '[MASK]' (subword), the EOS as
        '<|endoftext|>'; byte-level tokens are decoded as one byte sequence (``decode_utf8``)."""
        ...

    def encode_sample(self, text: str) -> np.ndarray:
        """A decoded sample back to (N,) int64 ids: ``decode``'s inverse on what ``decode`` writes ('<|endoftext|>'
        becomes the EOS id). ValueError (one line) for text this tokenizer cannot hold."""
        ...

    def documents(self, text: str) -> list[str]:
        """The documents of a decoded sample: the pieces between end-of-text markers, empty ones left out."""
        ...

    def prompt_ids(self, text: str) -> tuple[list[int], list[str]]:
        """A prompt -> (prefix ids, notes for the user, e.g. how it was normalised)."""
        ...

    def infill_ids(self, template: str) -> tuple[list[int | None], list[str]]:
        """An infill template -> (ids with None at each position to fill, notes)."""
        ...

    def char_counts(self) -> np.ndarray:
        """(vocab_size,) int64: characters each token adds to decoded text (EOS counts 1, like a separator)."""
        ...

    def to_meta(self) -> dict:
        """JSON-able description: name, vocab_size, mask_id, eos_id, fingerprint (and file for bpe)."""
        ...


def sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def base_meta(tokenizer: Tokenizer) -> dict:
    return {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size, "mask_id": tokenizer.mask_id,
            "eos_id": tokenizer.eos_id, "fingerprint": tokenizer.fingerprint}


def as_ids(ids: np.ndarray | Sequence[int] | torch.Tensor) -> np.ndarray:
    """Any 1-D integer sequence (numpy, list, torch) -> (N,) int64; ValueError for another shape."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"decode: expected a 1-D sequence of ids, got shape {array.shape}")
    return array


def check_id_range(ids: np.ndarray, mask_id: int) -> None:
    """ValueError naming the first id outside [0, mask_id]."""
    bad = (ids < 0) | (ids > mask_id)
    if bad.any():
        position = int(bad.argmax())
        raise ValueError(f"decode: id {int(ids[position])} at position {position} is outside [0, {mask_id}]")


def utf8_char_count(data: bytes) -> int:
    """Characters that ``data`` adds to a UTF-8 text: its bytes that do not continue a multi-byte character."""
    return sum(1 for byte in data if byte & 0xC0 != 0x80)


def decode_utf8(data: bytes) -> str:
    """A byte-level segment -> valid text, with a stated policy for bytes that are not UTF-8.

    An incomplete multi-byte character at the segment's end (a row, or a document before its end-of-text token,
    stopped inside a character) is dropped: it has no text yet. Any other byte that is not valid UTF-8 (e.g. a
    continuation byte with no lead byte) is written as the four characters ``\\xNN``, so the text stays valid and
    shows where the model wrote something that is not UTF-8; no replacement character U+FFFD is produced.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    return decoder.decode(data, final=False)  # final=False: a trailing incomplete character stays unread


def split_at_eos(text: str) -> list[str]:
    """The documents of a decoded subword sample: pieces between '<|endoftext|>' markers, empty ones left out."""
    return [piece for piece in text.split(EOS_TEXT) if piece]
