"""Tokenizing a corpus stream for ``prepare_corpus``: chunks of text -> token ids, in this process or in a pool of
worker processes (a bounded batch at a time, in order), and the tags that cut a subword stream into its splits
at exact character offsets."""

from __future__ import annotations

import multiprocessing
from typing import Iterator, Sequence

import numpy as np

from edlm.data.errors import DataError
from edlm.data.tokenizers import Tokenizer
from edlm.data.vocabulary import encode_bytes, normalise


class ChunkEncoder:
    """text chunk -> (N,) ids: ``char`` normalises, ``text8`` checks verbatim, ``subword`` calls the tokenizer."""

    def __init__(self, tokenizer: Tokenizer, mode: str, where: str) -> None:
        self.tokenizer, self.mode, self.where = tokenizer, mode, where

    def __call__(self, text: str) -> np.ndarray:
        if self.mode == "char":
            return encode_bytes(normalise(text).encode("ascii"), source=self.where)
        if self.mode == "text8":
            try:
                return encode_bytes(text.encode("ascii", errors="replace"), source=self.where)
            except ValueError as error:
                hint = "text8 must already be normalised (use corpus 'files' for raw text)"
                raise DataError(f"{error}; {hint}") from None
        return self.tokenizer.encode(text)


_worker_encoder: ChunkEncoder | None = None


def _init_worker(encoder: ChunkEncoder) -> None:
    global _worker_encoder
    _worker_encoder = encoder


def _encode_in_worker(text: str) -> np.ndarray:
    assert _worker_encoder is not None
    return _worker_encoder(text)


def encoded(texts: Iterator[tuple], encoder: ChunkEncoder, workers: int) -> Iterator[tuple[np.ndarray, tuple]]:
    """``(text, *tags)`` -> ``(ids, tags)`` in order; with workers > 1 a batch of 8 chunks per worker at a time."""
    if workers <= 1:
        for text, *tags in texts:
            yield encoder(text), tuple(tags)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(encoder,)) as pool:
        batch: list[tuple] = []
        for item in texts:
            batch.append(item)
            if len(batch) == 8 * workers:
                yield from zip(pool.map(_encode_in_worker, [b[0] for b in batch]), [tuple(b[1:]) for b in batch])
                batch = []
        if batch:
            yield from zip(pool.map(_encode_in_worker, [b[0] for b in batch]), [tuple(b[1:]) for b in batch])


def split_tagged(chunks: Iterator[tuple[str, bool]], cuts: Sequence[int]) -> Iterator[tuple[str, int, int | None]]:
    """``(text, ends_document)`` -> ``(text, split index, EOS split index or None)``, cutting text at ``cuts``.

    Positions count characters of the text, one more for each document end (its EOS).
    """
    position = 0
    for text, ends_document in chunks:
        while text:
            split = sum(position >= cut for cut in cuts)
            room = cuts[split] - position if split < len(cuts) else len(text)
            piece, text = text[:room], text[room:]
            position += len(piece)
            last = ends_document and not text
            yield piece, split, (sum(position >= cut for cut in cuts) if last else None)
        if ends_document:
            position += 1


def train_texts(chunks: Iterator[tuple[str, bool]], limit: int) -> Iterator[str]:
    """The text of the first ``limit`` characters (EOS counting one) of the chunk stream: the train split."""
    position = 0
    for text, ends_document in chunks:
        if position >= limit:
            return
        yield text[: limit - position]
        position += len(text) + int(ends_document)
