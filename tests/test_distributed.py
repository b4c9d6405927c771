"""Data-parallel training on CPU with gloo: 2 processes follow the 1-process trajectory.

Both runs use the same global batch (train.batch_size=16) and seed; torchrun's 2 ranks each take 8 rows of
every global batch (training.batches). The runs are launched as real subprocesses through
``python -m torch.distributed.run --standalone``, like a user would.

Tolerance: float32 all-reduce sums the two half-batch gradients in a different order than one full-batch
backward, so the runs agree to rounding, not bit for bit: loss within 1e-5 relative, weights within 1e-5
absolute after 20 AdamW steps (observed: about 1e-7).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edlm.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

STEPS = 20
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5
TEXT = ("it was the best of times it was the worst of times it was the age of wisdom it was the age of "
        "foolishness it was the epoch of belief it was the epoch of incredulity ") * 40


def launch(args: list[str], nproc: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``edlm ARGS`` in ``nproc`` processes (torchrun with gloo when nproc > 1)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    command = (launcher if nproc > 1 else [sys.executable]) + ["-m", "edlm"] + args
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--preset", "char-tiny", "--out", str(out), "--device", "cpu",
            "--no-progress", "train.precision=fp32", "train.log_every=1", "train.eval_every=10",
            "train.ckpt_every=10", *extra]


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One corpus, one 1-process run and one 2-process run of STEPS steps each."""
    from edlm.data import prepare_corpus

    root = tmp_path_factory.mktemp("dist")
    (root / "text.txt").write_text(TEXT)
    prepare_corpus("files", root / "data", root / "text.txt")
    one = launch(train_args(root / "data", root / "one", "--max-steps", str(STEPS)), nproc=1)
    two = launch(train_args(root / "data", root / "two", "--max-steps", str(STEPS)), nproc=2)
    return {"root": root, "data": root / "data", "one": root / "one", "two": root / "two",
            "one_log": one, "two_log": two}


def assert_same_trajectory(a: list[dict[str, str]], b: list[dict[str, str]]) -> None:
    assert [row["step"] for row in a] == [row["step"] for row in b] == [str(s) for s in range(1, STEPS + 1)]
    for row_a, row_b in zip(a, b):
        for column in ("loss", "val_loss"):
            if row_a[column] or row_b[column]:
                x, y = float(row_a[column]), float(row_b[column])
                assert abs(x - y) <= LOSS_RTOL * abs(x), (row_a["step"], column, x, y)


def assert_same_checkpoint(path_a: Path, path_b: Path) -> None:
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    assert a.step == b.step
    for name in ("model", "ema"):
        tensors_a, tensors_b = getattr(a, name), getattr(b, name)
        assert {k: v.shape for k, v in tensors_a.items()} == {k: v.shape for k, v in tensors_b.items()}
        for key in tensors_a:
            assert torch.allclose(tensors_a[key], tensors_b[key], rtol=0, atol=WEIGHT_ATOL), (name, key)
    assert a.optimizer["param_groups"] == b.optimizer["param_groups"]
    for param_id, state in a.optimizer["state"].items():
        other = b.optimizer["state"][param_id]
        assert state.keys() == other.keys()
        for key, value in state.items():
            assert torch.allclose(value, other[key], rtol=1e-4, atol=1e-8), (param_id, key)


def test_two_processes_follow_one_process_trajectory(runs):
    assert_same_trajectory(metrics(runs["one"]), metrics(runs["two"]))
    names = lambda run: [p.name for p in list_checkpoints(run)]  # noqa: E731
    assert names(runs["one"]) == names(runs["two"]) == ["step-00000010", "step-00000020"]
    for name in names(runs["one"]):
        assert_same_checkpoint(runs["one"] / "checkpoints" / name, runs["two"] / "checkpoints" / name)


def test_only_rank_zero_writes(runs):
    """One metrics row per step, one validation line per eval, one summary line, the same files as 1 process."""
    log = runs["two_log"].stdout
    assert len(metrics(runs["two"])) == STEPS
    assert log.count("step 10: val loss") == 1 and log.count("step 20: val loss") == 1
    assert log.count("trained mdlm to step 20") == 1
    listing = lambda run: sorted(str(p.relative_to(run)) for p in run.rglob("*"))  # noqa: E731
    assert listing(runs["two"]) == listing(runs["one"])


def test_resume_with_a_different_number_of_processes(runs, tmp_path):
    """The 2-process run's step-10 checkpoint, resumed by 1 process, ends where the 1-process run ends."""
    resumed = tmp_path / "resumed"
    shutil.copytree(runs["two"], resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000020")  # as if the 2-process job died after step 10
    result = launch(train_args(runs["data"], resumed, "--max-steps", str(STEPS), "--resume"), nproc=1)
    assert "(step 10)" in result.stdout
    assert_same_trajectory(metrics(runs["one"]), metrics(resumed))
    assert_same_checkpoint(runs["one"] / "checkpoints" / "step-00000020", resumed / "checkpoints" / "step-00000020")


def test_global_batch_must_divide_over_ranks(runs, tmp_path):
    """batch_size 15 cannot be split over 2 ranks: a one-line error from every rank, nothing written."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "edlm"] + train_args(runs["data"], tmp_path / "bad", "train.batch_size=15")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    message = "edlm: error: train.batch_size=15 is not divisible by world size 2 x train.grad_accum 1"
    assert result.stderr.count(message) == 2  # each rank says it once; torchrun then reports the failed children
    assert not (tmp_path / "bad").exists()


def test_nproc_prints_a_user_error_once(runs, tmp_path):
    """``edlm train --nproc 2`` with a batch that does not split: both workers refuse, the launcher prints the
    one-line error once (not once per worker) and exits 2; nothing is written."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "edlm"] + train_args(runs["data"], tmp_path / "bad", "train.batch_size=15",
                                                          "--nproc", "2")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    message = "edlm: error: train.batch_size=15 is not divisible by world size 2 x train.grad_accum 1"
    assert result.returncode == 2 and result.stderr.count(message) == 1, result.stderr[-2000:]
    assert not (tmp_path / "bad").exists()
