"""Every command that computes runs on the device it is asked for.

Three checks that hold on a CPU-only machine:
- every such command and benchmark takes ``--device`` and, asked for CUDA where there is none, stops with one
  line naming the flag before it writes anything;
- no call in the library that builds a model, an energy or a judge, or trains, leaves the device to a default
  (an AST scan; a default CPU placement is what broke ``eval --energy`` and ``bench quality`` on a GPU);
- every benchmark flag has help text, like the main commands' flags.
The GPU runs themselves are in test_gpu.py (skipped without CUDA).
"""

from __future__ import annotations

import argparse
import ast
import inspect
from pathlib import Path

import pytest
import torch
from toys import save_random_run

from edlm.bench import BENCHES, run_bench
from edlm.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "edlm"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("devices")
    mdlm, ar = save_random_run(root / "mdlm", "mdlm", 0), save_random_run(root / "ar", "ar", 1)
    judge = save_random_run(root / "judge", "ar", 2)
    samples = root / "samples.json"
    assert main(["sample", "--run", str(mdlm), "--num", "2", "--steps", "4", "--device", "cpu", "--out",
                 str(samples)]) == 0
    return {"root": root, "data": tiny_data, "mdlm": mdlm, "ar": ar, "judge": judge, "samples": samples}


# (argv template, expected fragment of the one-line error); {out} must not exist afterwards
CUDA_REQUESTS = [
    ("train --data {data} --preset char-tiny --out {out}", "--device cuda: CUDA is not available"),
    ("eval --run {mdlm} --data {data}", "--device cuda: CUDA is not available"),
    ("eval --run {mdlm} --data {data} --energy ar:{ar} --steps 4", "--device cuda: CUDA is not available"),
    ("sample --run {mdlm} --num 1 --steps 4 --out {out}", "--device cuda: CUDA is not available"),
    ("sample --run {mdlm} --num 1 --steps 4 --energy ar:{ar} --out {out}", "--device cuda: CUDA is not available"),
    ("eval-gen --samples {samples} --judge run:{ar}", "--device cuda: CUDA is not available"),
    ("demo --quick --out {out}", "--device cuda: CUDA is not available"),
    ("bench quality --mdlm {mdlm} --ar {ar} --judge run:{judge} --steps 4 --num 2 --out {out}",
     "--device cuda: CUDA is not available"),
    ("bench likelihood --data {data} --mdlm {mdlm} --ar {ar} --out {out}", "--device cuda: CUDA is not available"),
    ("bench sampling --run {mdlm} --out {out}", "--device cuda: CUDA is not available"),
    ("bench throughput --presets char-tiny --steps 2 --out {out}", "--device cuda: CUDA is not available"),
    ("bench learning-curve --data {data} --preset char-tiny --run {out}/run --out {out}",
     "--device cuda: CUDA is not available"),
    ("bench scaling --data {data} --preset char-tiny --out {out}", "--device cuda --nproc 2: this machine has 0"),
]


@pytest.mark.parametrize("template, expected", CUDA_REQUESTS, ids=[t.split(" --")[0] + (" + energy" if "energy" in t
                                                                   else "") for t, _ in CUDA_REQUESTS])
def test_a_cuda_request_without_cuda_is_one_line_and_writes_nothing(world, tmp_path, capsys, template, expected):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "out"
    argv = template.format(out=out, **world).split() + ["--device", "cuda"]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and ": error: " in err[0] and expected in err[0], err
    assert not out.exists(), f"{template}: wrote {out} before checking --device"


# The library functions that place a model, an energy or a judge on a device, or train one, and the calls
# allowed to rely on their default (CPU) placement, with the reason.
PLACING = ("load_model", "make_energy", "make_hf_energy", "make_judge", "load_denoiser_for_nce", "train")
CPU_ON_PURPOSE = {("training/exporter.py", "load_model"): "export copies weights to disk; no computation"}


def device_position(name: str) -> int:
    from edlm.checkpoint import load_model
    from edlm.energy import make_energy
    from edlm.energy.hf import make_hf_energy
    from edlm.evaluation.judges import make_judge
    from edlm.training.loop import train
    from edlm.training.nce import load_denoiser_for_nce

    functions = {"load_model": load_model, "make_energy": make_energy, "make_hf_energy": make_hf_energy,
                 "make_judge": make_judge, "load_denoiser_for_nce": load_denoiser_for_nce, "train": train}
    return list(inspect.signature(functions[name]).parameters).index("device")


def calls_without_a_device(tree: ast.AST) -> list[tuple[str, int]]:
    """(function name, line) of every call to a PLACING function that passes no device (keyword or position;
    ``train``'s ``process`` carries the process's device).
    ``train`` counts only as a bare name (``model.train()`` is the nn.Module switch)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name not in PLACING or (name == "train" and not isinstance(func, ast.Name)):
            continue
        passes = any(k.arg in ("device", "process") or k.arg is None for k in node.keywords)  # a process has one
        if not passes and len(node.args) <= device_position(name):
            found.append((name, node.lineno))
    return found


def test_the_scan_finds_a_call_that_leaves_the_device_to_its_default():
    tree = ast.parse("config, model = load_model(run)\nmake_judge(spec, device)\nmodel.train()\n"
                     "train(config, data, run, max_minutes=1)\nmake_energy(spec, cfg, device=d)\n")
    assert calls_without_a_device(tree) == [("load_model", 1), ("train", 4)]


def test_no_library_call_leaves_the_device_to_a_default():
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        relative = str(path.relative_to(SRC))
        for name, line in calls_without_a_device(ast.parse(path.read_text())):
            if (relative, name) not in CPU_ON_PURPOSE:
                missing.append(f"{relative}:{line} {name}(...) without device")
    assert not missing, missing


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_every_benchmark_flag_has_help(name, monkeypatch):
    """Each benchmark builds its parser inside main(); parse_args is intercepted to look at it."""
    seen = []

    def capture(parser, *args, **kwargs):
        seen.append(parser)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed):
        run_bench(name, [])
    parser = seen[0]
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.dest != "help" and not (a.help or "").strip()]
    assert not missing, f"edlm bench {name}: flags without help: {missing}"
    assert any("--device" in a.option_strings for a in parser._actions), f"edlm bench {name} has no --device"


BAD_BENCH_FLAGS = [
    ("bench sampling --num 0", "--num must be >= 1, got 0"),
    ("bench sampling --steps 16,0", "--steps must be >= 1, got 0"),
    ("bench sampling --window 1.5", "--window must be in [0.0, 1.0], got 1.5"),
    ("bench throughput --batch-sizes 0", "--batch-sizes must be >= 1, got 0"),
    ("bench learning-curve --data D --minutes -1", "--minutes must be in (0.0, 10000000.0], got -1.0"),
    ("bench learning-curve --data D --t-samples 0", "--t-samples must be >= 1, got 0"),
    ("bench quality --mdlm M --ar A --judge run:J --num 0", "--num must be >= 1, got 0"),
    ("bench scaling --data D --steps 2", "need --steps >= 4 and --nproc >= 2"),
    ("bench likelihood --data D --mdlm M --ar A --k 0", "--k must be >= 1"),
]


@pytest.mark.parametrize("argv, expected", BAD_BENCH_FLAGS, ids=[a for a, _ in BAD_BENCH_FLAGS])
def test_a_bad_benchmark_flag_is_one_line(capsys, tmp_path, argv, expected):
    """Benchmark flags are checked like the commands' flags (`--num 0` ran 4 samples, `--t-samples 0` wrote a
    division by zero): exit 2, one line naming the flag, nothing written."""
    capsys.readouterr()
    try:
        code = main(argv.split() + ["--out", str(tmp_path / "out")])
    except SystemExit as exit_:  # argparse's check; the settings' own checks return 2 through `edlm`'s handler
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and ": error: " in err[0] and expected in err[0], err
    assert not (tmp_path / "out").exists()
