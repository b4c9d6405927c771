"""Known-law languages: token laws whose probabilities are known exactly (docs/method.md §5).

A sampler judged on one of these laws is judged by exact numbers: the true NLL of its samples, the share of
tokens the law forbids, the distance of its n-gram counts to the law's. Laws (``LAWS``, picked by kind):

- ``markov``: sparse Markov chains of order 1 or 2 over V symbols (``markov.py``);
- ``hmm``: a hidden Markov model whose hidden state persists, i.e. long-range dependence (``hmm.py``).

Each law gives exactly, batched, float64 (``base.Law``): the posterior marginals of masked positions given the
visible ones (a perfect MDLM denoiser), log p(x), log p(x_R | x_visible), the entropy rate, the stationary n-gram
law, samples, and the positions it forbids. ``make_law_folder`` writes a law and a corpus drawn from it
(``edlm law make``); ``open_law_run`` gives what ``edlm sample --run law:DIR`` needs.

Ids: with V = 27 symbol i is letter i of "abcdefghijklmnopqrstuvwxyz " (the ``char`` tokenizer); other V use the
``sym:V`` tokenizer (symbol i is the text "s<i>").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edlm.law.base import FALLBACK_EPSILON, Law, LawError
from edlm.law.files import (
    DEFAULT_EPSILON,
    LAW_CLASSES,
    LawFileError,
    load_corpus,
    load_law,
    read_record,
    save_corpus,
    save_law,
)
from edlm.law.hmm import HiddenMarkovLaw, make_hmm
from edlm.law.markov import MarkovLaw, make_markov

LAWS = {"markov": make_markov, "hmm": make_hmm}
DEFAULT_LENGTH = 128
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)


def make_law(kind: str, vocab_size: int, support: int, seed: int, order: int = 1, hidden: int = 4,
             **options) -> Law:
    """Draw a law of ``kind`` (``LAWS``). ``order``: Markov only; ``hidden``: HMM only; ``options``: the kind's
    other settings (Markov: pool, concentration; HMM: stay, moves, shared_mass, concentration)."""
    if kind not in LAWS:
        raise LawError(f"{kind!r}: unknown law (valid: {', '.join(LAWS)})", "kind")
    if kind == "markov":
        return make_markov(order, vocab_size, support, seed, **options)
    if order not in (0, 1):
        raise LawError(f"{order}: an HMM has no Markov order; leave the order out", "order")
    return make_hmm(vocab_size, hidden, support, seed, **options)


def make_law_folder(law: Law, folder: str | Path, length: int = DEFAULT_LENGTH, tokens: int = 0,
                    corpus_seed: int = 0, epsilon: float = DEFAULT_EPSILON) -> dict:
    """Write the law and, if ``tokens`` > 0, a corpus of that many tokens: ONE stationary run of the law cut
    90/5/5 into train/val/test, so every window of ``length`` consecutive tokens of a split is a row from the
    law (rows never straddle two independent draws). Returns the ``law.json`` record."""
    corpus = None
    if tokens:
        if tokens < 3 * length:
            raise LawError(f"{tokens}: need at least 3 * length ({3 * length}) for three splits", "tokens")
        stream = law.stream(tokens, corpus_seed)
        cut_1 = round(tokens * SPLIT_FRACTIONS[0])
        cut_2 = round(tokens * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]))
        splits = {"train": stream[:cut_1], "val": stream[cut_1:cut_2], "test": stream[cut_2:]}
        Path(folder).mkdir(parents=True, exist_ok=True)
        corpus = {"sizes": save_corpus(folder, splits, law.vocab_size), "seed": corpus_seed,
                  "layout": "one stationary run cut into train/val/test"}
    return save_law(law, folder, length, epsilon, corpus)


@dataclass(frozen=True)
class LawRun:
    """What sampling with the exact denoiser (``--run law:DIR``) needs."""

    law: Law
    denoiser: Callable  # x_t (B, L) [, t] -> SUBS log-probs (B, L, V + 1) float64; time_conditioned = False
    vocab_size: int
    mask_id: int  # = vocab_size
    seq_len: int  # the law's row length (law.json ``length``)
    tokenizer: str  # "char" or "sym:V" (edlm.data.get_tokenizer builds it)
    epsilon: float  # the default smoothing of the law's energy


def open_law_run(folder: str | Path, denoiser_epsilon: float = 0.0) -> LawRun:
    """Load the law in ``folder`` and wrap its exact posterior as a denoiser (see ``Law.denoiser``)."""
    record = read_record(folder)
    law = load_law(folder)
    return LawRun(law, law.denoiser(denoiser_epsilon), law.vocab_size, law.vocab_size, int(record["length"]),
                  law.tokenizer_name, float(record.get("epsilon", DEFAULT_EPSILON)))


__all__ = ["DEFAULT_EPSILON", "DEFAULT_LENGTH", "FALLBACK_EPSILON", "LAWS", "LAW_CLASSES", "HiddenMarkovLaw", "Law",
           "LawError", "LawFileError", "LawRun", "MarkovLaw", "load_corpus", "load_law", "make_hmm", "make_law",
           "make_law_folder", "make_markov", "open_law_run", "read_record", "save_law"]
