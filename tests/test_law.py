"""Known laws against brute-force enumeration (tests/law_toys.py): every exact quantity, every kind, with and
without smoothing; sampling against the law; files and seeds."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from edlm.law import Law, LawError, load_law, make_law, make_law_folder
from law_toys import conditional_marginals, entropy, joint, marginal, tiny_laws, window_prob

LAWS = tiny_laws()
LENGTH = 4
EPSILONS = (0.0, 0.05)


@pytest.fixture(scope="module")
def tables():
    return {(name, eps): joint(law, eps, LENGTH) for name, law in LAWS.items() for eps in EPSILONS}


def _all_rows(V: int, L: int = LENGTH) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(V), repeat=L)))


def _masked_rows(law, count: int, seed: int) -> torch.Tensor:
    """Rows of a sample with random positions masked (the all-masked row included)."""
    generator = torch.Generator().manual_seed(seed)
    x = law.sample(count, LENGTH, generator)
    x[torch.rand(x.shape, generator=generator) < 0.5] = law.vocab_size
    x[0] = law.vocab_size
    return x


@pytest.mark.parametrize("name", LAWS)
@pytest.mark.parametrize("eps", EPSILONS)
def test_posterior_marginals_match_enumeration(name, eps, tables):
    law, table = LAWS[name], tables[(name, eps)]
    V = law.vocab_size
    x_t = _masked_rows(law, 12, seed=len(name))
    out = law.posterior_log_probs(x_t, V, eps)
    assert out.shape == (12, LENGTH, V + 1) and out.dtype == torch.float64
    assert torch.isneginf(out[..., V]).all()
    for row, x in zip(out, x_t.tolist()):
        expected = conditional_marginals(table, x, V, V)
        for i, token in enumerate(x):
            if token == V:
                assert torch.allclose(row[i, :V].exp(), expected[i], atol=1e-12)
            else:
                assert row[i, token] == 0 and torch.isneginf(row[i, :V]).sum() == V - 1


@pytest.mark.parametrize("name", LAWS)
@pytest.mark.parametrize("eps", EPSILONS)
def test_log_prob_and_token_log_probs_match_enumeration(name, eps, tables):
    law, table = LAWS[name], tables[(name, eps)]
    rows = _all_rows(law.vocab_size)
    expected = torch.tensor([table[tuple(r)] for r in rows.tolist()], dtype=torch.float64)
    assert math.isclose(expected.sum().item(), 1.0, rel_tol=1e-12)
    assert torch.allclose(law.log_prob(rows, eps).exp(), expected, atol=1e-14)
    # a Markov law's table lookups agree with the generic forward pass they replace (after an impossible token
    # the conditionals are undefined: compare possible rows only)
    generic, fast = Law.token_log_probs(law, rows, eps), law.token_log_probs(rows, eps)
    possible = expected > 0
    assert torch.allclose(fast[possible], generic[possible], rtol=1e-12, atol=0)
    assert torch.isneginf(fast[~possible].sum(-1)).all() and torch.isneginf(generic[~possible].sum(-1)).all()


@pytest.mark.parametrize("name", LAWS)
@pytest.mark.parametrize("eps", EPSILONS)
def test_subset_log_prob_matches_enumeration(name, eps, tables):
    law, table = LAWS[name], tables[(name, eps)]
    generator = torch.Generator().manual_seed(7)
    x = law.sample(40, LENGTH, generator)
    x[:5] = _all_rows(law.vocab_size)[torch.randint(0, law.vocab_size ** LENGTH, (5,), generator=generator)]
    choice = torch.randint(0, 3, x.shape, generator=generator)  # 0 hidden, 1 visible, 2 subset
    choice[0] = 2  # the whole row as the subset: log p(x)
    visible, subset = choice == 1, choice == 2
    got = law.subset_log_prob(x, visible, subset, eps)
    for index in range(len(x)):
        shown = {i: int(x[index, i]) for i in range(LENGTH) if visible[index, i]}
        both = {**shown, **{i: int(x[index, i]) for i in range(LENGTH) if subset[index, i]}}
        denominator = marginal(table, shown)
        expected = marginal(table, both) / denominator
        if expected == 0:
            assert torch.isneginf(got[index])
        else:
            assert math.isclose(got[index].exp().item(), expected, rel_tol=1e-10)
    assert torch.allclose(got[0], law.log_prob(x[:1], eps)[0])


def _forbidden_by_definition(law, table, x: tuple) -> list[bool]:
    """Markov: the stationary (n+1)-gram ending at i is impossible; HMM: a reader that restarts after each
    impossible token finds p(x_i | x_restart..i-1) = 0."""
    if law.kind == "markov":
        return [window_prob(table, x[max(0, i - law.order):i + 1]) == 0 for i in range(len(x))]
    out, start = [], 0
    for i in range(len(x)):
        bad = window_prob(table, x[start:i + 1]) == 0
        out.append(bad)
        if bad:  # restart given x_i alone, or from nothing if x_i is never emitted
            start = i if window_prob(table, x[i:i + 1]) > 0 else i + 1
    return out


@pytest.mark.parametrize("name", LAWS)
def test_forbidden_matches_definition(name, tables):
    law, table = LAWS[name], tables[(name, 0.0)]
    rows = _all_rows(law.vocab_size)
    got = law.forbidden(rows)
    expected = torch.tensor([_forbidden_by_definition(law, table, tuple(r)) for r in rows.tolist()])
    assert torch.equal(got, expected)
    if name != "hmm":  # (a two-state HMM can switch at any step: it forbids nothing)
        assert expected.any(), "the toy law forbids nothing: the test would prove nothing"
    impossible = torch.tensor([table[tuple(r)] == 0 for r in rows.tolist()])
    assert torch.equal(got.any(-1), impossible)  # a row is impossible exactly when it has a forbidden token
    assert not law.forbidden(law.sample(200, 16, torch.Generator().manual_seed(0))).any()


@pytest.mark.parametrize("name", LAWS)
def test_entropy_against_enumeration(name):
    law = LAWS[name]
    tables = {length: joint(law, 0.0, length) for length in range(1, 6)}
    for length, table in tables.items():
        assert math.isclose(law.row_entropy(length), entropy(table), rel_tol=1e-10)
    conditional = entropy(tables[5]) - entropy(tables[4])  # H(x_4 | x_0..3)
    if law.kind == "markov":
        assert math.isclose(law.entropy_rate(), conditional, rel_tol=1e-10)
    else:  # H(x_i | x_<i) approaches the rate from above within r^i log V (hmm.py)
        shared = law.emission[0][(law.emission == law.emission[:1]).all(0)].sum().item()
        assert law.entropy_rate() <= conditional + 1e-12
        assert conditional - law.entropy_rate() <= shared ** 4 * math.log(law.vocab_size) + 1e-12


def test_hmm_entropy_rate_against_a_long_run():
    """Shannon-McMillan-Breiman: -log p(x_1..n) / n -> H; an independent check of the series."""
    law = make_law("hmm", 27, 3, seed=0)
    run = torch.from_numpy(law.stream(200_000, seed=1)).view(400, 500)
    per_row = -law.token_log_probs(run)[:, 100:].sum(-1) / 400  # drop each row's first tokens (start effect)
    mean, stderr = per_row.mean().item(), per_row.std().item() / math.sqrt(len(per_row))
    assert abs(mean - law.entropy_rate()) < 4 * stderr + 1e-3, (mean, stderr, law.entropy_rate())


@pytest.mark.parametrize("name", LAWS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_law_is_every_windows_marginal(name, n, tables):
    law, table = LAWS[name], tables[(name, 0.0)]
    probs = law.ngram_probs(n)
    assert probs.shape == (law.vocab_size,) * n and math.isclose(probs.sum().item(), 1.0, rel_tol=1e-12)
    for offset in range(LENGTH - n + 1):  # stationary: the same law at every offset
        for gram in itertools.product(range(law.vocab_size), repeat=n):
            expected = marginal(table, {offset + i: v for i, v in enumerate(gram)})
            assert math.isclose(probs[gram].item(), expected, rel_tol=1e-10, abs_tol=1e-15)


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    keep = probs > 0
    assert counts[~keep].sum() == 0, "a sample fell where the law has probability 0"
    expected = probs[keep] * counts.sum()
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


@pytest.mark.parametrize("name", LAWS)
def test_sampling_frequencies_match_the_law(name, tables):
    """Chi-square of 40k rows of 3 tokens against the exact row law, below df + 6 sqrt(2 df) (a 6-sigma bound
    that a wrong law fails: the same counts against the smoothed law exceed it)."""
    law = LAWS[name]
    rows = law.sample(40_000, 3, torch.Generator().manual_seed(3))
    V = law.vocab_size
    counts = torch.bincount((rows * torch.tensor([V * V, V, 1])).sum(-1), minlength=V ** 3).double()
    probs = law.ngram_probs(3).reshape(-1)
    statistic, df = _chi_square(counts, probs)
    assert statistic < df + 6 * math.sqrt(2 * df)
    wrong = 0.9 * probs + 0.1 / V ** 3
    assert _chi_square(counts, wrong)[0] > df + 6 * math.sqrt(2 * df)


@pytest.mark.parametrize("name", ["markov1", "markov2-pool", "hmm"])
def test_corpus_stream_follows_the_law(name):
    """Trigram frequencies of one long run: total variation to the law well below that to a neighbour law."""
    law = LAWS[name]
    V = law.vocab_size
    run = torch.from_numpy(law.stream(300_000, seed=0))
    grams = run.unfold(0, 3, 1) @ torch.tensor([V * V, V, 1])
    frequencies = torch.bincount(grams, minlength=V ** 3).double() / len(grams)
    tv = 0.5 * (frequencies - law.ngram_probs(3).reshape(-1)).abs().sum().item()
    other = tiny_laws(seed=100)[name]
    tv_other = 0.5 * (frequencies - other.ngram_probs(3).reshape(-1)).abs().sum().item()
    assert tv < 0.01 < tv_other
    assert not law.forbidden(run.view(300, 1000)).any()


@pytest.mark.parametrize("kind, order", [("markov", 1), ("markov", 2), ("hmm", 0)])
def test_files_round_trip_and_seeds_reproduce(tmp_path, kind, order):
    law = make_law(kind, 27, 3, seed=5, order=order or 1)
    again = make_law(kind, 27, 3, seed=5, order=order or 1)
    other = make_law(kind, 27, 3, seed=6, order=order or 1)
    record = make_law_folder(law, tmp_path, length=16, tokens=3000, corpus_seed=2)
    loaded = load_law(tmp_path)
    for key, tensor in law.tensors().items():
        assert torch.equal(again.tensors()[key], tensor)
        assert torch.equal(loaded.tensors()[key], tensor)
    assert any(not torch.equal(other.tensors()[key], tensor) for key, tensor in law.tensors().items())
    x = law.sample(8, 16, torch.Generator().manual_seed(0))
    x[:, ::3] = 27
    assert torch.equal(loaded.posterior_log_probs(x, 27), law.posterior_log_probs(x, 27))
    assert record["kind"] == kind and record["vocab_size"] == 27 and record["tokenizer"] == "char"
    assert record["corpus"]["sizes"] == {"train": 2700, "val": 150, "test": 150}
    assert not (tmp_path / "law.pkl").exists() and {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}


def test_large_vocabularies_work():
    """V = 512: order 2 keeps V * pool live states (not V^2) and its posterior rows are distributions."""
    law = make_law("markov", 512, 3, seed=0, order=2)
    assert law.num_states == 512 * 12 + 512
    x = law.sample(2, 20, torch.Generator().manual_seed(0))
    x[:, 5:12] = 512
    probs = law.posterior_log_probs(x, 512, 1e-3)[..., :512].exp()
    assert torch.allclose(probs.sum(-1), torch.ones(2, 20, dtype=torch.float64))
    assert law.log_prob(x[:, :5]).isfinite().all()
    assert math.isclose(law.entropy_rate(), (law.stationary * -(law.probs * law.probs.log()).sum(-1)).sum().item())


def test_impossible_context_falls_back_to_smoothing():
    law = LAWS["markov1"]
    x = _all_rows(3)[law.forbidden(_all_rows(3)).any(-1)][:1].clone()
    x[0, -1] = 3
    out = law.posterior_log_probs(x, 3)
    assert torch.allclose(out[0, -1, :3].exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_bad_settings_name_the_argument_and_the_cli_its_flag():
    for arguments, subject in ((("markov", 27, 40), "support"), (("markov", 27, 3, 0, 3), "order"),
                               (("hmm", 27, 7, 0, 1, 4), "hidden"), (("pcfg", 27, 3), "kind")):
        with pytest.raises(LawError, match=f"^{subject} ") as caught:
            make_law(*arguments, **({} if len(arguments) > 3 else {"seed": 0}))
        assert caught.value.subject == subject and caught.value.flag_message().startswith(f"--{subject} ")
