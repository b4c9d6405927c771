"""Generation metrics (``edlm.evaluation.generation`` and ``edlm.evaluation.diversity``) against closed forms:
perplexity and bits per character from judges with known per-token costs, per-token against per-character
figures, entropy, distinct-n, repetition, self-BLEU, per-sample scores with bootstrap intervals, and the errors
on empty inputs.
"""

from __future__ import annotations

import json
import math

import pytest

from edlm.data import ALPHABET
from edlm.evaluation.diversity import repetition_rate, self_bleu
from edlm.evaluation.generation import (
    GenerationEvalError,
    distinct_n,
    generation_metrics,
    report_lines,
    unigram_entropy,
)


class UniformJudge:
    """Every character costs log 27 nats: gen PPL 27, bpc log2 27, whatever the text."""

    name = "uniform"

    def nll(self, texts):
        return [(len(text) * math.log(27), len(text), len(text)) for text in texts]


class TwoCharTokenJudge:
    """Tokens are character pairs, each costing 1 nat: per-token and per-character numbers differ by 2x."""

    name = "pairs"

    def nll(self, texts):
        return [(math.ceil(len(text) / 2) * 1.0, math.ceil(len(text) / 2), len(text)) for text in texts]


# ----------------------------------------------------------------------------------------------------------
# closed forms


def test_uniform_judge_gives_closed_form_perplexity_and_bpc():
    metrics = generation_metrics(["abc", "hello world", "z"], UniformJudge())
    assert metrics["gen_ppl"] == pytest.approx(27.0)
    assert metrics["gen_ppl_mean_per_sample"] == pytest.approx(27.0)
    assert metrics["judge_bpc"] == pytest.approx(math.log2(27))
    assert metrics["nll_spread"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["nll_spread"]["min"] == pytest.approx(math.log(27))
    assert metrics["num_samples"] == 3 and metrics["judge_tokens"] == metrics["characters"] == 15


def test_per_token_and_per_character_numbers_differ_with_tokenisation():
    metrics = generation_metrics(["abcd", "ef"], TwoCharTokenJudge())
    assert metrics["gen_ppl"] == pytest.approx(math.e)  # 1 nat per token
    assert metrics["judge_bpc"] == pytest.approx(0.5 / math.log(2))  # 3 nats over 6 characters


def test_perplexity_pools_tokens_but_mean_per_sample_does_not():
    class Fixed:
        name = "fixed"

        def nll(self, texts):
            return [(1.0, 1, 1), (9.0, 3, 3)]

    metrics = generation_metrics(["a", "bcd"], Fixed())
    assert metrics["gen_ppl"] == pytest.approx(math.exp(10.0 / 4))
    assert metrics["gen_ppl_mean_per_sample"] == pytest.approx((math.exp(1.0) + math.exp(3.0)) / 2)
    assert metrics["nll_spread"]["max"] == pytest.approx(3.0) and metrics["nll_spread"]["mean"] == pytest.approx(2)


def test_entropy_closed_form():
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert unigram_entropy("aab") == pytest.approx(expected)
    assert unigram_entropy("aaaa") == 0.0 and unigram_entropy("") == 0.0
    assert unigram_entropy(ALPHABET) == pytest.approx(math.log(27))
    metrics = generation_metrics(["aab", "abcd", ""], UniformJudge())  # mean over the non-empty samples
    assert metrics["entropy_nats"] == pytest.approx((expected + math.log(4)) / 2)
    assert metrics["entropy_bits"] == pytest.approx(metrics["entropy_nats"] / math.log(2))


def test_distinct_n_closed_form():
    assert distinct_n(["abab"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["abab"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n(["abab"], 3) == 1.0 and distinct_n(["abab"], 4) == 1.0
    assert distinct_n(["ab", "ab"], 2) == pytest.approx(1 / 2)  # pooled over samples
    assert math.isnan(distinct_n(["ab", "ba"], 3))  # no 3-gram: n-grams never cross samples
    metrics = generation_metrics(["the cat the dog"], UniformJudge())
    assert metrics["distinct"]["word_1"] == pytest.approx(3 / 4)
    assert metrics["distinct"]["word_2"] == 1.0
    assert generation_metrics(["ab"], UniformJudge())["distinct"]["char_3"] is None  # JSON null, not NaN


def test_repetition_rate_closed_form():
    assert repetition_rate(["abcdef"], 4) == 0.0  # abcd, bcde, cdef: no repeat
    assert repetition_rate(["aaaaaa"], 4) == pytest.approx(2 / 3)  # aaaa x 3: two repeat the first
    assert repetition_rate(["abcd", "abcd"], 4) == 0.0  # repeats are counted inside a sample, not across
    assert math.isnan(repetition_rate(["abc"], 4))
    words = "the cat sat on the cat sat on".split()  # 5 word 4-grams, 4 distinct
    assert repetition_rate([words], 4) == pytest.approx(1 / 5)


def test_self_bleu_identical_vs_different_samples():
    pytest.importorskip("sacrebleu")
    same = self_bleu(["the cat sat on the mat"] * 4)
    assert same["self_bleu"] == pytest.approx(100.0) and same["self_bleu_samples"] == 4
    different = self_bleu(["the cat sat on the mat", "a dog ran in my park", "every bird flew over hills"])
    assert different["self_bleu"] < 20.0
    assert self_bleu(["only one"])["self_bleu"] is None


def test_metrics_keep_per_sample_scores_and_intervals():
    texts = ["abc", "hello world", "zz"]
    metrics = generation_metrics(texts, UniformJudge(), num_resamples=200)
    assert metrics["per_sample"]["nll"] == pytest.approx([len(t) * math.log(27) for t in texts])
    assert metrics["per_sample"]["tokens"] == [3, 11, 2] and metrics["per_sample"]["characters"] == [3, 11, 2]
    assert metrics["per_sample"]["entropy_bits"][2] == 0.0
    # every sample costs log 27 nats per character: the gen-PPL and bpc intervals collapse to the value
    assert metrics["ci95"]["gen_ppl"] == pytest.approx([27.0, 27.0])
    assert metrics["ci95"]["judge_bpc"] == pytest.approx([math.log2(27)] * 2)
    low, high = metrics["ci95"]["entropy_bits"]
    assert low < metrics["entropy_bits"] < high  # entropies differ between samples
    assert metrics["bootstrap"]["resamples"] == 200
    json.dumps(metrics)  # JSON-able
    lines = report_lines(metrics)
    assert any(line.startswith("gen PPL, native protocol") and "27.000 (95% CI 27.000..27.000)" in line
               for line in lines)


def test_empty_inputs_are_user_errors():
    with pytest.raises(GenerationEvalError, match="no samples"):
        generation_metrics([], UniformJudge())
    with pytest.raises(GenerationEvalError, match="empty"):
        generation_metrics(["", ""], UniformJudge())
