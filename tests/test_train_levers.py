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
    from edlm.training.optim import build_optimizer, maybe_compile

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
    graphs = levers_for([64, 256], compile_rows=True, cuda_graphs=True)
    assert graphs[5].label == "no sync, fused, foreach EMA, compiled + CUDA graphs"
    assert graphs[5].compile_mode == "reduce-overhead" and graphs[:5] == rows[:5] and graphs[6:] == rows[5:]
    assert levers_for([64], compile_rows=False, cuda_graphs=True) == levers_for([64], compile_rows=False)


@pytest.mark.parametrize("mode, passed", [("default", None), ("reduce-overhead", "reduce-overhead"),
                                          ("max-autotune", "max-autotune")])
def test_compile_mode_reaches_torch_compile(monkeypatch, mode, passed):
    from edlm.config import apply_overrides
    from edlm.training import optim

    seen = []
    monkeypatch.setattr(optim.torch, "compile", lambda model, mode=None: seen.append(mode) or model)
    config = apply_overrides(get_preset("char-tiny"), ["train.compile=true", f"train.compile_mode={mode}"])
    model = build_model(config.model)
    assert optim.maybe_compile(model, config.train.compile, config.train.compile_mode) is model
    assert seen == [passed]


@pytest.mark.parametrize("override, message", [
    ("train.compile_mode=fast", "train.compile_mode='fast': expected one of default, reduce-overhead, max-autotune"),
    ("train.precision=fp16", "train.precision='fp16': expected one of bf16, fp32"),
    ("train.lr_schedule=linear", "train.lr_schedule='linear': expected one of constant, cosine"),
    ("train.on_nonfinite=ignore", "train.on_nonfinite='ignore': expected one of stop, skip"),
])
def test_a_setting_outside_its_choices_is_refused(override, message):
    """Before this check, train.precision=fp16 trained silently in fp32 and lr_schedule=linear ran constant."""
    from edlm.config import ConfigError, apply_overrides

    with pytest.raises(ConfigError) as error:
        apply_overrides(get_preset("char-tiny"), [override])
    assert str(error.value) == message


def test_every_numeric_setting_has_a_range_check():
    """A numeric model/train field without a check let `train.eval_every=0` end in a ZeroDivisionError traceback
    and `model.hidden=0` train a model of width 0; a new field must come with its check."""
    import dataclasses

    from edlm.config import ModelConfig, TrainConfig, range_checks

    checked = {name for name, _, _ in range_checks(get_preset("char-tiny"))}
    numeric = {f"{prefix}.{f.name}" for prefix, cls in (("model", ModelConfig), ("train", TrainConfig))
               for f in dataclasses.fields(cls) if f.type in ("int", "float", "tuple[float, float]")}
    assert numeric and numeric <= checked, sorted(numeric - checked)


@pytest.mark.parametrize("override, message", [
    ("model.n_heads=0", "model.n_heads must be >= 1"),
    ("model.hidden=0", "model.hidden must be >= 1"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
    ("train.eval_every=0", "train.eval_every must be >= 1"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("train.ckpt_every=0", "train.ckpt_every must be >= 1"),
    ("train.eval_batches=0", "train.eval_batches must be >= 1"),
    ("train.grad_clip=0", "train.grad_clip must be > 0 (it is a norm to clip to)"),
    ("train.betas=0.9,1.5", "train.betas must be two numbers in [0, 1), e.g. train.betas=0.9,0.999"),
    ("train.warmup_steps=-1", "train.warmup_steps must be >= 0"),
])
def test_out_of_range_settings_are_one_line_errors(override, message):
    """Each of these used to crash with a traceback (a zero modulus) or train something meaningless."""
    from edlm.config import ConfigError, apply_overrides

    with pytest.raises(ConfigError) as error:
        apply_overrides(get_preset("char-tiny"), [override])
    assert str(error.value) == message


@pytest.mark.parametrize("mode, marks_per_step", [("default", 0), ("reduce-overhead", 2)])
def test_cuda_graph_training_marks_every_micro_step(monkeypatch, tmp_path, tiny_data, mode, marks_per_step):
    """With CUDA graphs each forward/backward is a new graph iteration (torch.compile's rule for training loops);
    torch.compile is replaced by the identity here, so this runs on CPU in a second."""
    from edlm.config import resolve_train_config
    from edlm.training import loop

    marks = []
    monkeypatch.setattr(loop.torch, "compile", lambda model, mode=None: model)
    monkeypatch.setattr(loop.torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    config = resolve_train_config("char-tiny", "mdlm", ["train.compile=true", f"train.compile_mode={mode}",
                                                        "train.grad_accum=2", "train.max_steps=3",
                                                        "train.precision=fp32"])
    loop.train(config, tiny_data, tmp_path / "run", progress=False, device="cpu")
    assert len(marks) == 3 * marks_per_step


def test_schedule_eps_is_a_model_setting_and_old_runs_still_load():
    """The schedule belongs to the trained model (sampling and scoring read it); runs written before the move
    stored it as train.schedule_eps, and their config.json still loads, with the value carried over."""
    import json

    from edlm.config import ConfigError, RunConfig, apply_overrides
    from edlm.diffusion.schedule import schedule_for

    config = apply_overrides(get_preset("char-tiny"), ["model.schedule_eps=0.01"])
    assert schedule_for(config).eps == 0.01
    old = json.loads(get_preset("char-tiny").to_json())
    old["model"].pop("schedule_eps")
    old["train"]["schedule_eps"] = 0.02
    loaded = RunConfig.from_dict(old)
    assert loaded.model.schedule_eps == 0.02 and not hasattr(loaded.train, "schedule_eps")
    with pytest.raises(ConfigError, match=r"^train.schedule_eps is now model.schedule_eps"):
        apply_overrides(get_preset("char-tiny"), ["train.schedule_eps=0.01"])
