"""GPU throughput levers that must not change the math, checked on CPU: foreach EMA, the time-following
progress bar, device resolution in the training entry point, the benchmark's lever rows."""

from __future__ import annotations

import pytest
import torch

from edlm.config import get_preset
from edlm.models import build_model
from edlm.training.ema import EMA


def test_foreach_ema_equals_the_per_tensor_update_bit_for_bit():
    torch.manual_seed(0)
    model = build_model(get_preset("char-tiny").model)
    loop, foreach = EMA(model, 0.99, foreach=False), EMA(model, 0.99, foreach=True)
    for update in range(1, 6):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        loop.update(model, update)
        foreach.update(model, update)
    assert loop.shadow.keys() == foreach.shadow.keys()
    assert all(torch.equal(loop.shadow[k], foreach.shadow[k]) for k in loop.shadow)
    assert any(not torch.equal(loop.shadow[k], v) for k, v in model.state_dict().items())  # it did average


class FakeBar:
    total = 900


@pytest.mark.parametrize("elapsed_s, steps_here, expected", [
    (60.0, 20, 60),    # 1 step/3 s, 3 minutes allowed: 20 done + 40 more
    (170.0, 40, 42),   # 10 s left at 40 steps / 170 s: 2 more
    (1.0, 100, 900),   # the time limit is not binding: max_steps stays the total
])
def test_progress_bar_total_follows_the_time_limit(monkeypatch, elapsed_s, steps_here, expected):
    from edlm.training import loop

    monkeypatch.setattr(loop.time, "perf_counter", lambda: 1000.0 + elapsed_s)
    bar = FakeBar()
    loop._follow_time_limit(bar, steps_here, steps_here, 1000.0, max_minutes=3.0, max_steps=900)
    assert bar.total == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_training_device_cuda_without_cuda_is_one_line():
    from edlm.device import DeviceError
    from edlm.parallel import init_from_env

    with pytest.raises(DeviceError, match="^--device cuda: CUDA is not available on this machine$"):
        init_from_env("cuda")
    assert init_from_env("cpu").device == torch.device("cpu")


def test_fused_adamw_and_compile_switches_leave_cpu_defaults():
    from edlm.training.loop import build_optimizer, maybe_compile

    config = get_preset("char-tiny")
    model = build_model(config.model)
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    assert not optimizer.param_groups[0].get("fused")  # the fused kernel is a CUDA lever only
    assert maybe_compile(model, False) is model


def test_throughput_rows_add_one_lever_at_a_time():
    from edlm.bench.throughput import levers_for

    rows = levers_for([64, 256], compile_rows=True)
    assert [r.label for r in rows[:5]] == [
        "sync/step, foreach AdamW, loop EMA, eager", "no sync, foreach AdamW, loop EMA, eager",
        "no sync, fused, loop EMA, eager", "no sync, fused, foreach EMA, eager",
        "no sync, fused, foreach EMA, compiled"]
    assert (rows[5].batch_size, rows[5].compile) == (256, True) and rows[6].precision == "fp32"
