"""MAUVE between sample texts and reference texts, by ReMDM's protocol (docs/method.md §2.1).

ReMDM (kuleshov-group/remdm) calls ``mauve.compute_mauve`` on texts, which featurizes them with GPT-2 Large: each
text is tokenized without a BOS and truncated to ``max_text_length`` tokens (1024 there, the sample length), and
its feature is the last hidden state at the last token. The references are whole rows of the OpenWebText
validation split, decoded like the samples (end-of-text tokens included). edlm does the same with any judge:

- references: ``reference_texts``, whole rows of the reference data folder's ``val`` split, each as many tokens of
  its tokenizer as the samples (``length``), drawn without replacement with a seed, decoded whole;
- features: ``judge.features(texts, pooling="last", max_tokens=length)`` (an edlm AR judge reads its start token
  first, the only input it was trained on);
- score: ``mauve-text`` with its defaults (buckets = samples / 10, 5 k-means redos, 500 iterations, scaling 5),
  averaged over k-means seeds; mauve's default seed is 25 (``DEFAULT_SEEDS``).

Its interval half-samples samples and references (``stats.half_sample_interval``: no feature twice, the bucket
count held at the full set's). faiss's own k-means warnings are kept off the terminal; below ``MIN_SAMPLES``
samples a warning says in edlm's words that MAUVE means little. Without ``mauve-text`` (or faiss /
scikit-learn) the result says "unavailable" and why.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_SEEDS = (25,)  # mauve.compute_mauve's default k-means seed
DEFAULT_MAUVE_RESAMPLES = 50  # half-samples for the interval: one MAUVE (k-means) each
MIN_SAMPLES = 100  # below: fewer than 10 clusters (buckets = samples / 10) to compare the two histograms on
PROTOCOL = ("ReMDM's: whole validation rows of the samples' length as references, texts cut to that many judge "
            "tokens, the judge's last hidden state at the last token, mauve-text defaults, k-means seeds averaged")
FEATURES = "last hidden state at the last token (no BOS; texts cut to max_text_length judge tokens)"


def mauve_unavailable_reason() -> str | None:
    """None when MAUVE can be computed, else one line saying why not."""
    try:
        import mauve  # noqa: F401
    except Exception as error:  # ImportError, or a broken faiss/scikit-learn binary
        return f"mauve-text is not importable ({type(error).__name__}: {error}); pip install 'edlm[eval]'"
    return None


@contextlib.contextmanager
def _quiet_faiss():
    """Keep faiss's C++ warnings ("WARNING clustering N points to K centroids ...") off the terminal: file
    descriptor 2 goes to a temporary file meanwhile; lines that are not faiss clustering warnings are re-emitted."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and "WARNING clustering" not in line and "please provide at least" not in line]
            if kept:
                print("\n".join(kept), file=sys.stderr)


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
    with _quiet_faiss():
        for seed in seeds:
            out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=num_buckets, seed=int(seed),
                                      kmeans_num_redo=kmeans_num_redo, kmeans_max_iter=kmeans_max_iter,
                                      verbose=False)
            values.append(float(out.mauve))
            buckets = int(out.num_buckets)
    return {"mauve": float(np.mean(values)), "per_seed": values, "seeds": [int(s) for s in seeds],
            "std": float(np.std(values)), "num_buckets": buckets, "kmeans_num_redo": kmeans_num_redo}


def reference_texts(data_dir: str | Path, num: int, length: int, seed: int = 0, split: str = "val") -> list[str]:
    """``num`` whole rows of ``length`` tokens of a prepared ``split``, decoded whole by the folder's tokenizer.

    The split is cut into consecutive rows of ``length`` tokens (``data.eval_chunks``, as evaluation cuts it);
    ``num`` of them are drawn without replacement (numpy, ``seed``). DataError (edlm.data) if the folder or split
    is missing or holds fewer than ``num`` rows.
    """
    from edlm.data import DataError, eval_chunks, load_split, load_tokenizer

    tokenizer = load_tokenizer(data_dir)
    try:
        rows = eval_chunks(load_split(data_dir, split), length)
    except DataError as error:
        raise DataError(f"{data_dir}: {error}") from None
    if len(rows) < num:
        raise DataError(f"{data_dir}: the {split} split holds {len(rows)} rows of {length} tokens, fewer than the "
                        f"{num} samples to compare with")
    picked = np.sort(np.random.default_rng(seed).choice(len(rows), size=num, replace=False))
    return [tokenizer.decode(rows[int(i)]) for i in picked]


def _interval(p: np.ndarray, q: np.ndarray, estimate: float, seeds: Sequence[int], buckets: int,
              num_resamples: int, seed: int):
    """Half-sampling interval of MAUVE(P, Q): samples and references each half-sampled (their own streams), the
    bucket count held at the full set's (``stats.centred_interval``)."""
    from edlm.stats import centred_interval, half_sample_indices

    pairs = zip(half_sample_indices(len(p), num_resamples, seed + 1), half_sample_indices(len(q), num_resamples, seed))
    values = np.array([mauve_from_features(p[p_rows], q[q_rows], seeds, buckets)["mauve"] for p_rows, q_rows in pairs])
    return centred_interval(estimate, values)


def judge_mauve(judge, texts: Sequence[str], references: Sequence[str], seeds: Sequence[int] = DEFAULT_SEEDS,
                max_tokens: int | None = None, num_resamples: int = DEFAULT_MAUVE_RESAMPLES, seed: int = 0) -> dict:
    """MAUVE of ``texts`` against ``references`` on the judge's last-token features (module docstring), with a
    95% half-sampling interval (``num_resamples``, 0: none) and ``warnings`` (few samples)."""
    reason = mauve_unavailable_reason()
    if reason is None and not hasattr(judge, "features"):
        reason = f"the judge {judge.name} gives no features"
    if reason is not None:
        return {"mauve": None, "unavailable": reason, "seeds": list(seeds)}
    p = judge.features(references, pooling="last", max_tokens=max_tokens)
    q = judge.features(texts, pooling="last", max_tokens=max_tokens)
    result = mauve_from_features(p, q, seeds)
    result.update(protocol=PROTOCOL, protocol_name="ReMDM's protocol", features=f"{judge.name}: {FEATURES}",
                  max_text_length=max_tokens or getattr(judge, "context", None), num_references=len(references),
                  num_samples=len(texts), warnings=[])
    if min(len(texts), len(references)) < MIN_SAMPLES:
        result["warnings"].append(
            f"MAUVE on {len(texts)} samples and {len(references)} references means little: it quantises the "
            f"features into samples / 10 clusters ({result['num_buckets']} here), too few to tell two text "
            f"distributions apart below {MIN_SAMPLES} samples (ReMDM and the MAUVE authors use 5000)")
    if num_resamples and min(len(texts), len(references)) >= 4:
        interval = _interval(p, q, result["mauve"], seeds, result["num_buckets"], num_resamples, seed)
        result.update(ci95=[interval.low, interval.high],
                      ci95_method=f"half-sampling without replacement of samples and references, {num_resamples} "
                                  f"resamples of half the set, {result['num_buckets']} clusters as the full set")
    return result


def paired_mauve_difference(reference_features: np.ndarray, a_features: np.ndarray, b_features: np.ndarray,
                            seeds: Sequence[int] = DEFAULT_SEEDS, num_resamples: int = DEFAULT_MAUVE_RESAMPLES,
                            seed: int = 0) -> dict:
    """MAUVE(B) - MAUVE(A) against the same references, with a paired 95% half-sampling interval.

    a_features and b_features (n, d) hold sample i of two methods drawn with the same seed; each resample takes the
    same n // 2 distinct sample indices from both (no feature twice: a duplicated feature forms a tight cluster and
    biases MAUVE) and recomputes both scores (2 x len(seeds) MAUVE runs per resample); the references are not
    resampled. Returns {"estimate", "ci95", "verdict", "resamples", "resampling", "seeds"} or {"unavailable": reason}.
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
            "resamples": num_resamples, "seeds": [int(s) for s in seeds],
            "resampling": f"half-sampling without replacement: {len(a_features) // 2} of {len(a_features)} samples "
                          f"per resample, the same indices for both methods"}
