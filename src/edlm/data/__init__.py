"""Character corpora (shakespeare, text8, files): normalisation, vocabulary, memmap splits and batches."""

from edlm.data.corpus import (
    ALPHABET,
    CORPORA,
    MASK_ID,
    SPLITS,
    VOCAB_SIZE,
    DataError,
    decode,
    encode,
    eval_chunks,
    load_meta,
    load_split,
    normalise,
    prepare_corpus,
    split_sizes,
    train_batch,
)

__all__ = [
    "ALPHABET",
    "CORPORA",
    "MASK_ID",
    "SPLITS",
    "VOCAB_SIZE",
    "DataError",
    "decode",
    "encode",
    "eval_chunks",
    "load_meta",
    "load_split",
    "normalise",
    "prepare_corpus",
    "split_sizes",
    "train_batch",
]
