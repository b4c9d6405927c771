"""The ``gpt2`` tokenizer: the exact GPT-2 byte-level BPE, offline.

The ranks file ``gpt2.tiktoken`` shipped by the PyPI package ``openai-whisper`` (found through importlib, never
imported) is read by ``tiktoken``. ``<|endoftext|>`` = 50256 is the EOS, the mask id is 50257, so models have 50258
rows (as MDLM-OWT). ``tiktoken`` is imported when the tokenizer is built.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from edlm.data.errors import DataError
from edlm.data.tokenizers.base import EOS_TEXT, base_meta, sha256_json, utf8_char_count
from edlm.data.tokenizers.byte_level import ByteLevelTokenizer

GPT2_ASSET_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_EOS_ID = 50256
# The pattern of the original GPT-2 release (tiktoken's r50k pattern is a faster equivalent of it).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_GPT2_INSTALL = "pip install tiktoken && pip install --no-deps openai-whisper"


def gpt2_asset_path() -> Path:
    """``whisper/assets/gpt2.tiktoken`` of the installed ``openai-whisper`` (located, not imported)."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"tokenizer 'gpt2' needs the openai-whisper package's ranks file; run `{_GPT2_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "gpt2.tiktoken"
    if not path.is_file():
        raise DataError(f"tokenizer 'gpt2': {path} missing; reinstall: `{_GPT2_INSTALL}`")
    return path


class Gpt2Tokenizer(ByteLevelTokenizer):
    """GPT-2 BPE: 50257 tokens (``<|endoftext|>`` = 50256 is the EOS), mask id 50257."""

    name = "gpt2"
    vocab_size = GPT2_EOS_ID + 1
    mask_id = GPT2_EOS_ID + 1
    eos_id: int | None = GPT2_EOS_ID
    fingerprint = sha256_json({"name": "gpt2", "ranks_sha256": GPT2_ASSET_SHA256, "pattern": GPT2_PATTERN,
                               "special": {EOS_TEXT: GPT2_EOS_ID}})

    def __init__(self) -> None:
        try:
            import tiktoken
        except ImportError:
            raise DataError(f"tokenizer 'gpt2' needs tiktoken; run `{_GPT2_INSTALL}`") from None
        path = gpt2_asset_path()
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != GPT2_ASSET_SHA256:
            raise DataError(f"tokenizer 'gpt2': {path} has the wrong sha256; reinstall: `{_GPT2_INSTALL}`")
        # The format of tiktoken.load.load_tiktoken_bpe, parsed here because that function also copies the file
        # into a cache folder under /tmp.
        ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines())}
        self._encoding = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                           special_tokens={EOS_TEXT: GPT2_EOS_ID}, explicit_n_vocab=self.vocab_size)

    def __reduce__(self):  # rebuilt from the ranks file in worker processes
        return (Gpt2Tokenizer, ())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._encoding.encode_ordinary(text), dtype=np.int64)

    def token_bytes_of(self, ids: np.ndarray) -> bytes:
        return self._encoding.decode_bytes(ids.tolist())

    def token_bytes(self, token_id: int) -> bytes:
        return self._encoding.decode_single_token_bytes(token_id)

    def char_counts(self) -> np.ndarray:
        counts = [utf8_char_count(self.token_bytes(i)) for i in range(GPT2_EOS_ID)]
        return np.asarray(counts + [1], dtype=np.int64)

    def to_meta(self) -> dict:
        return base_meta(self)
