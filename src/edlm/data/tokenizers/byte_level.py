"""What the byte-level subword tokenizers (``gpt2``, ``bpe:N``) share: decoding, samples, prompts and infill.

Decoding. A row is decoded whole: the bytes of the tokens between two markers (an end-of-text token, written
``<|endoftext|>``, or a mask id, written ``[MASK]``) are joined and decoded as one UTF-8 sequence with the policy
of ``decode_utf8`` (an incomplete character at the end of a segment is dropped, other invalid bytes show as
``\\xNN``), so a character split over several tokens decodes correctly and no U+FFFD reaches the user.

Samples. A sampled row keeps every token. Its end-of-text tokens are document separators: MDLM's OpenWebText rows
are ``[BOS] text [EOS]`` with BOS = EOS = ``<|endoftext|>``, so a row starts with one; ``documents`` splits at
every marker and leaves out empty pieces, so a leading one opens no empty document. ``encode_sample`` maps the
markers back to the EOS id (``encode`` never does: literal '<|endoftext|>' in corpus text is text).

Prompts are encoded as they are; an infill template is text with ``[blank:N]`` placeholders, N tokens to fill
each. Pieces between blanks are encoded separately; a space belongs to the next word, so write
``"the cat[blank:2] on"``, not ``"cat [blank:2]"``.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

from edlm.data.errors import DataError
from edlm.data.tokenizers.base import (
    EOS_TEXT,
    MASK_TEXT,
    as_ids,
    check_id_range,
    decode_utf8,
    split_at_eos,
)

_BLANK_RE = re.compile(r"\[blank:([^\]]*)\]")


class ByteLevelTokenizer:
    """Base of ``Gpt2Tokenizer`` and ``BpeTokenizer``; a subclass gives ``name``, ``vocab_size``, ``mask_id``,
    ``eos_id``, ``encode`` and ``token_bytes_of`` (the bytes of a run of real, non-EOS ids)."""

    name: str
    vocab_size: int
    mask_id: int
    eos_id: int | None

    def token_bytes_of(self, ids: np.ndarray) -> bytes:
        raise NotImplementedError

    @property
    def length_unit(self) -> str:
        return f"{self.name} tokens"

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def normalise(self, text: str) -> str:
        return text

    def decode(self, ids: np.ndarray | Sequence[int] | torch.Tensor) -> str:
        """(N,) ids -> text: byte runs decoded whole (``decode_utf8``), '<|endoftext|>' for the EOS, '[MASK]'
        for the mask id. ValueError for an id outside [0, mask_id]."""
        ids = as_ids(ids)
        check_id_range(ids, self.mask_id)
        markers = {self.mask_id: MASK_TEXT} if self.eos_id is None else {self.mask_id: MASK_TEXT,
                                                                         self.eos_id: EOS_TEXT}
        pieces, start = [], 0
        for position in np.flatnonzero(np.isin(ids, list(markers))).tolist() + [len(ids)]:
            if position > start:
                pieces.append(decode_utf8(self.token_bytes_of(ids[start:position])))
            if position < len(ids):
                pieces.append(markers[int(ids[position])])
            start = position + 1
        return "".join(pieces)

    def encode_sample(self, text: str) -> np.ndarray:
        """Sample text -> ids, each '<|endoftext|>' marker -> the EOS id (the pieces between encoded apart)."""
        pieces = text.split(EOS_TEXT) if self.eos_id is not None else [text]
        out: list[int] = []
        for index, piece in enumerate(pieces):
            if index:
                out.append(int(self.eos_id))
            out.extend(int(i) for i in self.encode(piece))
        return np.asarray(out, dtype=np.int64)

    def documents(self, text: str) -> list[str]:
        return split_at_eos(text)

    def prompt_ids(self, text: str) -> tuple[list[int], list[str]]:
        return [int(i) for i in self.encode(text)], []

    def infill_ids(self, template: str) -> tuple[list[int | None], list[str]]:
        return parse_infill(template, self), []


def parse_infill(template: str, tokenizer) -> list[int | None]:
    """Text with ``[blank:N]`` placeholders -> ids, with N ``None`` entries (positions to fill) per blank.

    Pieces between blanks are encoded separately (char: normalised keeping their edge spaces, so positions are
    kept; subword: a space belongs to the next word, so write ``"the cat[blank:2] on"``, not ``"cat [blank:2]"``).
    """
    result: list[int | None] = []
    start = 0
    for match in _BLANK_RE.finditer(template):
        count = match.group(1)
        if not count.isdigit() or int(count) == 0:
            raise DataError(f": {match.group(0)!r} needs a positive number of tokens, e.g. [blank:5]", "infill")
        result.extend(int(i) for i in tokenizer.encode(template[start:match.start()]))
        result.extend([None] * int(count))
        start = match.end()
    result.extend(int(i) for i in tokenizer.encode(template[start:]))
    if "[blank" in template[start:] or not any(item is None for item in result):
        raise DataError(f"{template!r}: no [blank:N] placeholder (N = tokens to fill)", "infill")
    return result

