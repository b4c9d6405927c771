"""A tiny local Hugging Face causal LM for judge tests: GPT-2 over a character-level tokenizer, no hub access."""

from __future__ import annotations

from pathlib import Path

import pytest

from edlm.data import ALPHABET

SPECIAL = "<|endoftext|>"


def save_tiny_char_gpt2(folder: Path, n_positions: int = 16, seed: int = 0) -> Path:
    """Write a randomly initialised 2-layer GPT-2 and its character tokenizer to ``folder`` (save_pretrained).

    Vocabulary: the 27 edlm symbols plus ``<|endoftext|>`` as BOS = EOS = pad (as GPT-2). Each character is
    one token (BPE with no merges and no pre-tokenizer), so judge tokens and characters coincide.
    """
    import torch
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    Tokenizer, models = tokenizers.Tokenizer, tokenizers.models

    vocab = {char: index for index, char in enumerate(ALPHABET)}
    vocab[SPECIAL] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL))
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=SPECIAL,
                                                   eos_token=SPECIAL, unk_token=SPECIAL, pad_token=SPECIAL)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=n_positions, n_embd=32, n_layer=2,
                                     n_head=2, bos_token_id=vocab[SPECIAL], eos_token_id=vocab[SPECIAL])
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config)
    wrapped.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    return Path(folder)
