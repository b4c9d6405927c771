"""EDLM-NCE: the loss against its closed form, the energy network's initialisation, the energy protocol,
training that learns to classify, the CLI path and exact resume."""

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

from edlm.checkpoint import latest_valid_checkpoint
from edlm.config import ConfigError, get_preset, resolve_train_config
from edlm.energy.nce import NCEEnergy
from edlm.models.energy_net import EnergyNetwork
from edlm.models.transformer import Transformer
from edlm.training.loop import train
from edlm.training.nce import load_denoiser_for_nce, nce_loss

MASK = 27


def randomised_denoiser(config) -> Transformer:
    """A tiny denoiser whose blocks are not the identity (adaLN-Zero is switched on with random weights)."""
    torch.manual_seed(0)
    denoiser = Transformer(config)
    with torch.no_grad():
        for block in denoiser.blocks:
            block.adaLN_modulation.weight.normal_(0, 0.2)
            block.adaLN_modulation.bias.normal_(0, 0.2)
    return denoiser.eval()


def noised(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, MASK, (batch, length), generator=generator)
    x_t = torch.where(torch.rand(batch, length, generator=generator) < 0.5, MASK, x0)
    return x0, x_t


def nce_config(*overrides):
    base = ["train.precision=fp32", "train.log_every=1", "train.eval_every=1000", "train.ckpt_every=1000"]
    return resolve_train_config("char-tiny", "nce", base + list(overrides))


def losses(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle) if row["loss"]]


@pytest.fixture(scope="module")
def denoiser_run(tiny_data, tmp_path_factory):
    """A char-tiny MDLM trained for 80 steps on the repetitive corpus."""
    run = tmp_path_factory.mktemp("nce") / "mdlm"
    config = resolve_train_config("char-tiny", "mdlm", ["train.precision=fp32", "train.max_steps=80", "train.lr=3e-3",
                                                        "train.warmup_steps=5", "train.eval_every=1000",
                                                        "train.ckpt_every=1000", "train.log_every=80"])
    train(config, tiny_data, run, progress=False)
    return run


# ----------------------------------------------------------------------------------------------------------
# loss


def test_nce_loss_matches_closed_form():
    energy_pos = torch.tensor([-1.5, 0.0, 2.0, 30.0])
    energy_neg = torch.tensor([[0.5, -2.0, 3.0], [0.0, 0.0, 0.0], [-40.0, 1.0, 0.25], [7.0, -7.0, 0.1]])
    expected = [-math.log(1 / (1 + math.exp(ep))) - sum(math.log(1 / (1 + math.exp(-en))) for en in row) / 3
                for ep, row in zip(energy_pos.tolist(), energy_neg.tolist())]
    assert torch.allclose(nce_loss(energy_pos, energy_neg).double(), torch.tensor(expected, dtype=torch.float64),
                          rtol=1e-6, atol=1e-6)
    # -log sigmoid(-E+) - mean log sigmoid(E-), written with logsigmoid
    identity = -F.logsigmoid(-energy_pos) - F.logsigmoid(energy_neg).mean(-1)
    assert torch.allclose(nce_loss(energy_pos, energy_neg), identity, atol=1e-6)
    assert float(nce_loss(torch.zeros(1), torch.zeros(1, 2))) == pytest.approx(2 * math.log(2))


def test_nce_loss_vanishes_for_a_perfect_classifier():
    perfect = nce_loss(torch.full((3,), -50.0), torch.full((3, 2), 50.0))
    assert torch.all(perfect < 1e-20) and torch.all(perfect >= 0)
    wrong = nce_loss(torch.full((3,), 50.0), torch.full((3, 2), -50.0))
    assert torch.allclose(wrong, torch.full((3,), 100.0))  # finite: no log(sigmoid + eps)


# ----------------------------------------------------------------------------------------------------------
# the network


def test_energy_net_starts_as_the_denoiser_on_x_t():
    config = get_preset("char-tiny").model
    denoiser = randomised_denoiser(config)
    energy_net = EnergyNetwork(config)
    missing, unexpected = energy_net.load_state_dict(denoiser.state_dict(), strict=False)
    assert sorted({k.split(".")[0] for k in missing}) == ["head", "input_proj", "norm_final"]
    assert {k.split(".")[0] for k in unexpected} == {"output_layer"}
    x0, x_t = noised(3, config.seq_len)
    with torch.no_grad():
        expected, _ = denoiser.hidden_states(denoiser.vocab_embed(x_t), denoiser.condition(3, None, "cpu"))
        got = energy_net.hidden_states(x0, x_t)
        energies = energy_net(x0, x_t)
    assert not torch.allclose(expected, denoiser.vocab_embed(x_t))  # the blocks do something
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert energies.shape == (3,) and energies.dtype == torch.float32
    # before training E ignores the candidate: softmax(-E) over candidates is uniform, i.e. plain MDLM
    other = torch.where(x_t == MASK, (x0 + 1) % MASK, x0)
    with torch.no_grad():
        assert torch.allclose(energy_net(other, x_t), energies, atol=1e-6, rtol=0)
    assert energies.abs().max() > 0  # the head is not zero (a zero head would stall training at [I | 0])


def test_energy_net_reads_the_candidate():
    config = get_preset("char-tiny").model
    torch.manual_seed(1)
    energy_net = EnergyNetwork(config)
    with torch.no_grad():
        energy_net.head[-1].weight.normal_()
        energy_net.input_proj.weight.normal_(0, 0.1)
    x0, x_t = noised(2, config.seq_len)
    other = torch.where(x_t == MASK, (x0 + 1) % MASK, x0)
    with torch.no_grad():
        assert not torch.allclose(energy_net(x0, x_t), energy_net(other, x_t))


def test_nce_energy_shape_dtype_and_row_independence():
    config = get_preset("char-tiny").model
    torch.manual_seed(2)
    energy_net = EnergyNetwork(config).eval()
    with torch.no_grad():
        energy_net.head[-1].weight.normal_()
        energy_net.input_proj.weight.normal_(0, 0.1)
    B, k, L = 3, 4, config.seq_len
    x0, x_t = noised(B, L)
    candidates = torch.where(x_t[:, None] == MASK, torch.randint(0, MASK, (B, k, L)), x_t[:, None])
    log_probs = torch.zeros(B, L, MASK + 1)
    energy = NCEEnergy(energy_net, chunk_rows=5)  # chunks that split rows of the same sequence
    assert energy.constant is False and energy.vocab_size == 27 and energy.seq_len == L
    energies = energy(candidates, x_t, log_probs)
    assert energies.shape == (B, k) and energies.dtype == torch.float64
    assert energies.std() > 0
    for b in range(B):  # each row alone gives the same energies: no mixing across rows or candidates
        alone = energy(candidates[b:b + 1], x_t[b:b + 1], log_probs[b:b + 1])
        assert torch.allclose(alone[0], energies[b], atol=1e-5)
        with torch.no_grad():
            direct = energy_net(candidates[b], x_t[b:b + 1].expand(k, L)).double()
        assert torch.allclose(direct, energies[b], atol=1e-5)
    swapped = energy(candidates.flip(0), x_t.flip(0), log_probs)
    assert torch.allclose(swapped.flip(0), energies, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# training


def test_load_denoiser_checks_sizes(denoiser_run):
    config = nce_config()
    denoiser, init_state = load_denoiser_for_nce(denoiser_run, config, "cpu")
    assert not any(p.requires_grad for p in denoiser.parameters()) and not denoiser.training
    assert init_state and all(k.split(".")[0] in ("vocab_embed", "sigma_map", "rotary_emb", "blocks")
                              for k in init_state)
    with pytest.raises(ConfigError, match="model.hidden"):
        load_denoiser_for_nce(denoiser_run, nce_config("model.hidden=32"), "cpu")


def test_nce_training_learns_to_classify(tiny_data, denoiser_run, tmp_path):
    config = nce_config("train.max_steps=80", "train.lr=2e-3", "train.warmup_steps=5", "train.nce_window=0.5",
                        "train.negatives=2")
    denoiser, init_state = load_denoiser_for_nce(denoiser_run, config, "cpu")
    summary = train(config, tiny_data, tmp_path / "nce", denoiser=denoiser, init_state=init_state, progress=False)
    final = summary["history"]["80"]
    assert set(final) >= {"loss", "accuracy", "energy_pos", "energy_neg"}
    assert final["accuracy"] > 0.5
    assert final["loss"] < 2 * math.log(2)  # below the untrained E = 0 value
    assert final["energy_pos"] < final["energy_neg"]
    with open(tmp_path / "nce" / "metrics.csv") as handle:
        extra = json.loads(list(csv.DictReader(handle))[-1]["extra"])
    assert set(extra) == {"accuracy", "energy_pos", "energy_neg"}


def test_nce_resume_is_exact(tiny_data, denoiser_run, tmp_path):
    config = nce_config("train.max_steps=8", "train.lr=2e-3", "train.warmup_steps=2", "train.negatives=2")
    denoiser, init_state = load_denoiser_for_nce(denoiser_run, config, "cpu")
    common = dict(denoiser=denoiser, init_state=init_state, progress=False)
    train(config, tiny_data, tmp_path / "straight", **common)
    train(config, tiny_data, tmp_path / "split", stop_after=4, **common)
    train(config, tiny_data, tmp_path / "split", resume=True, **common)
    straight, split = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert len(straight) == len(split) == 8
    assert max(abs(a - b) for a, b in zip(straight, split)) < 1e-6
    a, b = latest_valid_checkpoint(tmp_path / "straight"), latest_valid_checkpoint(tmp_path / "split")
    for key in a.model:
        assert torch.allclose(a.model[key], b.model[key], atol=1e-6)


def test_nce_negatives_do_not_depend_on_the_sharding(tiny_data, denoiser_run, tmp_path):
    """Negatives are seeded per row, so micro-batching (like data-parallel ranks) keeps the trajectory."""
    runs = {}
    for accum in (1, 4):
        config = nce_config("train.max_steps=3", "train.lr=2e-3", f"train.grad_accum={accum}")
        denoiser, init_state = load_denoiser_for_nce(denoiser_run, config, "cpu")
        train(config, tiny_data, tmp_path / f"accum{accum}", denoiser=denoiser, init_state=init_state,
              progress=False)
        runs[accum] = losses(tmp_path / f"accum{accum}")
    assert len(runs[1]) == 3 and max(abs(a - b) for a, b in zip(runs[1], runs[4])) < 1e-5


def test_cli_trains_nce_and_samples_with_it(tiny_data, denoiser_run, tmp_path, capsys):
    from edlm.cli import main

    nce_run = tmp_path / "nce"
    assert main(["train", "--data", str(tiny_data), "--preset", "char-tiny", "--model", "nce", "--denoiser",
                 str(denoiser_run), "--out", str(nce_run), "--max-steps", "4", "--device", "cpu", "--no-progress",
                 "train.precision=fp32", "train.eval_every=4"]) == 0
    capsys.readouterr()
    assert main(["sample", "--run", str(denoiser_run), "--energy", f"nce:{nce_run}", "--k", "2", "--window", "1.0",
                 "--num", "2", "--steps", "8", "--json", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["samples"]) == 2 and all(len(s) == 32 for s in record["samples"])
    assert record["energy_calls"] > 0
    # a mismatched denoiser is refused with a message naming the flag
    assert main(["train", "--data", str(tiny_data), "--preset", "char-tiny", "--model", "nce", "--denoiser",
                 str(denoiser_run), "--out", str(tmp_path / "bad"), "--max-steps", "1", "--device", "cpu",
                 "--no-progress", "model.n_layers=3"]) == 2
    assert "model.n_layers" in capsys.readouterr().err
