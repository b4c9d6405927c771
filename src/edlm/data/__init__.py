"""Text data: the char alphabet, tokenizers (char, gpt2, bpe:N), corpus preparation and prepared splits.

Modules: ``vocabulary`` (27-symbol alphabet), ``tokenizers`` (a package: one module per family, prompts, infill
and decoding of samples included), ``sources`` (corpus readers), ``prepare``
(``prepare_corpus``), ``splits`` (``load_meta``, ``load_split``, ``eval_chunks``, ``chars_per_token``).
"""

from edlm.data.errors import DataError
from edlm.data.prepare import DEFAULT_SPLIT, prepare_corpus, split_sizes
from edlm.data.sources import CORPORA
from edlm.data.splits import (
    FORMAT_VERSION,
    SPLITS,
    chars_per_token,
    eval_chunks,
    load_meta,
    load_split,
    load_tokenizer,
)
from edlm.data.tokenizers import (
    TOKENIZER_HELP,
    BpeTokenizer,
    CharTokenizer,
    Gpt2Tokenizer,
    Tokenizer,
    TokenizerMismatchError,
    build_template,
    check_same_tokenizer,
    decode_sample,
    get_tokenizer,
    parse_infill,
    parse_tokenizer_name,
    train_bpe,
)
from edlm.data.vocabulary import (
    ALPHABET,
    MASK_CHAR,
    MASK_ID,
    NORMALISATION,
    VOCAB_SIZE,
    decode,
    encode,
    normalise,
    normalise_piece,
)

__all__ = [
    "ALPHABET",
    "CORPORA",
    "DEFAULT_SPLIT",
    "FORMAT_VERSION",
    "MASK_CHAR",
    "MASK_ID",
    "NORMALISATION",
    "SPLITS",
    "TOKENIZER_HELP",
    "VOCAB_SIZE",
    "build_template",
    "decode_sample",
    "BpeTokenizer",
    "CharTokenizer",
    "DataError",
    "Gpt2Tokenizer",
    "Tokenizer",
    "TokenizerMismatchError",
    "chars_per_token",
    "check_same_tokenizer",
    "decode",
    "encode",
    "eval_chunks",
    "get_tokenizer",
    "load_meta",
    "load_split",
    "load_tokenizer",
    "normalise",
    "normalise_piece",
    "parse_infill",
    "parse_tokenizer_name",
    "prepare_corpus",
    "split_sizes",
    "train_bpe",
]
