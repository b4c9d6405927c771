"""``sym:V``: the tokenizer of known-law corpora with V symbols other than the 27-letter alphabet (``edlm.law``).

Symbol i is the text ``s<i>`` ("s0", "s1", ..., "s511" for V = 512); a row decodes to its symbols separated by
single spaces, and encoding splits text on whitespace, so decode then encode gives back the ids exactly. There is
no EOS (a law corpus is one run, a sample one document) and ``mask_id == V`` (shown as ``[MASK]``). Prompts are
symbols; an infill template is symbols with ``[blank:N]`` placeholders. Each symbol counts the characters of its
text plus one separator in ``char_counts`` (bits per character mean little here: use the law's metrics).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

from edlm.data.errors import DataError
from edlm.data.tokenizers.base import MASK_TEXT, as_ids, base_meta, check_id_range, sha256_json

SYMBOL_RE = re.compile(r"s(0|[1-9][0-9]*)")


class SymbolTokenizer:
    """V abstract symbols ``s0 .. s<V-1>`` (``sym:V``)."""

    eos_id: int | None = None
    length_unit = "symbols"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = self.mask_id = vocab_size
        self.name = f"sym:{vocab_size}"
        self.fingerprint = sha256_json({"name": "sym", "vocab_size": vocab_size,
                                        "text": "s<id>, separated by single spaces"})

    def normalise(self, text: str) -> str:
        return " ".join(text.split())

    def encode(self, text: str) -> np.ndarray:
        """Whitespace-separated ``s<i>`` -> (N,) int64; DataError naming the first piece that is not a symbol."""
        ids = []
        for position, piece in enumerate(text.split()):
            match = SYMBOL_RE.fullmatch(piece)
            if match is None or int(match.group(1)) >= self.vocab_size:
                raise DataError(f"{self.name}: piece {position} ({piece[:20]!r}) is not a symbol "
                                f"s0..s{self.vocab_size - 1}")
            ids.append(int(match.group(1)))
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
        array = as_ids(ids)
        check_id_range(array, self.mask_id)
        return " ".join(MASK_TEXT if i == self.mask_id else f"s{i}" for i in array.tolist())

    def encode_sample(self, text: str) -> np.ndarray:
        try:
            return self.encode(text)
        except DataError as error:
            raise ValueError(str(error)) from None

    def documents(self, text: str) -> list[str]:
        return [text] if text else []

    def prompt_ids(self, text: str) -> tuple[list[int], list[str]]:
        return [int(i) for i in self.encode(text)], []

    def infill_ids(self, template: str) -> tuple[list[int | None], list[str]]:
        from edlm.data.tokenizers.byte_level import parse_infill

        return parse_infill(template, self), []

    def char_counts(self) -> np.ndarray:
        return np.asarray([len(f"s{i}") + 1 for i in range(self.vocab_size)], dtype=np.int64)

    def to_meta(self) -> dict:
        return base_meta(self)
