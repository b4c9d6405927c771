"""The public Python API (``edlm.api``): each function against the library call it wraps (same numbers, bit for
bit), the exact law denoiser through the usual loop against the law's exact row distribution, errors that name
the argument (and the CLI's flag), and no printing."""

from __future__ import annotations

import json
import math

import pytest
import torch
from toys import save_random_run

from edlm import api
from edlm.cli import main
from edlm.config import LikelihoodConfig
from edlm.law import make_law, make_law_folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Untrained char-tiny MDLM, AR and NCE run folders (random output layers) and a markov law (V = 27, L = 8)."""
    root = tmp_path_factory.mktemp("api")
    law_dir = root / "law"
    make_law_folder(make_law("markov", 27, 3, seed=0), law_dir, length=8)
    return {"root": root, "law": law_dir, **{kind: save_random_run(root / kind, kind, seed=index)
                                             for index, kind in enumerate(("mdlm", "ar", "nce"))}}


def test_load_gives_each_kind_with_its_network_tokenizer_and_denoiser(runs):
    from edlm.checkpoint import load_model
    from edlm.models.denoiser import make_denoiser_fn

    mdlm = api.load(runs["mdlm"], "cpu")
    assert (mdlm.kind, mdlm.tokenizer.name, mdlm.device.type, mdlm.seq_len) == ("mdlm", "char", "cpu", 32)
    config, network = load_model(runs["mdlm"])
    x_t = torch.full((2, 32), config.model.mask_id)
    x_t[:, :5] = 3
    expected = make_denoiser_fn(network, config.model.mask_id, "fp32")(x_t)
    assert torch.equal(mdlm.denoiser()(x_t), expected)
    assert api.load(runs["ar"], "cpu").kind == "ar" and api.load(runs["nce"], "cpu").kind == "nce"
    with pytest.raises(api.ApiError, match="not a denoiser"):
        api.load(runs["ar"], "cpu").denoiser()

    law = api.load(f"law:{runs['law']}", "cpu")
    assert (law.kind, law.network, law.seq_len, law.tokenizer.name) == ("law", None, 8, "char")
    assert law.law_folder == runs["law"]
    x_t = torch.full((3, 8), 27)
    x_t[:, 2] = torch.tensor([0, 5, 26])
    assert torch.equal(law.denoiser()(x_t), law.law.posterior_log_probs(x_t, 27))
    with pytest.raises(api.ApiError, match="not a network"):
        law.denoiser(cuda_graphs=True)


def test_sample_is_generate_bit_for_bit_and_shards_are_its_rows(runs):
    from edlm.checkpoint import load_model
    from edlm.sampling.generate import generate

    model = api.load(runs["mdlm"], "cpu")
    config = api.sampler_config("remdm", num=5, batch_size=2, steps=6, seed=3, eta=0.05)
    samples = api.sample(model, config)
    run_config, network = load_model(runs["mdlm"])
    texts, result = generate(network, run_config, config, tokenizer=model.tokenizer)
    assert samples.texts == texts and torch.equal(samples.tokens, result.tokens)
    assert samples.tokens.shape == (5, 32) and samples.tokens.dtype == torch.long
    assert set(samples.costs) == {"nfe", "nfe_per_sequence", "steps_run", "energy_calls", "energy_rows", "seconds"}
    assert samples.costs["nfe"] == result.nfe > 0 and samples.costs["energy_calls"] == 0
    tail = api.sample(model, config, rows=range(4, 5))  # the third batch alone
    assert tail.texts == texts[4:] and torch.equal(tail.tokens, result.tokens[4:])
    assert api.sample(model, num=5, batch_size=2, steps=6, seed=3, sampler="remdm", eta=0.05).texts == texts


def test_an_energy_by_spec_by_object_or_in_the_config_is_the_same_and_zero_is_plain(runs):
    model = api.load(runs["mdlm"], "cpu")
    config = api.sampler_config(num=3, steps=5, window=1.0, seed=1)
    assert api.sample(model, config, energy="zero").texts == api.sample(model, config).texts
    spec = f"law:{runs['law']}"
    by_spec = api.sample(model, config, energy=spec)
    by_object = api.sample(model, config, api.load_energy(spec, model))
    in_config = api.sample(model, api.sampler_config(num=3, steps=5, window=1.0, seed=1, energy=spec))
    assert by_spec.texts == by_object.texts == in_config.texts != api.sample(model, config).texts
    assert by_spec.costs["energy_calls"] == by_object.costs["energy_calls"] > 0
    assert by_spec.config.energy == in_config.config.energy == spec and by_object.config.energy is None
    assert by_spec.record()["settings"]["energy"] == spec


def test_ar_samples_are_generate_ar_bit_for_bit(runs):
    from edlm.checkpoint import load_model
    from edlm.sampling.ar import generate_ar

    model = api.load(runs["ar"], "cpu")
    samples = api.sample(model, num=3, steps=4, seed=2, prompt="the ", length=12)
    config, network = load_model(runs["ar"])
    texts, stats = generate_ar(network, config, 3, 12, 2, prompt="the ", tokenizer=model.tokenizer)
    assert samples.texts == texts and samples.tokens.tolist() == stats["token_ids"]
    assert samples.costs["nfe"] == stats["nfe"] and samples.costs["steps_run"] == 12 - 4
    assert samples.details == {"prompt": "the ", "cached": True}



def test_ar_sampling_runs_the_network_at_the_requested_precision(runs, monkeypatch):
    """``precision`` reaches the AR model's autocast (it was dropped: AR samples always ran in fp32)."""
    import edlm.sampling.ar as ar

    seen, real = [], ar.autocast_for
    monkeypatch.setattr(ar, "autocast_for", lambda device, precision: seen.append(precision) or real(device, precision))
    api.sample(api.load(runs["ar"], "cpu"), num=2, length=8, seed=1, precision="bf16")
    assert seen and set(seen) == {"bf16"}

def test_the_exact_law_denoiser_one_token_per_step_samples_the_law(tmp_path):
    """First-hitting reveals one position per step, so the law's exact posterior gives exact rows: the chi-square
    of 6000 rows of L = 3 against the row law stays below df + 6 sqrt(2 df); one step that reveals every position
    at once (a product of marginals) fails the same bound."""
    law = make_law("markov", 3, 2, seed=1)
    make_law_folder(law, tmp_path, length=3)
    model = api.load(f"law:{tmp_path}", "cpu")
    assert model.tokenizer.name == "sym:3"
    probs = law.ngram_probs(3).reshape(-1)  # a stationary chain: the row law of L = 3

    def chi_square(samples) -> tuple[float, float]:
        counts = torch.bincount((samples.tokens * torch.tensor([9, 3, 1])).sum(-1), minlength=27).double()
        keep = probs > 0
        expected = probs[keep] * counts.sum()
        df = int(keep.sum()) - 1
        statistic = float(((counts[keep] - expected) ** 2 / expected).sum()) + (math.inf if counts[~keep].sum()
                                                                                 else 0.0)
        return statistic, df + 6 * math.sqrt(2 * df)

    exact = api.sample(model, sampler="first-hitting", num=6000, batch_size=2000, seed=0)
    statistic, bound = chi_square(exact)
    assert statistic < bound
    assert exact.texts[0] == model.tokenizer.decode(exact.tokens[0].tolist())
    one_step = api.sample(model, sampler="ancestral", steps=1, num=6000, batch_size=2000, seed=0)
    assert chi_square(one_step)[0] > bound


def test_score_with_a_law_is_law_metrics_of_the_tokens_and_a_judge_matches_the_file_route(runs, tmp_path):
    from edlm.evaluation.generation import evaluate_samples_file, make_judge
    from edlm.evaluation.law_metrics import law_metrics

    law_model = api.load(f"law:{runs['law']}", "cpu")
    samples = api.sample(law_model, num=6, steps=4, seed=0)
    scores = api.score(samples, law=law_model, bootstrap=200)
    expected = law_metrics(list(samples.tokens), law_model.law, 200, 0)
    assert scores["law_nll_per_token_smoothed"] == expected["law_nll_per_token_smoothed"]
    assert scores["num_samples"] == 6 and scores["law"]["kind"] == "markov"
    assert api.score(samples, law=f"law:{runs['law']}", bootstrap=200) == scores

    model = api.load(runs["mdlm"], "cpu")
    samples = api.sample(model, num=4, steps=4, seed=0)
    path = tmp_path / "samples.json"
    path.write_text(json.dumps(samples.record()))
    judge = f"run:{runs['ar']}"
    in_memory = api.score(samples, judge=judge, bootstrap=200, device="cpu")
    from_file = evaluate_samples_file(path, make_judge(judge), judge, num_resamples=200)
    assert in_memory == {k: v for k, v in from_file.items() if k != "samples_file"}
    assert api.score(path, judge=judge, bootstrap=200, device="cpu") == from_file
    pairs = api.load_judge(judge, "cpu", batch_size=2)  # blocks of whole judge batches score as one call
    halves = [api.judge_scores(samples, pairs, rows=rows) for rows in (range(2), range(2, 4))]
    assert halves[0] + halves[1] == api.judge_scores(samples, pairs)
    assert api.score(samples, pairs, scores=halves[0] + halves[1], bootstrap=200) == api.score(samples, pairs,
                                                                                                 bootstrap=200)


def test_likelihood_is_the_report_and_blocks_join_into_it(runs, tiny_data):
    from edlm.checkpoint import load_model
    from edlm.data import eval_chunks, load_split
    from edlm.likelihood.report import likelihood_report

    model = api.load(runs["mdlm"], "cpu")
    settings = LikelihoodConfig(max_sequences=5, batch_size=2, t_samples=2)
    report = api.likelihood(model, tiny_data, settings)
    config, network = load_model(runs["mdlm"])
    chunks = eval_chunks(load_split(tiny_data, "test"), 32)
    expected = likelihood_report(settings, config, network, chunks)
    assert report == dict(expected, run=str(runs["mdlm"]))
    assert report["kind"] == "mdlm_nelbo_upper_bound" and report["sequences"] == 5
    job = api.prepare_likelihood(model, tiny_data, max_sequences=5, batch_size=2, t_samples=2)
    assert job.report([job.per_sequence(range(0, 4)), job.per_sequence(range(4, 5))]) == report
    with_energy = api.likelihood(model, tiny_data, max_sequences=2, batch_size=2, steps=4, inner=2, is_samples=2,
                                 energy=f"ar:{runs['ar']}")
    assert with_energy["kind"] == "edlm_likelihood" and "ar_nll" in with_energy["estimators"]


def test_errors_name_the_argument_and_the_cli_names_the_flag(runs, tmp_path, capsys):
    model = api.load(runs["mdlm"], "cpu")
    with pytest.raises(api.ApiError) as caught:
        api.sample(model, length=64)
    assert caught.value.subject == "length" and str(caught.value).startswith("length 64: longer than")
    with pytest.raises(api.ApiError, match="energies and infill need a diffusion model"):
        api.sample(api.load(runs["ar"], "cpu"), energy="zero")
    with pytest.raises(api.ApiError, match="cannot sample from an 'nce' model"):
        api.sample(api.load(runs["nce"], "cpu"))
    with pytest.raises(api.ApiError, match="not both"):
        api.sample(model, api.sampler_config(), steps=3)
    with pytest.raises(api.ApiError, match="judge"):
        api.score(tmp_path / "none.json")
    with pytest.raises(api.ApiError, match="likelihood is exact"):
        api.likelihood(api.load(f"law:{runs['law']}", "cpu"), tmp_path)
    with pytest.raises(api.ApiError) as caught:
        api.load(f"law:{tmp_path / 'nowhere'}")
    assert caught.value.subject == "run" and "no such law folder" in str(caught.value)
    assert main(["sample", "--run", f"law:{tmp_path / 'nowhere'}"]) == 2
    assert f"edlm: error: --run law:{tmp_path / 'nowhere'}: " in capsys.readouterr().err


def test_the_api_prints_nothing(runs, tiny_data, capsys):
    model = api.load(runs["mdlm"], "cpu")
    samples = api.sample(model, num=2, steps=3, prompt="Héllo")
    assert samples.notes and "normalised" in samples.notes[0]  # a note is returned, not printed
    api.score(samples, judge=f"run:{runs['ar']}", bootstrap=50, device="cpu")
    api.likelihood(model, tiny_data, max_sequences=2, batch_size=2, t_samples=1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_the_cli_samples_a_law_with_its_exact_denoiser_and_a_law_energy(runs, tmp_path, capsys):
    """``edlm sample --run law:DIR`` is ``api.sample`` of the law (the same texts), with ``--energy law:DIR``
    too; ``eval-gen --law`` reads the token ids it wrote."""
    out = tmp_path / "law-samples.json"
    args = ["sample", "--run", f"law:{runs['law']}", "--num", "3", "--steps", "4", "--seed", "5", "--device", "cpu"]
    assert main(args + ["--out", str(out)]) == 0
    record = json.loads(out.read_text())
    samples = api.sample(api.load(f"law:{runs['law']}", "cpu"), num=3, steps=4, seed=5)
    assert record["samples"] == samples.texts and record["token_ids"] == samples.tokens.tolist()
    assert record["model"] == "law" and record["run"] == f"law:{runs['law']}" and record["length"] == 8
    assert main(args + ["--energy", f"law:{runs['law']}", "--energy-mode", "full", "--is-target",
                        "reveal-exact", "--window", "1.0", "--json"]) == 0
    with_energy = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert with_energy["energy_calls"] > 0 and len(with_energy["samples"]) == 3
    assert main(["eval-gen", "--samples", str(out), "--law", str(runs["law"]), "--bootstrap", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 3
