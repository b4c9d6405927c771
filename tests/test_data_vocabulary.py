"""The char vocabulary (``edlm.data.vocabulary``): the 27-symbol alphabet and its [MASK] id, normalisation
(digits spelled out, accents folded, case, whitespace and punctuation), the piecewise normalisation that
streaming uses (edge spaces kept), and the encode/decode round trip with its errors on unnormalised text.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import RAW_TEXT

from edlm.data import (
    ALPHABET,
    MASK_ID,
    VOCAB_SIZE,
    decode,
    encode,
    normalise,
    normalise_piece,
)


# ----------------------------------------------------------------------------------------------------------
# normalisation and vocabulary


def test_vocabulary_constants() -> None:
    assert ALPHABET == "abcdefghijklmnopqrstuvwxyz "
    assert VOCAB_SIZE == 27 and MASK_ID == 27


def test_normalise_uses_only_alphabet() -> None:
    text = normalise(RAW_TEXT + "".join(chr(c) for c in range(0x20, 0x3000, 7)))
    assert set(text) <= set(ALPHABET)
    assert "  " not in text and text == text.strip()


def test_normalise_digits_spelled_out_each_digit() -> None:
    assert normalise("In 1984.") == "in one nine eight four"
    assert normalise("a0b") == "a zero b"
    assert normalise("x²") == "x two"  # NFKD maps superscripts to digits


def test_normalise_accents_folded_and_case() -> None:
    assert normalise("Café RÉSUMÉ naïve Zoë à") == "cafe resume naive zoe a"
    assert normalise("ﬁne") == "fine"  # ligature folded by NFKD
    assert normalise("Straße") == "stra e"  # no ascii decomposition: becomes a space


def test_normalise_whitespace_and_punctuation() -> None:
    assert normalise("  o'er\t\tthe\r\nhills--away!  ") == "o er the hills away"
    assert normalise(" \n\t ") == ""


def test_encode_decode_round_trip() -> None:
    text = normalise(RAW_TEXT)
    ids = encode(text)
    assert ids.dtype == np.uint8 and ids.shape == (len(text),)
    assert int(ids.max()) < VOCAB_SIZE
    assert decode(ids) == text
    assert decode(ids.tolist()) == text
    assert decode(torch.from_numpy(ids.astype(np.int64))) == text
    assert decode([0, 25, 26, MASK_ID]) == "az _"


def test_encode_rejects_unnormalised_text() -> None:
    with pytest.raises(ValueError, match="'A'"):
        encode("abcA")
    with pytest.raises(ValueError, match="'é'"):
        encode("caé")
    with pytest.raises(ValueError, match="28"):
        decode([0, 28])


def test_normalise_piece_keeps_edge_spaces() -> None:
    assert normalise_piece("to be or not ") == "to be or not "
    assert normalise_piece("  Héllo,  World 7") == " hello world seven "
    assert normalise_piece("the cat _ on") == "the cat on"  # '_' is not a letter: one space stands for it
    assert normalise_piece("x").strip() == normalise("x")
