"""GPU tests (marked ``gpu``; skipped without CUDA, so CI on CPU skips them all).

Training, resume and CPU-vs-GPU agreement call the library; sampling, likelihood and judging go through the
CLI (``python -m edlm`` in a subprocess with PYTHONPATH=src), as a user would run them on a GPU machine.

Tolerances: cuBLAS and the SDPA kernels are not bit-deterministic across runs on every GPU (atomics in some
attention backward kernels), so "exact resume" on CUDA is checked to 1e-4 on losses and weights rather than
bit for bit; CPU-vs-GPU log-probabilities agree to 2e-4 in fp32 (TF32 off) and to bf16 rounding (0.1 absolute
on log-probabilities of order 1-10) under bf16 autocast.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SRC = str(Path(__file__).resolve().parents[1] / "src")
GPU_TEXT = ("it was the best of times it was the worst of times it was the age of wisdom it was the age of "
            "foolishness it was the epoch of belief it was the epoch of incredulity it was the season of light ") * 80


def edlm(*args: str, timeout: float = 300, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m edlm ARGS`` (or under ``launcher``) with this checkout's sources; assert exit 0."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    command = (launcher or [sys.executable]) + ["-m", "edlm", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle) if row["loss"]]


def train_args(data: Path, out: Path, model: str, steps: int, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--preset", "char-tiny", "--model", model, "--out", str(out),
            "--max-steps", str(steps), "--device", "cuda", "--no-progress", "train.log_every=1",
            "train.ckpt_every=10", "train.eval_every=10", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A corpus, an MDLM, an AR and an NCE run trained briefly on the GPU through the CLI."""
    from edlm.data import prepare_corpus

    root = tmp_path_factory.mktemp("gpu")
    (root / "text.txt").write_text(GPU_TEXT)
    data = root / "data"
    prepare_corpus("files", data, root / "text.txt")
    mdlm, ar, nce = root / "mdlm", root / "ar", root / "nce"
    edlm(*train_args(data, mdlm, "mdlm", 40, "train.lr=3e-3", "train.warmup_steps=5"))
    edlm(*train_args(data, ar, "ar", 40, "train.lr=3e-3", "train.warmup_steps=5"))
    edlm(*train_args(data, nce, "nce", 5, "--denoiser", str(mdlm)))
    return {"data": data, "mdlm": mdlm, "ar": ar, "nce": nce, "root": root}


def test_bf16_training_and_resume_on_gpu(tiny_data, tmp_path):
    from edlm.checkpoint import latest_valid_checkpoint
    from edlm.config import resolve_train_config
    from edlm.training.loop import train

    config = resolve_train_config("char-tiny", "mdlm", ["train.precision=bf16", "train.log_every=1",
                                                        "train.max_steps=12", "train.lr=2e-3",
                                                        "train.warmup_steps=3", "train.ckpt_every=1000"])
    train(config, tiny_data, tmp_path / "straight", progress=False, device="cuda")
    train(config, tiny_data, tmp_path / "split", progress=False, device="cuda", stop_after=6)
    summary = train(config, tiny_data, tmp_path / "split", resume=True, progress=False, device="cuda")
    assert summary["step"] == 12
    straight, split = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert len(straight) == len(split) == 12 and all(torch.isfinite(torch.tensor(straight)))
    assert max(abs(a - b) for a, b in zip(straight, split)) < 1e-4
    a, b = latest_valid_checkpoint(tmp_path / "straight"), latest_valid_checkpoint(tmp_path / "split")
    for key in a.model:
        assert torch.allclose(a.model[key], b.model[key], atol=1e-4), key
        assert torch.allclose(a.ema[key], b.ema[key], atol=1e-4), key


def test_compiled_training_saves_plain_keys_and_resumes(tiny_data, tmp_path):
    from edlm.checkpoint import latest_valid_checkpoint, load_model
    from edlm.config import resolve_train_config
    from edlm.training.loop import train

    config = resolve_train_config("char-tiny", "mdlm", ["train.compile=true", "train.max_steps=8",
                                                        "train.log_every=1", "train.ckpt_every=4"])
    train(config, tiny_data, tmp_path / "run", progress=False, device="cuda", stop_after=4)
    summary = train(config, tiny_data, tmp_path / "run", resume=True, progress=False, device="cuda")
    assert summary["step"] == 8
    checkpoint = latest_valid_checkpoint(tmp_path / "run")
    assert not any(key.startswith("_orig_mod.") for key in checkpoint.model)
    load_model(tmp_path / "run", device="cuda")  # loads into a plain (uncompiled) model


def test_flash_attention_is_selected_for_bf16_head_dim_64():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from edlm.config import get_preset
    from edlm.models import build_model

    config = dataclasses.replace(get_preset("text8-paper").model, n_layers=1)
    for kind in ("mdlm", "ar"):
        model = build_model(dataclasses.replace(config, kind=kind)).cuda()
        x = torch.randint(0, 27, (2, config.seq_len), device="cuda")
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)  # raises if the flash kernel cannot run these inputs


def test_cpu_and_gpu_log_probs_agree():
    from edlm.config import get_preset
    from edlm.device import autocast_for
    from edlm.diffusion.subs import subs_log_probs
    from edlm.models import build_model

    config = get_preset("char-small").model
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for parameter in model.parameters():  # zero-initialised layers would make every output equal
            parameter.add_(0.05 * torch.randn_like(parameter))
    x0 = torch.randint(0, 27, (4, config.seq_len))
    x_t = torch.where(torch.rand(x0.shape) < 0.5, torch.full_like(x0, config.mask_id), x0)
    with torch.no_grad():
        reference = subs_log_probs(model(x_t), x_t, config.mask_id)
        gpu_model = model.cuda()
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            fp32 = subs_log_probs(gpu_model(x_t.cuda()), x_t.cuda(), config.mask_id).cpu()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        with autocast_for("cuda", "bf16"):
            bf16 = subs_log_probs(gpu_model(x_t.cuda()), x_t.cuda(), config.mask_id).float().cpu()
    finite = torch.isfinite(reference)
    assert torch.equal(finite, torch.isfinite(fp32)) and torch.equal(finite, torch.isfinite(bf16))
    torch.testing.assert_close(fp32[finite], reference[finite], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(bf16[finite], reference[finite], atol=0.1, rtol=0.02)


def sample_json(runs, out: Path, *args: str) -> dict:
    edlm("sample", "--run", str(runs["mdlm"]), "--device", "cuda", "--out", str(out), "--json", "--num", "64",
         "--length", "32", "--steps", "32", "--batch-size", "64", *args)
    return json.loads(out.read_text())


def char_histogram(texts: list[str]) -> dict[str, float]:
    counts = Counter("".join(texts))
    total = sum(counts.values())
    return {char: n / total for char, n in counts.items()}


def test_cached_and_ancestral_samplers_agree_in_distribution(runs, tmp_path):
    """Different seeds, so only the distributions can match: character frequencies within 0.1 total variation
    (each side 2,048 characters; sampling noise is about 0.03)."""
    cached = sample_json(runs, tmp_path / "cached.json", "--sampler", "cached", "--seed", "1")
    ancestral = sample_json(runs, tmp_path / "ancestral.json", "--sampler", "ancestral", "--seed", "2")
    assert len(cached["samples"]) == len(ancestral["samples"]) == 64
    assert all(len(text) == 32 for text in cached["samples"] + ancestral["samples"])
    p, q = char_histogram(cached["samples"]), char_histogram(ancestral["samples"])
    total_variation = 0.5 * sum(abs(p.get(c, 0.0) - q.get(c, 0.0)) for c in set(p) | set(q))
    assert total_variation < 0.1


@pytest.mark.parametrize("energy", ["ar", "nce"])
def test_importance_sampler_with_an_energy(runs, tmp_path, energy):
    record = sample_json(runs, tmp_path / f"{energy}.json", "--energy", f"{energy}:{runs[energy]}", "--k", "4",
                         "--window", "1.0")
    assert len(record["samples"]) == 64 and all(len(text) == 32 for text in record["samples"])
    assert record["energy_calls"] > 0


def test_eval_with_energy_on_gpu(runs):
    result = edlm("eval", "--run", str(runs["mdlm"]), "--data", str(runs["data"]), "--energy",
                  f"ar:{runs['ar']}", "--device", "cuda", "--max-sequences", "4", "--steps", "8", "--json")
    record = json.loads(result.stdout.strip().splitlines()[-1])
    numbers = [v for v in record.values() if isinstance(v, float)]
    assert numbers and all(torch.isfinite(torch.tensor(numbers)))


def test_eval_gen_with_run_and_hf_judges(runs, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers_hf import save_tiny_char_gpt2

    samples = tmp_path / "samples.json"
    sample_json(runs, samples)
    hf_folder = save_tiny_char_gpt2(tmp_path / "gpt2", n_positions=64)
    for judge in (f"run:{runs['ar']}", f"hf:{hf_folder}"):
        result = edlm("eval-gen", "--samples", str(samples), "--judge", judge, "--device", "cuda", "--json")
        record = json.loads(result.stdout.strip().splitlines()[-1])
        assert record["judge"] == judge and 1.0 < record["gen_ppl"] < 1e4


def test_one_process_nccl_ddp_run(runs, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    out = tmp_path / "ddp"
    result = edlm(*train_args(runs["data"], out, "mdlm", 10), launcher=launcher)
    assert "trained mdlm to step 10" in result.stdout
    assert len(losses(out)) == 10 and all(torch.isfinite(torch.tensor(losses(out))))
