"""Tokenizers by name: the registry, rebuilding one from its ``meta.json`` description, and the same-tokenizer check.

A name is a family, optionally with a size: ``char``, ``gpt2``, ``bpe:N``, ``sym:V``. ``TOKENIZERS`` maps each family to a
``Family``; adding a tokenizer = a module with its class plus one entry here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from edlm.data.errors import DataError
from edlm.data.tokenizers.base import Tokenizer, TokenizerMismatchError


@dataclass(frozen=True)
class Family:
    """One kind of tokenizer.

    ``ready(size)`` builds it from its name alone (None: it is trained per corpus and only ``load`` can rebuild
    it); ``load(meta, data_dir, size)`` rebuilds it from a ``to_meta()`` dict and the folder that holds its files.
    ``size`` is the N of ``name:N`` for a family with ``sizes`` (the allowed range), else None.
    """

    help: str
    load: Callable[[Mapping[str, Any], Path, int | None], Tokenizer]
    ready: Callable[[int | None], Tokenizer] | None = None
    sizes: tuple[int, int] | None = None


def _char(size: int | None = None) -> Tokenizer:
    from edlm.data.tokenizers.char import CharTokenizer

    return CharTokenizer()


def _gpt2(size: int | None = None) -> Tokenizer:
    from edlm.data.tokenizers.gpt2 import Gpt2Tokenizer

    return Gpt2Tokenizer()


def _symbols(size: int | None) -> Tokenizer:
    from edlm.data.tokenizers.symbols import SymbolTokenizer

    return SymbolTokenizer(int(size or 0))


def _load_bpe(meta: Mapping[str, Any], data_dir: Path, size: int | None) -> Tokenizer:
    from edlm.data.tokenizers.bpe import TOKENIZER_FILE, BpeTokenizer

    path = Path(data_dir) / str(meta.get("file", TOKENIZER_FILE))
    try:
        return BpeTokenizer(int(size or 0), path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error}); run `edlm data prepare` again") from None
    except Exception as error:  # the tokenizers library raises its own exception type for a malformed file
        raise DataError(f"{path}: not a tokenizers JSON file ({error}); run `edlm data prepare` again") from None


TOKENIZERS: dict[str, Family] = {
    "char": Family("char (27 symbols, text8-style)", lambda meta, folder, size: _char(), ready=_char),
    "gpt2": Family("gpt2 (GPT-2 BPE, 50257 tokens)", lambda meta, folder, size: _gpt2(), ready=_gpt2),
    "bpe": Family("bpe:N (byte-level BPE, N tokens)", _load_bpe, sizes=(258, 1 << 20)),  # 256 bytes + EOS + 1 merge
    "sym": Family("sym:V (V abstract symbols s0..s<V-1>, known-law corpora)",
                  lambda meta, folder, size: _symbols(size), ready=_symbols, sizes=(2, 1 << 20)),
}
TOKENIZER_HELP = ", ".join(family.help for family in TOKENIZERS.values())


def parse_tokenizer_name(name: str) -> tuple[str, int | None]:
    """``"char"`` / ``"gpt2"`` / ``"bpe:N"`` -> (family, N); DataError (subject ``tokenizer``) otherwise."""
    family, _, size = str(name).partition(":")
    entry = TOKENIZERS.get(family)
    if entry is not None and entry.sizes is None and ":" not in str(name):
        return family, None
    if entry is not None and entry.sizes is not None and re.fullmatch(r"\d+", size):
        low, high = entry.sizes
        if low <= int(size) <= high:
            return family, int(size)
    ranges = "; ".join(f"{key}:N with {f.sizes[0]} <= N <= {f.sizes[1]}" for key, f in TOKENIZERS.items()
                       if f.sizes is not None)
    raise DataError(f"{name!r}: unknown; choose {TOKENIZER_HELP} ({ranges})", "tokenizer")


def get_tokenizer(name: str) -> Tokenizer:
    """A ready tokenizer by name (``char`` or ``gpt2``); ``bpe:N`` must be trained (``train_bpe``) or loaded."""
    family, size = parse_tokenizer_name(name)
    ready = TOKENIZERS[family].ready
    if ready is None:
        raise DataError(f"tokenizer {name!r} is trained per corpus; load it from its data folder (load_tokenizer)")
    return ready(size)


def tokenizer_from_meta(meta: Mapping[str, Any], data_dir: str | Path) -> Tokenizer:
    """Rebuild the tokenizer that ``meta`` (a ``to_meta()`` dict) describes; checks the fingerprint."""
    family, size = parse_tokenizer_name(str(meta.get("name")))
    tokenizer = TOKENIZERS[family].load(meta, Path(data_dir), size)
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
