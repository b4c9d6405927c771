"""Training: the loss falls, resume is exact, checkpoints round-trip."""

import csv
import dataclasses
import math

import torch

from edlm.checkpoint import latest_valid_checkpoint, load_model
from edlm.config import resolve_train_config
from edlm.training.loop import train


def tiny_config(**train_overrides):
    overrides = ["train.precision=fp32", "train.log_every=1", "train.eval_every=1000", "train.ckpt_every=1000"]
    overrides += [f"train.{k}={v}" for k, v in train_overrides.items()]
    return resolve_train_config("char-tiny", "mdlm", overrides)


def losses(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle) if row["loss"]]


def test_loss_falls(tiny_data, tmp_path):
    """The zero-initialised output layer starts at the uniform loss log(27) nats; training must beat it."""
    config = tiny_config(max_steps=80, lr=3e-3, warmup_steps=5, eval_every=40)
    summary = train(config, tiny_data, tmp_path / "run", progress=False)
    val = [summary["history"][str(step)]["loss"] for step in (40, 80)]
    assert val[1] < val[0] < math.log(27)
    assert val[1] < 0.9 * math.log(27)


def test_resume_is_exact(tiny_data, tmp_path):
    config = tiny_config(max_steps=12, lr=2e-3, warmup_steps=3)
    train(config, tiny_data, tmp_path / "straight", progress=False)
    train(config, tiny_data, tmp_path / "split", progress=False, stop_after=6)
    train(config, tiny_data, tmp_path / "split", resume=True, progress=False)
    straight, split = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert len(straight) == len(split) == 12
    assert max(abs(a - b) for a, b in zip(straight, split)) < 1e-6
    a = latest_valid_checkpoint(tmp_path / "straight")
    b = latest_valid_checkpoint(tmp_path / "split")
    for key in a.model:
        assert torch.allclose(a.model[key], b.model[key], atol=1e-6)
        assert torch.allclose(a.ema[key], b.ema[key], atol=1e-6)


def test_checkpoint_round_trip_reproduces_outputs(tiny_data, tmp_path):
    config = tiny_config(max_steps=5)
    train(config, tiny_data, tmp_path / "run", progress=False)
    loaded_config, model = load_model(tmp_path / "run", weights="model")
    assert loaded_config == config
    checkpoint = latest_valid_checkpoint(tmp_path / "run")
    from edlm.models import build_model

    fresh = build_model(config.model)
    fresh.load_state_dict(checkpoint.model)
    x = torch.randint(0, 28, (2, config.model.seq_len))
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    assert checkpoint.step == 5


def test_bf16_training_runs(tiny_data, tmp_path):
    config = dataclasses.replace(tiny_config(max_steps=3),
                                 train=dataclasses.replace(tiny_config().train, precision="bf16", max_steps=3))
    summary = train(config, tiny_data, tmp_path / "run", progress=False)
    assert summary["step"] == 3 and all(torch.isfinite(torch.tensor(losses(tmp_path / "run"))))


def test_train_never_joins_a_process_group_itself(tiny_data, tmp_path, monkeypatch):
    """Library code computes; the command owns processes: ``train`` under torchrun's environment but without a
    ``process`` from its caller trains alone and leaves no process group behind (it once started one that
    ``edlm train`` had to tear down by hand)."""
    import socket

    import torch.distributed as dist

    with socket.socket() as probe:  # a free port, in case a process group were (wrongly) started
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    config = tiny_config(max_steps=2)
    try:
        assert train(config, tiny_data, tmp_path / "run", progress=False, device="cpu")["step"] == 2
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
