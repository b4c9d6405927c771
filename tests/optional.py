"""Skip marks for tests that need an optional package: a checkout installed with ``pip install -e '.[dev]'`` has
none of them, and its test run says which package each skipped test needs (``tests/test_optional_packages.py``)."""

from __future__ import annotations

import importlib.util

import pytest


def installed(*modules: str) -> bool:
    """True when every module can be imported (looked up, not imported)."""
    return all(importlib.util.find_spec(module) is not None for module in modules)


HAS_GPT2 = installed("tiktoken", "whisper")
NO_GPT2 = ("the gpt2 tokenizer needs tiktoken and the GPT-2 ranks file of openai-whisper (pip install tiktoken && "
           "pip install --no-deps openai-whisper)")
needs_gpt2 = pytest.mark.skipif(not HAS_GPT2, reason=NO_GPT2)
needs_bpe = pytest.mark.skipif(not installed("tokenizers"), reason="bpe:N tokenizers need the tokenizers package "
                                                                   "(pip install -e '.[text]')")
