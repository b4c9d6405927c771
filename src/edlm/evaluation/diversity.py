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


def _sentence_bleus(texts: Sequence[str]) -> list[float] | str:
    """Each text's sentence BLEU against all the others (sacrebleu), or why it cannot be computed."""
    try:
        from sacrebleu.metrics import BLEU
    except ImportError as error:
        return f"sacrebleu not importable ({error}); pip install 'edlm[eval]'"
    bleu = BLEU(effective_order=True)
    return [bleu.sentence_score(text, list(texts[:i]) + list(texts[i + 1:])).score for i, text in enumerate(texts)]


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
    scores = _sentence_bleus(texts)
    if isinstance(scores, str):
        return {"self_bleu": None, "self_bleu_samples": len(texts), "self_bleu_unavailable": scores}
    return {"self_bleu": float(np.mean(scores)), "self_bleu_samples": len(texts), "self_bleu_per_sample": scores}


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


def _gram_ids(sequences: Sequence[Sequence], n: int) -> list[np.ndarray]:
    """Each sequence's n-grams as int64 ids (one id per distinct n-gram of the whole set), (count,) per sequence."""
    table: dict[tuple, int] = {}
    return [np.array([table.setdefault(tuple(seq[i:i + n]), len(table)) for i in range(len(seq) - n + 1)],
                     dtype=np.int64) for seq in sequences]


def diversity_intervals(texts: Sequence[str], num_resamples: int = 100, seed: int = 0,
                        self_bleu_scores: Sequence[float] | None = None) -> tuple[dict, dict]:
    """95% intervals of distinct-n and self-BLEU -> ({name: Interval}, {name: how it was computed}).

    distinct-n pools n-grams over samples, so a sample drawn twice would repeat all its n-grams: it is
    half-sampled (``stats.half_sample_interval``, no sample twice). Self-BLEU is the mean of each sample's BLEU
    against all the others: its interval is a bootstrap of that mean over samples, the references held fixed
    (``self_bleu_scores``: the per-sample BLEUs when already computed). Names: ``distinct_char_1``..``_4``,
    ``distinct_word_1``..``_3``, ``self_bleu``; an order with no n-gram, or fewer than 4 samples, has none.
    """
    from edlm.stats import bootstrap_indices, half_sample_interval, percentile_interval

    intervals, methods = {}, {}
    if len(texts) >= 4 and num_resamples:
        words = [text.split() for text in texts]
        for kind, sequences, orders in (("char", texts, range(1, 5)), ("word", words, range(1, 4))):
            for n in orders:
                grams = _gram_ids(sequences, n)
                total = sum(len(g) for g in grams)
                if not total:
                    continue
                counts = np.array([len(g) for g in grams], dtype=np.float64)
                present = [np.unique(g) for g in grams]  # which n-grams each sample holds

                def distinct(rows, present=present, counts=counts, size=total):
                    picked = counts[rows].sum()
                    seen = np.bincount(np.concatenate([present[i] for i in rows]), minlength=size) > 0
                    return float(seen.sum()) / picked if picked else float("nan")

                intervals[f"distinct_{kind}_{n}"] = half_sample_interval(distinct, len(texts), num_resamples, seed)
                methods[f"distinct_{kind}_{n}"] = (f"half-sampling without replacement, {num_resamples} "
                                                   f"resamples of {len(texts) // 2}")
    scores = self_bleu_scores
    if scores is not None and len(scores) >= 2:
        values = np.asarray(scores, dtype=np.float64)
        indices = bootstrap_indices(len(values), 2000, seed)
        intervals["self_bleu"] = percentile_interval(float(values.mean()), values[indices].mean(1))
        methods["self_bleu"] = "bootstrap over samples of the per-sample BLEU (references fixed), 2000 resamples"
    return intervals, methods
