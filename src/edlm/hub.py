"""Hugging Face Hub names wherever edlm takes a local Hugging Face folder (``hf:DIR_OR_NAME``, ``--hf``).

``resolve_hf_folder(source, prefix, error, subject)`` turns what the user wrote into a local folder:

- an existing folder is returned as it is (the Hub is never imported);
- a Hub repo id (``name`` or ``org/name``, optionally ``@revision``) is fetched with
  ``huggingface_hub.snapshot_download`` into the Hugging Face cache, or found there: the standard variables
  ``HF_HOME`` / ``HF_HUB_CACHE`` (where) and ``HF_HUB_OFFLINE=1`` (use the cached copy, never the network)
  apply. Only files matching ``SAFE_PATTERNS`` are fetched: configs, safetensors weights and tokenizer text.
  Pickle-based weights (``*.bin``, ``*.pt``, ``*.ckpt``, ...) and Python code are never downloaded, and the
  callers load nothing but safetensors and run no remote code anyway;
- anything path-like (``./x``, ``/x``, ``~/x``, ``a/b/c``, a trailing separator) that does not exist is
  reported as "no such folder", so a typo'd path is not sent to the Hub as a name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from edlm.errors import EdlmError

# What snapshot_download may fetch: JSON configs, safetensors weights, tokenizer files (merges.txt, vocab.txt,
# sentencepiece *.model, tiktoken *.tiktoken). Never *.bin/*.pt/*.pth/*.ckpt/*.h5/*.msgpack (pickles or other
# frameworks) nor *.py (remote code).
SAFE_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken")

# A Hub repo id: ``name`` or ``org/name`` of letters, digits, '-', '_', '.' (the Hub's own rule, as in
# huggingface_hub.utils.validate_repo_id: at most 96 characters a part, no '--' or '..', not ending in '.git').
_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"(?:{_REPO_PART}/)?{_REPO_PART}")
PREFETCH_HINT = ("on a machine with network run `hf download {name} --include '*.json' --include '*.safetensors' "
                 "--include '*.txt'` (older huggingface_hub: `huggingface-cli download`), then HF_HUB_OFFLINE=1 "
                 "uses the cached copy")


class HubError(EdlmError, ValueError):
    """A Hugging Face source that is neither a local folder nor a fetchable Hub name; names the flag."""


def split_hub_name(source: str) -> tuple[str, str | None] | None:
    """``org/name@revision`` -> (repo id, revision or None); None when ``source`` reads as a path, not a name."""
    separators = {"/"} | {sep for sep in (os.sep, os.altsep) if sep}
    if source.startswith((".", "/", "~")) or source.endswith(tuple(separators)):
        return None
    repo_id, at, revision = source.partition("@")
    if at and not revision:
        return None
    if any(sep in repo_id for sep in separators - {"/"}) or repo_id.count("/") > 1:
        return None
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        return None
    return repo_id, revision or None


def resolve_hf_folder(source: str | Path, prefix: str = "", error: type[EdlmError] = HubError,
                      subject: str | None = None) -> Path:
    """The local folder for ``source``: itself when it is a folder, else the cached snapshot of a Hub repo id.

    Errors name ``prefix`` + the source (``"hf:"`` gives "hf:NAME: ..."); ``error`` is the exception type raised
    (one line; default ``HubError``) with ``subject`` (the argument, e.g. ``judge``: the command line shows
    "--judge hf:NAME: ..."), so each caller keeps its own error type.
    """
    source = str(source)
    label = f"{prefix}{source}"
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # ~user of an unknown user: left as written, reported below as no such folder
        path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise error(f"{label}: not a folder (expected a Hugging Face model folder or a Hub name such as org/name)",
                    subject)
    parsed = split_hub_name(source)
    if parsed is None:
        raise error(f"{label}: no such folder", subject)
    repo_id, revision = parsed
    try:
        import huggingface_hub
    except ImportError:
        raise error(f"{label}: no such folder, and fetching the Hugging Face Hub name {repo_id!r} needs the "
                    f"huggingface_hub package; run `pip install huggingface_hub` (it comes with transformers)",
                    subject) from None
    try:  # the Hub's own progress bars (stderr) show a first download of a large model; a cached copy is quiet
        folder = huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=list(SAFE_PATTERNS))
    except Exception as hub_error:  # any failure to fetch (offline, unknown repo, gated, network) is one line
        text = str(hub_error).strip()
        first = f"{type(hub_error).__name__}: {text.splitlines()[0]}" if text else type(hub_error).__name__
        raise error(f"{label}: no such folder, and {repo_id!r} could not be fetched from the Hugging Face Hub "
                    f"({first}); {PREFETCH_HINT.format(name=repo_id)}", subject) from hub_error
    return Path(folder)
