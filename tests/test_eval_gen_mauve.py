"""MAUVE (``edlm.evaluation.mauve_score``): identical features score one and disjoint ones zero, the paired
difference between two sample sets with its interval (resampled without replacement, never duplicating a
sample), the reason given when MAUVE is unavailable, and the degenerate sampler whose low gen-PPL is exposed by
entropy and MAUVE.
"""

from __future__ import annotations

import numpy as np
import pytest

from edlm.data import ALPHABET
from edlm.evaluation.generation import evaluate_samples
from edlm.evaluation.mauve_score import (
    mauve_from_features,
    paired_mauve_difference,
)


# ----------------------------------------------------------------------------------------------------------
# MAUVE and the degenerate sampler


def test_mauve_on_toy_features_identical_is_one_disjoint_is_zero():
    pytest.importorskip("mauve")
    rng = np.random.default_rng(0)
    p = rng.normal(size=(100, 8))
    same = mauve_from_features(p, p, seeds=(0, 1, 2))
    assert same["mauve"] > 0.99 and same["seeds"] == [0, 1, 2] and len(same["per_seed"]) == 3
    disjoint = mauve_from_features(p, rng.normal(size=(100, 8)) + 50.0, seeds=(0,))
    assert disjoint["mauve"] < 0.05


def test_paired_mauve_difference_identical_is_exactly_zero_and_a_shifted_set_is_worse():
    pytest.importorskip("mauve")
    rng = np.random.default_rng(1)
    reference, a = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    same = paired_mauve_difference(reference, a, a, num_resamples=10)
    assert same["ci95"] == [0.0, 0.0] and same["verdict"].startswith("no significant difference")
    worse = paired_mauve_difference(reference, a, a + 6.0, num_resamples=10)
    assert worse["ci95"][1] < 0 and "lower" in worse["verdict"]


def test_mauve_reports_unavailable_with_the_reason(monkeypatch):
    from edlm.evaluation import mauve_score

    monkeypatch.setattr(mauve_score, "mauve_unavailable_reason", lambda: "mauve-text is not importable (test)")
    result = mauve_from_features(np.zeros((4, 2)), np.zeros((4, 2)))
    assert result["mauve"] is None and "not importable" in result["unavailable"]
    evaluated = evaluate_samples(["abc", "abd"], CharStatsJudge(), references=["abc", "abe"])
    assert evaluated["mauve"]["mauve"] is None and "MAUVE unavailable" in evaluated["warnings"][0]


ENGLISH = ("to be or not to be that is the question whether tis nobler in the mind to suffer the slings and "
           "arrows of outrageous fortune or to take arms against a sea of troubles and by opposing end them ")


class CharStatsJudge:
    """A unigram character judge fitted on English; features = character-bigram histogram of the text."""

    name = "char-unigram"

    def __init__(self):
        counts = np.array([ENGLISH.count(c) + 0.5 for c in ALPHABET])
        self.log_probs = dict(zip(ALPHABET, np.log(counts / counts.sum())))

    def nll(self, texts):
        return [(-sum(self.log_probs[c] for c in text), len(text), len(text)) for text in texts]

    def features(self, texts, **options):
        index = {a + b: i for i, (a, b) in enumerate((a, b) for a in ALPHABET for b in ALPHABET)}
        out = np.zeros((len(texts), len(index)))
        for row, text in enumerate(texts):
            for a, b in zip(text, text[1:]):
                out[row, index[a + b]] += 1
        return out / np.maximum(out.sum(1, keepdims=True), 1)


def test_degenerate_sampler_has_low_gen_ppl_but_is_flagged_by_entropy_and_mauve():
    """Always the most frequent word: a lower gen-PPL than real text, but entropy and MAUVE expose it."""
    pytest.importorskip("mauve")
    rng = np.random.default_rng(0)
    words = ENGLISH.split()
    real = [" ".join(rng.choice(words, 8)) for _ in range(60)]
    references = [" ".join(rng.choice(words, 8)) for _ in range(60)]
    degenerate = ["the " * 8 for _ in range(60)]
    judge = CharStatsJudge()
    good = evaluate_samples(real, judge, references, mauve_seeds=(0, 1, 2), num_resamples=300)
    bad = evaluate_samples(degenerate, judge, references, mauve_seeds=(0, 1, 2), num_resamples=300)
    assert bad["gen_ppl"] < good["gen_ppl"] and bad["ci95"]["gen_ppl"][1] < good["ci95"]["gen_ppl"][0]
    assert bad["entropy_bits"] < 0.7 * good["entropy_bits"]
    assert bad["ci95"]["entropy_bits"][1] < good["ci95"]["entropy_bits"][0]
    assert bad["mauve"]["mauve"] < 0.2 < 0.8 < good["mauve"]["mauve"]
    assert bad["repetition_4"]["word"] > 0.5 and bad["distinct"]["word_1"] < 0.01
    assert bad["self_bleu"] > good["self_bleu"]


def test_paired_mauve_resamples_never_duplicate_a_sample(monkeypatch):
    """Issue 19 item 8: a bootstrap with replacement fed MAUVE duplicated features (biased low)."""
    from edlm.evaluation import mauve_score

    seen = []

    def fake_mauve(p, q, seeds=(25,), num_buckets="auto", **kwargs):
        seen.append((np.asarray(p), np.asarray(q)))
        return {"mauve": float(np.asarray(q).mean())}

    monkeypatch.setattr(mauve_score, "mauve_unavailable_reason", lambda: None)
    monkeypatch.setattr(mauve_score, "mauve_from_features", fake_mauve)
    rng = np.random.default_rng(0)
    reference, a = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    out = mauve_score.paired_mauve_difference(reference, a, a + 1.0, num_resamples=10)
    assert len(seen) == 2 * 11 and out["estimate"] == pytest.approx(1.0)
    for p, q in seen:
        assert len(np.unique(q, axis=0)) == len(q) and len(np.unique(p, axis=0)) == len(p)
    assert "without replacement" in out["resampling"]
