"""Known laws in the rest of edlm: the sym:V tokenizer, `edlm law make` -> `data prepare --corpus law:DIR` ->
train -> sample -> `eval-gen --law`, the law energy, and the exact generation metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edlm.cli import main
from edlm.data import DataError, get_tokenizer, load_meta, load_split
from edlm.data.tokenizers import TokenizerMismatchError, check_same_tokenizer, tokenizer_from_meta
from edlm.energy import EnergyError, candidate_log_mu, make_energy
from edlm.evaluation.law_metrics import law_metrics
from edlm.law import load_corpus, load_law, make_law, make_law_folder


def test_sym_tokenizer_round_trips_and_is_checked(tmp_path):
    tokenizer = get_tokenizer("sym:40")
    ids = np.array([0, 39, 7, 7, 12])
    assert tokenizer.decode(ids) == "s0 s39 s7 s7 s12"
    assert np.array_equal(tokenizer.encode(tokenizer.decode(ids)), ids)
    assert tokenizer.decode([3, 40]) == "s3 [MASK]" and tokenizer.mask_id == 40 and tokenizer.eos_id is None
    assert tokenizer.char_counts()[[0, 12]].tolist() == [3, 4]
    with pytest.raises(DataError, match="s40"):
        tokenizer.encode("s1 s40")
    rebuilt = tokenizer_from_meta(tokenizer.to_meta(), tmp_path)
    assert rebuilt.to_meta() == tokenizer.to_meta()
    check_same_tokenizer(tokenizer, rebuilt, "a", "b")
    with pytest.raises(TokenizerMismatchError):
        check_same_tokenizer(tokenizer, get_tokenizer("sym:41"), "a", "b")


@pytest.mark.parametrize("vocab, tokenizer", [(27, "char"), (40, "sym:40")])
def test_law_corpus_windows_are_rows_of_the_law(tmp_path, vocab, tokenizer, capsys):
    """`law make` + `data prepare --corpus law:DIR`: the splits are the law's runs, and windows at any offset
    (what training draws) hold no forbidden token, while windows cut across two independent rows would."""
    law_dir, data = tmp_path / "law", tmp_path / "data"
    assert main(["law", "make", "--vocab", str(vocab), "--support", "2", "--order", "2", "--seed", "3",
                 "--length", "16", "--tokens", "20000", "--out", str(law_dir)]) == 0
    assert "entropy rate" in capsys.readouterr().out
    assert main(["data", "prepare", "--corpus", f"law:{law_dir}", "--out", str(data), "--no-progress"]) == 0
    meta = load_meta(data)
    assert meta["tokenizer"]["name"] == tokenizer and meta["law"]["length"] == 16
    law, corpus = load_law(law_dir), load_corpus(law_dir)
    train = np.asarray(load_split(data, "train"), dtype=np.int64)
    assert np.array_equal(train, corpus["train"])
    offsets = np.random.default_rng(0).integers(0, len(train) - 16, 300)
    windows = torch.from_numpy(np.stack([train[o:o + 16] for o in offsets]))
    assert not law.forbidden(windows).any()
    stitched = torch.cat([law.sample(300, 8, torch.Generator().manual_seed(1)),
                          law.sample(300, 8, torch.Generator().manual_seed(2))], 1)
    assert law.forbidden(stitched).any()  # (the check above could fail)
    with pytest.raises(DataError, match="^tokenizer gpt2: a law corpus uses its law's tokenizer"):
        from edlm.data import prepare_corpus

        prepare_corpus(f"law:{law_dir}", tmp_path / "other", tokenizer="gpt2")


def test_law_end_to_end_through_the_cli(tmp_path, capsys):
    """Train a tiny MDLM on a sym:30 law corpus, sample (the record carries token ids), score with --law."""
    law_dir, data, run = tmp_path / "law", tmp_path / "data", tmp_path / "run"
    assert main(["law", "make", "--kind", "hmm", "--vocab", "30", "--hidden", "3", "--support", "4", "--length", "16",
                 "--tokens", "6000", "--out", str(law_dir)]) == 0
    assert main(["data", "prepare", "--corpus", f"law:{law_dir}", "--out", str(data), "--no-progress"]) == 0
    assert main(["train", "--data", str(data), "--preset", "char-tiny", "--out", str(run), "--no-progress",
                 "--max-steps", "2", "model.tokenizer=sym:30", "model.seq_len=16", "model.n_layers=1",
                 "train.batch_size=4", "train.eval_batches=1", "train.precision=fp32"]) == 0
    samples = tmp_path / "samples.json"
    assert main(["sample", "--run", str(run), "--num", "6", "--steps", "4", "--out", str(samples), "--json"]) == 0
    record = json.loads(samples.read_text())
    tokenizer = get_tokenizer("sym:30")
    assert [tokenizer.decode(row) for row in record["token_ids"]] == record["samples"]
    capsys.readouterr()
    assert main(["eval-gen", "--samples", str(samples), "--law", str(law_dir), "--json"]) == 0
    with_tokens = json.loads(capsys.readouterr().out)
    del record["token_ids"]  # the texts re-encoded give the same ids
    samples.write_text(json.dumps(record))
    assert main(["eval-gen", "--samples", str(samples), "--law", str(law_dir), "--json"]) == 0
    from_texts = json.loads(capsys.readouterr().out)
    assert with_tokens == from_texts and from_texts["num_samples"] == 6
    assert set(from_texts["ngram_tv"]) == {"1", "2", "3"} and from_texts["entropy_rate"] > 0
    assert main(["eval-gen", "--samples", str(samples)]) == 2
    assert "--law" in capsys.readouterr().err


def test_law_metrics_against_direct_computation():
    law = make_law("markov", 27, 3, seed=0)
    good = list(law.sample(40, 32, torch.Generator().manual_seed(0)))
    result = law_metrics(good, law, num_resamples=200, seed=0)
    nll = -law.log_prob(torch.stack(good))
    assert math.isclose(result["law_nll_per_token"]["estimate"], nll.sum().item() / (40 * 32), rel_tol=1e-12)
    assert result["forbidden_rate"]["estimate"] == 0 and result["impossible_share"]["estimate"] == 0
    low, high = result["law_nll_per_token"]["ci95"]
    assert low < result["law_nll_per_token"]["estimate"] < high
    counts = torch.bincount(torch.stack(good).reshape(-1), minlength=27).double()
    tv1 = 0.5 * (counts / counts.sum() - law.ngram_probs(1)).abs().sum().item()
    assert math.isclose(result["ngram_tv"]["1"]["estimate"], tv1, rel_tol=1e-9)
    noisy = [torch.randint(0, 27, (32,), generator=torch.Generator().manual_seed(i)) for i in range(40)]
    bad = law_metrics(noisy, law, num_resamples=200, seed=0)
    assert bad["impossible_share"]["estimate"] == 1.0 and bad["law_nll_per_token"]["estimate"] is None
    smoothed = -law.log_prob(torch.stack(noisy), 1e-3).sum().item() / (40 * 32)
    assert math.isclose(bad["law_nll_per_token_smoothed"]["estimate"], smoothed, rel_tol=1e-12)
    expected_rate = law.forbidden(torch.stack(noisy)).double().mean().item()
    assert math.isclose(bad["forbidden_rate"]["estimate"], expected_rate) and expected_rate > 0.5
    assert bad["ngram_tv"]["2"]["ci95"][0] > result["ngram_tv"]["2"]["ci95"][1]


def test_law_energy_is_the_full_ar_energy_of_the_law(tmp_path):
    law = make_law("hmm", 27, 3, seed=1)
    make_law_folder(law, tmp_path, length=12)
    config = type("ModelConfig", (), {"vocab_size": 27, "mask_id": 27})()
    energy = make_energy(f"law:{tmp_path}", config, mode="full", tokenizer=get_tokenizer("char"))
    assert energy.exact_marginals and not energy.constant and energy.epsilon == 1e-3
    generator = torch.Generator().manual_seed(0)
    x_t = law.sample(2, 12, generator)
    x_t[:, ::2] = 27
    fills = law.sample(6, 12, generator).view(2, 3, 12)
    candidates = torch.where(x_t.unsqueeze(1) == 27, fills, x_t.unsqueeze(1))  # (2, 3, 12), visible kept
    log_probs = law.posterior_log_probs(x_t, 27, 0.05)  # a smoothed posterior as the denoiser: mu > 0
    expected = -law.log_prob(candidates.view(6, 12), 1e-3).view(2, 3) + candidate_log_mu(candidates, x_t, log_probs, 27)
    assert torch.allclose(energy(candidates, x_t, log_probs), expected)
    coar = make_energy(f"law:{tmp_path}", config, mode="coar")
    token_lp = law.token_log_probs(candidates.view(6, 12), 1e-3).view(2, 3, 12) * (x_t == 27).unsqueeze(1)
    assert torch.allclose(coar(candidates, x_t, log_probs), -token_lp.sum(-1) + candidate_log_mu(candidates, x_t,
                                                                                                   log_probs, 27))
    x, visible, subset = candidates.view(6, 12), torch.rand(6, 12) < 0.3, torch.zeros(6, 12, dtype=torch.bool)
    subset[:, 1] = ~visible[:, 1]
    assert torch.equal(energy.subset_log_prob(x, visible, subset), law.subset_log_prob(x, visible, subset, 1e-3))
    with pytest.raises(EnergyError, match="^energy law:.* the law has 27 symbols, the denoiser 50") as caught:
        make_energy(f"law:{tmp_path}", type("C", (), {"vocab_size": 50, "mask_id": 50})())
    assert caught.value.subject == "energy"  # the command line names --energy
    with pytest.raises(EnergyError, match="^energy law:.*missing: .*no such law folder"):
        make_energy(f"law:{tmp_path / 'missing'}", config)
