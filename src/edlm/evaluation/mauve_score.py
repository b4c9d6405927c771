"""MAUVE between sample texts and reference texts, on features from the judge (docs/method.md §2).

Features: the judge's last hidden state (the input of its output layer / LM head), MEAN-POOLED over the
scored positions of each text, one (H,) float32 vector per text. Mean pooling rather than the last token: a
character-level judge's last position sees one character's worth of new information, and samples here are
short; the MAUVE paper (GPT-2 Large, subword) uses the last token.

Reference texts: consecutive, non-overlapping windows of the test split, each cut to the samples' length,
starting at seeded random offsets.

The score is computed by the ``mauve-text`` package (PCA, k-means quantisation by faiss, divergence
frontier). k-means depends on its seed: every seed used is reported, and several seeds can be averaged.
When ``mauve-text`` (or faiss / scikit-learn) cannot be imported, the result says "unavailable" and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_SEEDS = (0,)
POOLING = "mean over positions of the last hidden state"


def mauve_unavailable_reason() -> str | None:
    """None when MAUVE can be computed, else one line saying why not."""
    try:
        import mauve  # noqa: F401
    except Exception as error:  # ImportError, or a broken faiss/scikit-learn binary
        return f"mauve-text is not importable ({type(error).__name__}: {error}); pip install 'edlm[eval]'"
    return None


def mauve_from_features(p_features: np.ndarray, q_features: np.ndarray, seeds: Sequence[int] = DEFAULT_SEEDS,
                        num_buckets: int | str = "auto", kmeans_num_redo: int = 5,
                        kmeans_max_iter: int = 500) -> dict:
    """MAUVE(P, Q) averaged over k-means ``seeds``; p_features (n, d), q_features (m, d), any float dtype.

    Returns {"mauve": mean, "per_seed": [...], "seeds": [...], "std": ..., "num_buckets": ...}, or
    {"mauve": None, "unavailable": reason} without the package.
    """
    reason = mauve_unavailable_reason()
    if reason is not None:
        return {"mauve": None, "unavailable": reason, "seeds": list(seeds)}
    import mauve

    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    values, buckets = [], None
    for seed in seeds:
        out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=num_buckets, seed=int(seed),
                                  kmeans_num_redo=kmeans_num_redo, kmeans_max_iter=kmeans_max_iter,
                                  verbose=False)
        values.append(float(out.mauve))
        buckets = int(out.num_buckets)
    return {"mauve": float(np.mean(values)), "per_seed": values, "seeds": [int(s) for s in seeds],
            "std": float(np.std(values)), "num_buckets": buckets, "kmeans_num_redo": kmeans_num_redo}


def reference_texts(data_dir: str | Path, num: int, length: int, seed: int = 0, split: str = "test") -> list[str]:
    """``num`` texts of at most ``length`` characters from non-overlapping windows of a prepared ``split``.

    The split is cut into consecutive windows of ``length`` tokens; ``num`` of them are drawn without
    replacement (numpy, ``seed``), decoded with the folder's own tokenizer and cut to ``length`` characters
    (for the character tokenizer a window is exactly ``length`` characters). DataError (edlm.data) if the
    folder or split is missing or holds fewer than ``num`` windows.
    """
    from edlm.data import DataError, load_split, load_tokenizer

    tokens = load_split(data_dir, split)
    tokenizer = load_tokenizer(data_dir)
    count = len(tokens) // length
    if count < num:
        raise DataError(f"--reference {data_dir}: the {split} split holds {count} windows of {length} "
                        f"tokens, fewer than the {num} requested")
    starts = np.sort(np.random.default_rng(seed).choice(count, size=num, replace=False)) * length
    return [tokenizer.decode(np.asarray(tokens[start:start + length]))[:length] for start in starts]


def judge_mauve(judge, texts: Sequence[str], references: Sequence[str], seeds: Sequence[int] = DEFAULT_SEEDS,
                num_buckets: int | str = "auto") -> dict:
    """MAUVE of ``texts`` against ``references`` on the judge's features (``judge.features(texts)``)."""
    reason = mauve_unavailable_reason()
    if reason is not None:
        return {"mauve": None, "unavailable": reason, "seeds": list(seeds)}
    if not hasattr(judge, "features"):
        return {"mauve": None, "unavailable": f"the judge {judge.name} gives no features", "seeds": list(seeds)}
    result = mauve_from_features(judge.features(references), judge.features(texts), seeds, num_buckets)
    return {**result, "features": f"{judge.name}: {POOLING}", "num_references": len(references),
            "num_samples": len(texts)}


def paired_mauve_difference(reference_features: np.ndarray, a_features: np.ndarray, b_features: np.ndarray,
                            seeds: Sequence[int] = DEFAULT_SEEDS, num_resamples: int = 100, seed: int = 0) -> dict:
    """MAUVE(B) - MAUVE(A) against the same references, with a paired 95% bootstrap interval.

    a_features and b_features (n, d) hold sample i of two methods drawn with the same seed; each resample
    takes the same sample indices from both and recomputes both scores (2 x len(seeds) MAUVE runs per
    resample: slow, hence the small default ``num_resamples``). The references are not resampled.
    Returns {"estimate", "ci95", "verdict", "resamples", "seeds"} or {"unavailable": reason}.
    """
    from edlm.stats import paired_statistic_difference, verdict

    reason = mauve_unavailable_reason()
    if reason is not None:
        return {"estimate": None, "unavailable": reason}

    def both(indices: np.ndarray) -> tuple[float, float]:
        return (mauve_from_features(reference_features, a_features[indices], seeds)["mauve"],
                mauve_from_features(reference_features, b_features[indices], seeds)["mauve"])

    interval = paired_statistic_difference(both, len(a_features), False, num_resamples, seed)
    return {**interval.as_dict(), "verdict": verdict(interval, relative=False, unit="MAUVE"),
            "resamples": num_resamples, "seeds": [int(s) for s in seeds]}
