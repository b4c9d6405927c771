"""The data layer's error type (its own module so every data module can raise it without an import loop)."""

from __future__ import annotations

from edlm.errors import EdlmError


class DataError(EdlmError, ValueError):
    """A corpus, path, flag, tokenizer or prepared data folder is unusable; the message names the culprit."""
