"""The ``bpe:N`` tokenizer: a byte-level BPE with (at most) N tokens, EOS included, trained by Hugging Face
``tokenizers`` on a corpus's train split and saved as ``tokenizer.json`` in the data folder (``tokenizers`` is
imported when one is built or trained)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from edlm.data.tokenizers.base import EOS_TEXT, base_meta, utf8_char_count
from edlm.data.tokenizers.byte_level import ByteLevelTokenizer

TOKENIZER_FILE = "tokenizer.json"
BPE_MIN, BPE_MAX = 258, 1 << 20  # 256 bytes + EOS + at least one merge


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character -> byte (the byte-level alphabet of Hugging Face ``ByteLevel``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    shifted, extra = [], 0
    for byte in range(256):
        if byte not in printable:
            shifted.append((byte, 256 + extra))
            extra += 1
    table = {chr(byte): byte for byte in printable}
    table.update({chr(code): byte for byte, code in shifted})
    return table


@dataclass(frozen=True, eq=False)
class BpeTokenizer(ByteLevelTokenizer):
    """A trained byte-level BPE, held as its ``tokenizer.json`` text (``requested`` = N of ``bpe:N``)."""

    requested: int
    json_text: str
    _backend: Any = field(init=False, repr=False, compare=False)
    _bytes: Any = field(init=False, repr=False, compare=False)  # id -> the token's bytes (EOS: b"")

    def __post_init__(self) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        backend = HFTokenizer.from_str(self.json_text)
        backend.encode_special_tokens = True  # literal '<|endoftext|>' in text is text, as in tiktoken's ordinary
        object.__setattr__(self, "_backend", backend)
        byte_of = _byte_decoder()
        table = [b""] * backend.get_vocab_size(with_added_tokens=True)
        for token, token_id in backend.get_vocab(with_added_tokens=True).items():
            if token != EOS_TEXT:
                table[token_id] = bytes(byte_of[c] for c in token)
        object.__setattr__(self, "_bytes", table)

    def __reduce__(self):
        return (BpeTokenizer, (self.requested, self.json_text))

    @property
    def name(self) -> str:
        return f"bpe:{self.requested}"

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def eos_id(self) -> int | None:
        return self._backend.token_to_id(EOS_TEXT)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.json_text.encode("utf-8")).hexdigest()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def token_bytes_of(self, ids: np.ndarray) -> bytes:
        return b"".join(self._bytes[i] for i in ids.tolist())

    def char_counts(self) -> np.ndarray:
        counts = np.asarray([utf8_char_count(data) for data in self._bytes], dtype=np.int64)
        if self.eos_id is not None:
            counts[self.eos_id] = 1
        return counts

    def to_meta(self) -> dict:
        return {**base_meta(self), "file": TOKENIZER_FILE}


def train_bpe(texts: Iterable[str], vocab_size: int) -> BpeTokenizer:
    """Train a byte-level BPE (GPT-2 pre-tokenizer, 256 byte tokens, EOS, merges) of at most ``vocab_size``.

    A small corpus may run out of merges first; the result then has fewer tokens (``vocab_size`` says how many).
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    return BpeTokenizer(vocab_size, backend.to_str())
