"""Sampling's view of a tokenizer: the start template x_T from a prompt / infill, and the text of a sampled row."""

from __future__ import annotations

import torch

from edlm.data.tokenizers.base import PromptError, Tokenizer


def _default(tokenizer: Tokenizer | None) -> Tokenizer:
    from edlm.data.tokenizers.char import CharTokenizer

    return CharTokenizer() if tokenizer is None else tokenizer


def build_template(num: int, length: int, prompt: str | None = None, infill: str | None = None,
                   tokenizer: Tokenizer | None = None, mask_id: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """x_T (num, length) int64: ``mask_id`` (default: the tokenizer's) everywhere except the prompt / infill
    tokens, which stay fixed; plus notes for the user (e.g. how the char tokenizer normalised the text).

    ``prompt`` is a prefix; ``infill`` a template whose blanks are the positions to fill (char: ``_`` per
    character; subword: ``[blank:N]``); positions after the template are blanks too. ``tokenizer`` (default: the
    char alphabet) encodes both (``prompt_ids``, ``infill_ids``). PromptError when one does not fit ``length``.
    """
    tokenizer = _default(tokenizer)
    mask_id = tokenizer.mask_id if mask_id is None else mask_id
    template = torch.full((length,), mask_id, dtype=torch.long)
    notes: list[str] = []
    for subject, text, encode in (("prompt", prompt, tokenizer.prompt_ids), ("infill", infill, tokenizer.infill_ids)):
        if not text:
            continue
        ids, said = encode(text)
        notes += said
        if len(ids) > length:
            raise PromptError(f"is {len(ids)} {tokenizer.length_unit}, longer than the sequence length {length}",
                              subject)
        for index, token in enumerate(ids):
            if token is not None:
                template[index] = token
    return template.unsqueeze(0).repeat(num, 1), notes


def decode_sample(row: torch.Tensor, tokenizer: Tokenizer | None = None, keep_eos: bool = False) -> str:
    """A sampled row (L,) -> its text, the whole row (``tokenizer.decode``; default: the char alphabet).

    Nothing is cut: a subword row's end-of-text tokens show as '<|endoftext|>' and separate its documents
    (``tokenizer.documents``), as in the reference code's decoding. ``keep_eos`` is accepted for older callers
    and changes nothing: rows are always kept whole.
    """
    return _default(tokenizer).decode(row)
