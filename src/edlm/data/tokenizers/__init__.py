"""Tokenizers: text <-> token ids. The model knows only ids; this package owns everything about text.

Four families, picked by name (``TOKENIZER_HELP``, registry in ``registry.TOKENIZERS``):

- ``char`` (``char.py``): the 27-symbol text8 alphabet (``edlm.data.vocabulary``); text is normalised first.
- ``gpt2`` (``gpt2.py``): the exact GPT-2 byte-level BPE, offline (tiktoken + the ranks file of openai-whisper).
- ``bpe:N`` (``bpe.py``): a byte-level BPE with (at most) N tokens, EOS included, trained on the train split and
  saved as ``tokenizer.json`` in the data folder.
- ``sym:V`` (``symbols.py``): V abstract symbols ``s0 .. s<V-1>`` for known-law corpora (``edlm.law``).

The byte-level families share ``byte_level.py`` (whole-row UTF-8 decoding, documents split at end-of-text,
``[blank:N]`` infill). Every tokenizer has ``vocab_size`` real tokens and ``mask_id == vocab_size``, and owns its
prompts, infill templates and decoding (``Tokenizer`` in ``base.py``; ``templates.py`` turns them into x_T and
sample texts). Its ``fingerprint`` is the sha256 of what defines it (alphabet + normalisation, ranks file +
pattern, or ``tokenizer.json``); two tokenizers with the same name, vocabulary and fingerprint encode identically.
"""

from edlm.data.tokenizers.base import (
    EOS_TEXT,
    MASK_TEXT,
    PromptError,
    Tokenizer,
    TokenizerMismatchError,
    decode_utf8,
)
from edlm.data.tokenizers.bpe import TOKENIZER_FILE, BpeTokenizer, train_bpe
from edlm.data.tokenizers.byte_level import ByteLevelTokenizer, parse_infill
from edlm.data.tokenizers.char import CHAR_META, INFILL_BLANK, CharTokenizer, normalise_prompt
from edlm.data.tokenizers.gpt2 import GPT2_EOS_ID, Gpt2Tokenizer, gpt2_asset_path
from edlm.data.tokenizers.registry import (
    TOKENIZER_HELP,
    TOKENIZERS,
    Family,
    check_same_tokenizer,
    get_tokenizer,
    parse_tokenizer_name,
    tokenizer_from_meta,
)
from edlm.data.tokenizers.templates import build_template, decode_sample

__all__ = [
    "CHAR_META", "EOS_TEXT", "GPT2_EOS_ID", "INFILL_BLANK", "MASK_TEXT", "TOKENIZERS", "TOKENIZER_FILE",
    "TOKENIZER_HELP", "BpeTokenizer", "ByteLevelTokenizer", "CharTokenizer", "Family", "Gpt2Tokenizer",
    "PromptError", "Tokenizer", "TokenizerMismatchError", "build_template", "check_same_tokenizer", "decode_sample",
    "decode_utf8", "get_tokenizer", "gpt2_asset_path", "normalise_prompt", "parse_infill", "parse_tokenizer_name",
    "tokenizer_from_meta", "train_bpe",
]
