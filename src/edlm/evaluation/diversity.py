"""Diversity and degeneracy of a sample set: entropy, distinct-n, n-gram repetition, self-BLEU.

A sampler that always writes the most frequent word gets a low generative perplexity; these numbers are
what flags it (docs/method.md §2). All functions are pure; sequences are strings (characters) or lists of
words / token ids.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

LN2 = math.log(2.0)


def unigram_entropy(symbols: Sequence) -> float:
    """Entropy in nats of the empirical distribution of ``symbols`` (characters or token ids); 0 if empty."""
    if len(symbols) == 0:
        return 0.0
    counts = np.array(list(Counter(symbols).values()), dtype=np.float64)
    probs = counts / counts.sum()
    return float(-(probs * np.log(probs)).sum())


def distinct_n(sequences: Sequence[Sequence], n: int) -> float:
    """Unique n-grams / total n-grams, pooled over all sequences (n-grams never cross sequences); nan if none."""
    grams = [tuple(seq[i:i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition_rate(sequences: Sequence[Sequence], n: int = 4) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the same sequence, pooled; nan if none.

    1 - (distinct n-grams per sequence, summed) / (n-grams, summed): 0 for no repeat inside any sample,
    close to 1 for a sample that loops.
    """
    total = repeated = 0
    for seq in sequences:
        grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
        total += len(grams)
        repeated += len(grams) - len(set(grams))
    return repeated / total if total else float("nan")


def self_bleu(texts: Sequence[str], max_samples: int = 200) -> dict:
    """Mean sentence BLEU (0-100, sacrebleu, 13a tokenizer, exp smoothing) of each text against all others.

    High self-BLEU = the samples resemble each other (low diversity). The first ``max_samples`` texts are
    used (the cost is quadratic). Returns {"self_bleu": float | None, "self_bleu_samples": int} and, when
    sacrebleu cannot be imported or fewer than 2 non-empty texts exist, "self_bleu_unavailable": the reason.
    """
    texts = [text for text in texts if text.strip()][:max_samples]
    if len(texts) < 2:
        return {"self_bleu": None, "self_bleu_samples": len(texts),
                "self_bleu_unavailable": "fewer than 2 non-empty samples"}
    try:
        from sacrebleu.metrics import BLEU
    except ImportError as error:
        return {"self_bleu": None, "self_bleu_samples": len(texts),
                "self_bleu_unavailable": f"sacrebleu not importable ({error}); pip install 'edlm[eval]'"}
    bleu = BLEU(effective_order=True)
    scores = [bleu.sentence_score(text, texts[:i] + texts[i + 1:]).score for i, text in enumerate(texts)]
    return {"self_bleu": float(np.mean(scores)), "self_bleu_samples": len(texts)}


def mean_entropy(sequences: Sequence[Sequence]) -> tuple[float, float]:
    """Mean per-sample unigram entropy (bits, nats) over the non-empty samples; nan if all are empty."""
    values = [unigram_entropy(seq) for seq in sequences if len(seq) > 0]
    nats = float(np.mean(values)) if values else float("nan")
    return nats / LN2, nats


def diversity_metrics(texts: Sequence[str]) -> dict:
    """Distinct-n (characters 1-4, words 1-3), 4-gram repetition (characters and words), self-BLEU.

    Values are None (JSON null) where a sample set has no n-gram of that order.
    """
    words = [text.split() for text in texts]
    clean = lambda value: None if math.isnan(value) else value  # noqa: E731
    distinct = {f"char_{n}": clean(distinct_n(texts, n)) for n in range(1, 5)}
    distinct.update({f"word_{n}": clean(distinct_n(words, n)) for n in range(1, 4)})
    return {"distinct": distinct,
            "repetition_4": {"char": clean(repetition_rate(texts, 4)), "word": clean(repetition_rate(words, 4))},
            **self_bleu(texts)}
