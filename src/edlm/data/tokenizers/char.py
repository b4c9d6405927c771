"""The ``char`` tokenizer: the 27-symbol text8 alphabet (``edlm.data.vocabulary``), its prompts and infill.

Ids: a-z = 0..25, space = 26, mask = 27; no EOS (documents are joined by one space). Prompts and infill pieces
are normalised like the corpus (lowercase, digits spelled out, other characters -> space) piece by piece,
keeping a space at a piece's edge where the user typed whitespace, so text already in the alphabet keeps its
length and positions. An infill template marks each character to fill with ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from edlm.data.tokenizers.base import PromptError, base_meta, sha256_json
from edlm.data.vocabulary import (
    ALPHABET,
    MASK_ID,
    NORMALISATION,
    VOCAB_SIZE,
    decode,
    encode,
    normalise,
    normalise_piece,
)

INFILL_BLANK = "_"


def normalise_prompt(text: str) -> str:
    """Corpus normalisation (``data.normalise``) that keeps a leading / trailing space: a piece that starts or
    ends with whitespace keeps one space there, so "to be or not " stays "to be or not " and the pieces of
    "the cat _ on" keep the blank's neighbours. Unlike ``data.normalise_piece`` (the char tokenizer's ``encode``),
    an edge space is kept only where the user typed whitespace, not where a digit or a punctuation mark at the
    edge folds to one ("hello!" stays "hello")."""
    if not text:
        return ""
    core = normalise(text)
    if not core:
        return " "
    lead = " " if text[0].isspace() else ""
    trail = " " if text[-1].isspace() else ""
    return lead + core + trail


def _note(flag: str, fixed: str, text: str) -> list[str]:
    return [f"{flag}: normalised to {fixed!r} (the model knows only a-z and space)"] if fixed != text else []


def _ids_of(subject: str, positions: list[tuple[int, str]]) -> dict[int, int]:
    ids = {}
    for index, char in positions:
        if char not in ALPHABET:
            raise PromptError(f": character {char!r} at position {index} is not in the vocabulary", subject)
        ids[index] = ALPHABET.index(char)
    return ids


@dataclass(frozen=True)
class CharTokenizer:
    """The 27-symbol alphabet: a-z = 0..25, space = 26, mask = 27; no EOS (documents joined by one space)."""

    name: str = "char"
    length_unit: str = "characters after normalisation"  # what a prompt's length is counted in
    vocab_size: int = VOCAB_SIZE
    mask_id: int = MASK_ID
    eos_id: int | None = None
    fingerprint: str = sha256_json({"name": "char", "alphabet": ALPHABET, "normalisation": NORMALISATION})

    def normalise(self, text: str) -> str:
        return normalise_piece(text)

    def encode(self, text: str) -> np.ndarray:
        """Normalise (keeping edge spaces, see ``normalise_piece``), then (N,) int64 ids."""
        return encode(normalise_piece(text)).astype(np.int64)

    def decode(self, ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
        return decode(ids)

    def encode_sample(self, text: str) -> np.ndarray:
        """Sample text, taken as it is (no normalisation): ValueError naming the first character outside the
        alphabet."""
        for position, char in enumerate(text):
            if char not in ALPHABET:
                raise ValueError(f"character {char!r} at position {position} is not in the 27-symbol alphabet "
                                 f"{ALPHABET!r}")
        return encode(text).astype(np.int64)

    def documents(self, text: str) -> list[str]:
        return [text] if text else []

    def prompt_ids(self, text: str) -> tuple[list[int], list[str]]:
        fixed = normalise_prompt(text)
        ids = _ids_of("prompt", list(enumerate(fixed)))
        return [ids[i] for i in range(len(fixed))], _note("--prompt", fixed, text)

    def infill_ids(self, template: str) -> tuple[list[int | None], list[str]]:
        """``_`` marks each character to fill; the other characters stay at their positions."""
        pieces = [normalise_prompt(part) if part.strip() else " " * len(part)
                  for part in template.split(INFILL_BLANK)]
        fixed = INFILL_BLANK.join(pieces)
        ids = _ids_of("infill", [(i, c) for i, c in enumerate(fixed) if c != INFILL_BLANK])
        return [ids.get(i) for i in range(len(fixed))], _note("--infill", fixed, template)

    def char_counts(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)

    def to_meta(self) -> dict:
        return base_meta(self)


CHAR_META = CharTokenizer().to_meta()
