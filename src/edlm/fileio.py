"""Small file helpers shared by every layer: checksums, atomic writes, JSON reading with friendly errors."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edlm.errors import EdlmError


class FileFormatError(EdlmError, ValueError):
    """A file that exists but cannot be read as what it should be; the message names the file."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's raw bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unwritable_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (``path`` itself if it exists) when it is not a writable
    folder, else None: a folder that does not exist yet can be created exactly when this returns None."""
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    return None if probe.is_dir() and os.access(probe, os.W_OK) else probe


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write to a temporary file in the same folder, flush + fsync, then ``os.replace`` onto ``path``.

    A crash at any moment leaves either the old file or the complete new one, never a torn file.
    """
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would hide shared files from other users
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically (see ``write_bytes_atomic``)."""
    write_bytes_atomic(Path(path), (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing or malformed file raises ``FileFormatError`` naming it and ``what`` it is."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"{path}: missing ({what})") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path}: is a folder, expected a {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(f"{path}: not valid JSON ({error}); expected a {what}") from None
