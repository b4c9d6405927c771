"""Tokenizers: text <-> token ids. The model knows only ids; this layer owns everything about text.

Three kinds, picked by name (``TOKENIZER_HELP``):

- ``char``: the 27-symbol text8 alphabet (``edlm.data.vocabulary``); text is normalised first.
- ``gpt2``: the exact GPT-2 byte-level BPE, offline: the ranks file ``gpt2.tiktoken`` shipped by the PyPI package
  ``openai-whisper`` (found through importlib, never imported) read by ``tiktoken``. ``<|endoftext|>`` = 50256 is
  the EOS, the mask id is 50257, so models have 50258 rows (as MDLM-OWT).
- ``bpe:N``: a byte-level BPE with (at most) N tokens, EOS included, trained by Hugging Face ``tokenizers`` on the
  train split and saved as ``tokenizer.json`` in the data folder.

Every tokenizer has ``vocab_size`` real tokens and ``mask_id == vocab_size``. Its ``fingerprint`` is the sha256
of what defines it (alphabet + normalisation, ranks file + pattern, or ``tokenizer.json``); two tokenizers with the
same name, vocabulary and fingerprint encode identically. ``tiktoken`` and ``tokenizers`` are imported lazily.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
import torch

from edlm.data.errors import DataError
from edlm.data.vocabulary import (
    ALPHABET,
    MASK_ID,
    NORMALISATION,
    VOCAB_SIZE,
    decode,
    encode,
    normalise_piece,
)

TOKENIZER_HELP = "char (27 symbols, text8-style), gpt2 (GPT-2 BPE, 50257 tokens) or bpe:N (byte-level BPE, N tokens)"
TOKENIZER_FILE = "tokenizer.json"
EOS_TEXT = "<|endoftext|>"

GPT2_ASSET_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_EOS_ID = 50256
# The pattern of the original GPT-2 release (tiktoken's r50k pattern is a faster equivalent of it).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_GPT2_INSTALL = "pip install tiktoken && pip install --no-deps openai-whisper"
_BPE_MIN, _BPE_MAX = 258, 1 << 20  # 256 bytes + EOS + at least one merge
_BLANK_RE = re.compile(r"\[blank:([^\]]*)\]")


class TokenizerMismatchError(DataError):
    """A model, energy or judge was made with another tokenizer than the data or model it meets."""


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
        """(N,) ids -> text; the mask id shows as '_' (char) or '[MASK]' (subword)."""
        ...

    def char_counts(self) -> np.ndarray:
        """(vocab_size,) int64: characters each token adds to decoded text (EOS counts 1, like a separator)."""
        ...

    def to_meta(self) -> dict:
        """JSON-able description: name, vocab_size, mask_id, eos_id, fingerprint (and file for bpe)."""
        ...


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def _base_meta(tokenizer: Tokenizer) -> dict:
    return {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size, "mask_id": tokenizer.mask_id,
            "eos_id": tokenizer.eos_id, "fingerprint": tokenizer.fingerprint}


def _as_ids(ids: np.ndarray | Sequence[int] | torch.Tensor) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"decode: expected a 1-D sequence of ids, got shape {array.shape}")
    return array


def _utf8_char_count(data: bytes) -> int:
    """Characters that ``data`` adds to a UTF-8 text: its bytes that do not continue a multi-byte character."""
    return sum(1 for byte in data if byte & 0xC0 != 0x80)


# ----------------------------------------------------------------------------------------------------------
# char


@dataclass(frozen=True)
class CharTokenizer:
    """The 27-symbol alphabet: a-z = 0..25, space = 26, mask = 27; no EOS (documents joined by one space)."""

    name: str = "char"
    vocab_size: int = VOCAB_SIZE
    mask_id: int = MASK_ID
    eos_id: int | None = None
    fingerprint: str = _sha256_json({"name": "char", "alphabet": ALPHABET, "normalisation": NORMALISATION})

    def normalise(self, text: str) -> str:
        return normalise_piece(text)

    def encode(self, text: str) -> np.ndarray:
        """Normalise (keeping edge spaces, see ``normalise_piece``), then (N,) int64 ids."""
        return encode(normalise_piece(text)).astype(np.int64)

    def decode(self, ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
        return decode(ids)

    def char_counts(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)

    def to_meta(self) -> dict:
        return _base_meta(self)


# ----------------------------------------------------------------------------------------------------------
# gpt2


def gpt2_asset_path() -> Path:
    """``whisper/assets/gpt2.tiktoken`` of the installed ``openai-whisper`` (located, not imported)."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"tokenizer 'gpt2' needs the openai-whisper package's ranks file; run `{_GPT2_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "gpt2.tiktoken"
    if not path.is_file():
        raise DataError(f"tokenizer 'gpt2': {path} missing; reinstall: `{_GPT2_INSTALL}`")
    return path


class Gpt2Tokenizer:
    """GPT-2 BPE: 50257 tokens (``<|endoftext|>`` = 50256 is the EOS), mask id 50257."""

    name = "gpt2"
    vocab_size = GPT2_EOS_ID + 1
    mask_id = GPT2_EOS_ID + 1
    eos_id: int | None = GPT2_EOS_ID
    fingerprint = _sha256_json({"name": "gpt2", "ranks_sha256": GPT2_ASSET_SHA256, "pattern": GPT2_PATTERN,
                                "special": {EOS_TEXT: GPT2_EOS_ID}})

    def __init__(self) -> None:
        try:
            import tiktoken
        except ImportError:
            raise DataError(f"tokenizer 'gpt2' needs tiktoken; run `{_GPT2_INSTALL}`") from None
        path = gpt2_asset_path()
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != GPT2_ASSET_SHA256:
            raise DataError(f"tokenizer 'gpt2': {path} has the wrong sha256; reinstall: `{_GPT2_INSTALL}`")
        # The format of tiktoken.load.load_tiktoken_bpe, parsed here because that function also copies the file
        # into a cache folder under /tmp.
        ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines())}
        self._encoding = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                           special_tokens={EOS_TEXT: GPT2_EOS_ID}, explicit_n_vocab=self.vocab_size)

    def __reduce__(self):  # rebuilt from the ranks file in worker processes
        return (Gpt2Tokenizer, ())

    def normalise(self, text: str) -> str:
        return text

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._encoding.encode_ordinary(text), dtype=np.int64)

    def decode(self, ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
        return _decode_with_mask(_as_ids(ids), self.mask_id, lambda part: self._encoding.decode(part.tolist()))

    def token_bytes(self, token_id: int) -> bytes:
        return self._encoding.decode_single_token_bytes(token_id)

    def char_counts(self) -> np.ndarray:
        counts = [_utf8_char_count(self.token_bytes(i)) for i in range(GPT2_EOS_ID)]
        return np.asarray(counts + [1], dtype=np.int64)

    def to_meta(self) -> dict:
        return _base_meta(self)


def _decode_with_mask(ids: np.ndarray, mask_id: int, decode_part) -> str:
    """Decode runs of real ids with ``decode_part``; each mask id shows as '[MASK]'."""
    bad = (ids < 0) | (ids > mask_id)
    if bad.any():
        position = int(bad.argmax())
        raise ValueError(f"decode: id {int(ids[position])} at position {position} is outside [0, {mask_id}]")
    pieces, start = [], 0
    for position in np.flatnonzero(ids == mask_id).tolist() + [len(ids)]:
        if position > start:
            pieces.append(decode_part(ids[start:position]))
        if position < len(ids):
            pieces.append("[MASK]")
        start = position + 1
    return "".join(pieces)


# ----------------------------------------------------------------------------------------------------------
# bpe:N


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
class BpeTokenizer:
    """A trained byte-level BPE, held as its ``tokenizer.json`` text (``requested`` = N of ``bpe:N``)."""

    requested: int
    json_text: str
    _backend: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        backend = HFTokenizer.from_str(self.json_text)
        backend.encode_special_tokens = True  # literal '<|endoftext|>' in text is text, as in tiktoken's ordinary
        object.__setattr__(self, "_backend", backend)

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

    def normalise(self, text: str) -> str:
        return text

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
        return _decode_with_mask(_as_ids(ids), self.mask_id,
                                 lambda part: self._backend.decode(part.tolist(), skip_special_tokens=False))

    def char_counts(self) -> np.ndarray:
        byte_of = _byte_decoder()
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for token, token_id in self._backend.get_vocab(with_added_tokens=True).items():
            counts[token_id] = 1 if token_id == self.eos_id else _utf8_char_count(bytes(byte_of[c] for c in token))
        return counts

    def to_meta(self) -> dict:
        return {**_base_meta(self), "file": TOKENIZER_FILE}


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


# ----------------------------------------------------------------------------------------------------------
# names, metadata, checks


def parse_tokenizer_name(name: str) -> tuple[str, int | None]:
    """``"char"`` / ``"gpt2"`` / ``"bpe:N"`` -> (kind, N); DataError naming ``--tokenizer`` otherwise."""
    if name in ("char", "gpt2"):
        return name, None
    match = re.fullmatch(r"bpe:(\d+)", name)
    if match and _BPE_MIN <= int(match.group(1)) <= _BPE_MAX:
        return "bpe", int(match.group(1))
    raise DataError(f"--tokenizer {name!r}: unknown; choose {TOKENIZER_HELP}, {_BPE_MIN} <= N <= {_BPE_MAX}")


def get_tokenizer(name: str) -> Tokenizer:
    """A ready tokenizer by name (``char`` or ``gpt2``); ``bpe:N`` must be trained (``train_bpe``) or loaded."""
    kind, _ = parse_tokenizer_name(name)
    if kind == "bpe":
        raise DataError(f"tokenizer {name!r} is trained per corpus; load it from its data folder (load_tokenizer)")
    return CharTokenizer() if kind == "char" else Gpt2Tokenizer()


CHAR_META = CharTokenizer().to_meta()


def tokenizer_from_meta(meta: Mapping[str, Any], data_dir: str | Path) -> Tokenizer:
    """Rebuild the tokenizer that ``meta`` (a ``to_meta()`` dict) describes; checks the fingerprint."""
    kind, requested = parse_tokenizer_name(str(meta.get("name")))
    if kind == "bpe":
        path = Path(data_dir) / str(meta.get("file", TOKENIZER_FILE))
        try:
            tokenizer: Tokenizer = BpeTokenizer(int(requested or 0), path.read_text(encoding="utf-8"))
        except OSError as error:
            raise DataError(f"{path}: unreadable ({error.strerror or error}); run `edlm data prepare` again") from None
        except Exception as error:  # the tokenizers library raises its own exception type for a malformed file
            raise DataError(f"{path}: not a tokenizers JSON file ({error}); run `edlm data prepare` again") from None
    else:
        tokenizer = get_tokenizer(kind)
    check_same_tokenizer(meta, tokenizer, f"{Path(data_dir) / 'meta.json'}", "the tokenizer found")
    return tokenizer


def _describe(info: Tokenizer | Mapping[str, Any] | str) -> dict:
    if isinstance(info, str):
        return {"name": info}
    if isinstance(info, Mapping):
        return dict(info)
    return info.to_meta()


def check_same_tokenizer(
    expected: Tokenizer | Mapping[str, Any] | str,
    actual: Tokenizer | Mapping[str, Any] | str,
    expected_what: str,
    actual_what: str,
) -> None:
    """Raise ``TokenizerMismatchError`` (one line) unless name, vocab_size and fingerprint agree.

    Each side is a tokenizer, its ``to_meta()`` dict, or a bare name (e.g. ``ModelConfig.tokenizer``); a field
    missing on either side is not compared.
    """
    first, second = _describe(expected), _describe(actual)
    for key in ("name", "vocab_size", "fingerprint"):
        if key in first and key in second and first[key] != second[key]:
            raise TokenizerMismatchError(
                f"tokenizer mismatch: {expected_what} uses {_show(first)} but {actual_what} uses {_show(second)}"
            )


def _show(info: Mapping[str, Any]) -> str:
    """``"gpt2, 50257 tokens, fingerprint 1a2b3c4d5e6f"`` from whichever fields ``info`` has."""
    parts = [str(info.get("name", "?"))]
    if "vocab_size" in info:
        parts.append(f"{info['vocab_size']} tokens")
    if "fingerprint" in info:
        parts.append(f"fingerprint {str(info['fingerprint'])[:12]}")
    return ", ".join(parts)


def parse_infill(template: str, tokenizer: Tokenizer) -> list[int | None]:
    """Text with ``[blank:N]`` placeholders -> ids, with N ``None`` entries (positions to fill) per blank.

    Pieces between blanks are encoded separately (char: normalised keeping their edge spaces, so positions are
    kept; subword: a space belongs to the next word, so write ``"the cat[blank:2] on"``, not ``"cat [blank:2]"``).
    """
    result: list[int | None] = []
    start = 0
    for match in _BLANK_RE.finditer(template):
        count = match.group(1)
        if not count.isdigit() or int(count) == 0:
            raise DataError(f"--infill: {match.group(0)!r} needs a positive number of tokens, e.g. [blank:5]")
        result.extend(int(i) for i in tokenizer.encode(template[start:match.start()]))
        result.extend([None] * int(count))
        start = match.end()
    result.extend(int(i) for i in tokenizer.encode(template[start:]))
    if "[blank" in template[start:] or not any(item is None for item in result):
        raise DataError(f"--infill {template!r}: no [blank:N] placeholder (N = tokens to fill)")
    return result
