"""Generation metrics: closed forms for perplexity, bpc, entropy, distinct-n, repetition, self-BLEU; intervals;
MAUVE plumbing; the degenerate-sampler check; the run: and hf: judges and their features; the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from toys import save_random_run

from edlm.data import ALPHABET, MASK_ID, encode
from edlm.evaluation.diversity import repetition_rate, self_bleu
from edlm.evaluation.generation import (
    GenerationEvalError,
    distinct_n,
    evaluate_samples,
    generation_metrics,
    make_judge,
    read_samples,
    report_lines,
    unigram_entropy,
)
from edlm.evaluation.mauve_score import (
    mauve_from_features,
    paired_mauve_difference,
)
from edlm.models.ar import ar_loss

SENTENCE = "the quick brown fox jumps over the lazy dog"


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


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory):
    """A saved tiny AR checkpoint (random adaLN/output layers so the judge is not uniform): (run, model, config)."""
    from edlm.checkpoint import load_model

    run = save_random_run(tmp_path_factory.mktemp("judge") / "run", "ar", seed=0)
    config, model = load_model(run)
    return run, model, config


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


def test_empty_inputs_are_user_errors():
    with pytest.raises(GenerationEvalError, match="no samples"):
        generation_metrics([], UniformJudge())
    with pytest.raises(GenerationEvalError, match="empty"):
        generation_metrics(["", ""], UniformJudge())


# ----------------------------------------------------------------------------------------------------------
# the run: judge


def test_run_judge_matches_ar_loss(ar_run):
    run, model, config = ar_run
    seq_len = config.model.seq_len
    judge = make_judge(f"run:{run}", "cpu", batch_size=2)
    text = (SENTENCE + " ") * 2
    window = text[:seq_len]
    [(nll, tokens, chars)] = judge.nll([window])
    with torch.no_grad():
        expected = ar_loss(model, torch.from_numpy(encode(window).astype("int64"))[None], MASK_ID).item() * seq_len
    assert (tokens, chars) == (seq_len, seq_len)
    assert nll == pytest.approx(expected, rel=1e-5)
    # a text longer than seq_len is scored in consecutive windows, each from the start token
    long_text = text[:2 * seq_len + 5]
    pieces = [long_text[i:i + seq_len] for i in range(0, len(long_text), seq_len)]
    with torch.no_grad():
        windowed = sum(ar_loss(model, torch.from_numpy(encode(p).astype("int64"))[None], MASK_ID).item() * len(p)
                       for p in pieces)
    results = judge.nll([long_text, window, "a"])
    assert results[0][0] == pytest.approx(windowed, rel=1e-5) and results[0][1] == len(long_text)
    assert results[1][0] == pytest.approx(expected, rel=1e-5)  # padding in a mixed batch changes nothing
    metrics = generation_metrics([long_text, window], judge)
    assert metrics["judge_bpc"] == pytest.approx((windowed + expected) / (len(long_text) + seq_len) / math.log(2),
                                                 rel=1e-5)


def test_run_judge_features_last_token_and_mean_pooled_and_batch_independent(ar_run):
    from edlm.models.ar import ar_inputs

    run, model, config = ar_run
    seq_len, hidden = config.model.seq_len, config.model.hidden
    judge = make_judge(f"run:{run}", batch_size=2)
    short, long_text = SENTENCE[:10], (SENTENCE + " ") * 2
    for pooling in ("last", "mean"):
        features = judge.features([short, long_text, "", short], pooling=pooling)
        assert features.shape == (4, hidden) and features.dtype == np.float32
        assert np.allclose(features[0], features[3], atol=1e-6) and not np.allclose(features[0], features[1])
        assert (features[2] == 0).all()
        assert np.allclose(judge.features([short], pooling=pooling)[0], features[0], atol=1e-5)  # no batch effect
        # a text is cut to what fits one window behind the start token
        cut = long_text[:seq_len - 1]
        assert np.allclose(judge.features([cut], pooling=pooling)[0], features[1], atol=1e-5)
    captured = []
    hook = model.output_layer.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    with torch.no_grad():  # [start] + the text: the state after reading the text's last character
        model(ar_inputs(torch.from_numpy(encode(short + "x").astype("int64"))[None], MASK_ID))
    hook.remove()
    assert np.allclose(judge.features([short], pooling="last")[0], captured[0][0, -1].numpy(), atol=1e-5)
    assert np.allclose(judge.features([short], pooling="mean")[0], captured[0][0, 1:].mean(0).numpy(), atol=1e-5)


def test_run_judge_rejects_characters_outside_the_alphabet(ar_run):
    judge = make_judge(f"run:{ar_run[0]}")
    with pytest.raises(GenerationEvalError, match="sample 1: character 'X'"):
        judge.nll(["fine", "not Xfine"])


def test_judge_spec_errors(tmp_path):
    with pytest.raises(GenerationEvalError, match="unknown judge kind 'gpt'"):
        make_judge("gpt:somewhere")
    with pytest.raises(GenerationEvalError, match="expected run:DIR"):
        make_judge("just-a-folder")
    with pytest.raises(GenerationEvalError, match="no such folder"):
        make_judge(f"run:{tmp_path / 'missing'}")
    with pytest.raises(GenerationEvalError, match="no such folder"):
        make_judge(f"hf:{tmp_path / 'missing'}")


def test_hf_judge_on_a_folder_without_a_model(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(GenerationEvalError, match="cannot load a causal LM"):
        make_judge(f"hf:{tmp_path}")


# ----------------------------------------------------------------------------------------------------------
# the hf: judge (a tiny local GPT-2 with a character tokenizer)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    from helpers_hf import save_tiny_char_gpt2

    return save_tiny_char_gpt2(tmp_path_factory.mktemp("hf_judge"), n_positions=16)


def manual_hf_nll(folder, text: str, chunk: int) -> float:
    """Closed loop: [BOS] + each chunk of token ids (the model reads all but the chunk's last id), sum of -log p of
    every real token."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    total = 0.0
    for start in range(0, len(ids), chunk):
        fed = torch.tensor([[tokenizer.bos_token_id] + ids[start:start + chunk]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(fed[:, :-1]).logits[0].double(), -1)
        total -= log_probs.gather(-1, fed[0, 1:, None]).sum().item()
    return total


def test_hf_judge_scores_every_token_behind_bos(hf_folder):
    judge = make_judge(f"hf:{hf_folder}", batch_size=3)
    assert judge.max_positions == 16
    short, long_text = "hello world", SENTENCE  # 11 tokens; 43 tokens = windows of 16 + 16 + 11
    results = judge.nll([short, long_text, ""])
    assert results[0][1:] == (11, 11) and results[1][1:] == (43, 43) and results[2] == (0.0, 0, 0)
    assert results[0][0] == pytest.approx(manual_hf_nll(hf_folder, short, 16), rel=1e-5)
    assert results[1][0] == pytest.approx(manual_hf_nll(hf_folder, long_text, 16), rel=1e-5)
    metrics = generation_metrics([short, long_text], judge)
    assert metrics["gen_ppl"] == pytest.approx(math.exp((results[0][0] + results[1][0]) / 54), rel=1e-5)
    # character tokenizer: token entropy == character entropy
    assert metrics["token_entropy_bits"] == pytest.approx(metrics["entropy_bits"])


def test_hf_judge_features_are_the_mean_last_hidden_state_behind_bos(hf_folder):
    import transformers

    judge = make_judge(f"hf:{hf_folder}", batch_size=2)
    features = judge.features(["hello world", "abc", ""], pooling="mean")
    assert features.shape == (3, 32) and (features[2] == 0).all()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_folder), local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_folder), local_files_only=True).eval()
    fed = torch.tensor([[tokenizer.bos_token_id] + tokenizer("abc", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        expected = model(fed, output_hidden_states=True).hidden_states[-1][0, 1:].mean(0).numpy()
    assert np.allclose(features[1], expected, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# the command line


def test_cli_eval_gen_json(ar_run, tmp_path, capsys):
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": [SENTENCE, "aab ab a b"], "run": "somewhere", "model": "mdlm"}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("gen_ppl", "entropy_bits", "entropy_nats", "num_samples", "judge_bpc", "distinct", "nll_spread"):
        assert key in result
    assert result["num_samples"] == 2 and result["sampler_model"] == "mdlm"
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 0
    assert "gen PPL" in capsys.readouterr().out


def test_cli_eval_gen_mauve_against_whole_validation_rows(ar_run, tiny_data, tmp_path, capsys):
    pytest.importorskip("mauve")
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    texts = [SENTENCE[:30], "aab ab a b aab ab a b aab ab a ", "the cat sat on the mat while th", "abc abc abc "]
    samples.write_text(json.dumps({"samples": texts, "length": 31, "tokenizer": "char"}))
    argv = ["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--mauve", "--reference",
            str(tiny_data), "--mauve-seeds", "0,1,2", "--mauve-resamples", "5", "--bootstrap", "100", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["mauve"]["seeds"] == [0, 1, 2] and 0.0 <= result["mauve"]["mauve"] <= 1.0
    assert "last token" in result["mauve"]["features"] and result["mauve"]["num_references"] == 4
    assert result["mauve"]["reference"] == {"data": str(tiny_data), "split": "val", "rows": 4, "row_tokens": 31,
                                            "seed": 0}
    assert {"gen_ppl", "judge_bpc", "entropy_bits", "entropy", "mauve"} <= set(result["ci95"])
    assert "MAUVE on 4 samples" in captured.err
    assert main(argv[:-1]) == 0 and "MAUVE" in capsys.readouterr().out
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--mauve"]) == 2
    assert "--mauve needs --reference" in capsys.readouterr().err
    samples.write_text(json.dumps({"samples": texts}))  # no length: MAUVE's rows cannot be cut
    assert main(argv) == 2 and "--samples" in capsys.readouterr().err


def test_cli_eval_gen_warns_when_the_judge_is_the_energy(ar_run, tmp_path, capsys):
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": [SENTENCE], "settings": {"energy": f"ar:{ar_run[0]}"}}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--json"]) == 0
    assert "is the energy model" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("not json {", "not valid JSON"), ('{"texts": ["a"]}', 'no "samples"'), ('{"samples": []}', "empty"),
    ('{"samples": ["a", 3]}', "samples[1]")])
def test_cli_bad_samples_file_exits_2(ar_run, tmp_path, capsys, content, message):
    from edlm.cli import main

    samples = tmp_path / "bad.json"
    samples.write_text(content)
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 2
    err = capsys.readouterr().err
    assert str(samples) in err and message in err
    with pytest.raises(GenerationEvalError, match="no such file"):
        read_samples(tmp_path / "missing.json")


def test_cli_bad_judge_exits_2(tmp_path, capsys):
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": [SENTENCE]}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", "gpt2:large"]) == 2
    assert "unknown judge kind" in capsys.readouterr().err
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"hf:{tmp_path / 'nowhere'}"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_cli_sample_ar_then_eval_gen(ar_run, tmp_path, capsys):
    """The whole pipeline: `edlm sample` from the AR run (prompted), then `edlm eval-gen` on its output."""
    from edlm.cli import main

    out = tmp_path / "ar_samples.json"
    assert main(["sample", "--run", str(ar_run[0]), "--num", "3", "--length", "20", "--prompt", "The",
                 "--batch-size", "2", "--out", str(out), "--json", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["nfe"] == 2 * 17 and all(len(t) == 20 and t.startswith("the") for t in record["samples"])
    assert main(["eval-gen", "--samples", str(out), "--judge", f"run:{ar_run[0]}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == 3 and result["characters"] == 60 and result["sampler_model"] == "ar"


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


def test_a_char_judge_on_subword_samples_names_the_tokenizer_mismatch(ar_run, tmp_path, capsys):
    """Issue 21 item 10: it said "character '\\n' ... not in the judge's alphabet"."""
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": ["Hello there,\nworld<|endoftext|>"], "tokenizer": "gpt2"}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer mismatch" in err and "gpt2" in err and "char" in err
    samples.write_text(json.dumps({"samples": ["Hello there,\nworld"]}))  # no tokenizer recorded
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 2
    assert "the judge reads only the 27-symbol alphabet" in capsys.readouterr().err
