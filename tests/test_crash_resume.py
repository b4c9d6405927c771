"""Crash-proof training: SIGKILL at random moments, resume, and end exactly where an uninterrupted run ends.

The kill test runs ``edlm train`` as a subprocess six times, each killed with SIGKILL at a seeded random
moment: three times inside a checkpoint write (the test hook ``EDLM_TEST_SLOW_SAVE`` makes a save sleep
between its files; the kill lands between the temporary folder's creation and its rename) and three times
mid-training (1-4 optimiser steps after the resume). After each kill every ``step-*`` folder must verify;
``--resume`` must name the newest one; the final weights, EMA and AdamW state must equal an uninterrupted run's.

Also: the newest *valid* checkpoint is picked (and named), keep-last-K, stale temporary folders from killed
saves are cleaned up, and a non-finite loss stops training without touching the last good checkpoint (or is
skipped with ``train.on_nonfinite=skip``).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import edlm.training.loop as loop
from edlm.checkpoint import (
    STEP_DIR,
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from edlm.cli import main

TEXT = ("call me ishmael some years ago never mind how long precisely having little or no money in my purse "
        "and nothing particular to interest me on shore i thought i would sail about a little ") * 40
MAX_STEPS = 40
SLOW_SAVE = 0.12  # seconds slept at each of the four pauses inside save_checkpoint (EDLM_TEST_SLOW_SAVE)
KILL_PLAN = ("during_save", "after_resume", "during_save", "after_resume", "during_save", "after_resume")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from edlm.data import prepare_corpus

    root = tmp_path_factory.mktemp("crash")
    (root / "text.txt").write_text(TEXT)
    prepare_corpus("files", root / "data", root / "text.txt")
    return root / "data"


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--preset", "char-tiny", "--out", str(out), "--device", "cpu",
            "--no-progress", "--max-steps", str(MAX_STEPS), *extra, "train.precision=fp32", "train.ckpt_every=5",
            "train.keep_checkpoints=2", "train.log_every=1", "train.eval_every=20"]


def start(args: list[str], log: Path, slow_save: float | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("EDLM_TEST_SLOW_SAVE", None)
    if slow_save:
        env["EDLM_TEST_SLOW_SAVE"] = str(slow_save)
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", "edlm"] + args, stdout=handle, stderr=subprocess.STDOUT,
                                env=env)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll every 2 ms; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("timed out waiting for the training process")


def losses(run: Path) -> list[tuple[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [(row["step"], row["loss"]) for row in csv.DictReader(handle)]


def max_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_sigkill_at_random_moments_then_resume(corpus, tmp_path):
    rng = random.Random(20250214)
    reference, run = tmp_path / "reference", tmp_path / "killed"
    straight = start(train_args(corpus, reference), tmp_path / "reference.log")
    assert straight.wait(timeout=120) == 0, (tmp_path / "reference.log").read_text()

    kills, resumes_ok, corrupt, killed_inside_save = 0, 0, 0, 0
    for attempt, plan in enumerate(KILL_PLAN):
        log = tmp_path / f"attempt-{attempt}.log"
        newest_before = list_checkpoints(run)[-1] if list_checkpoints(run) else None
        start_step = int(newest_before.name[5:]) if newest_before else 0
        metrics_file = run / "metrics.csv"
        old_inode = metrics_file.stat().st_ino if metrics_file.exists() else None
        proc = start(train_args(corpus, run, *(["--resume"] if attempt else [])), log,
                     slow_save=SLOW_SAVE if plan == "during_save" else None)
        if attempt:  # every resume names the newest valid checkpoint (or says there is none yet)
            said = "resuming from" if newest_before else "no checkpoint in"
            assert wait_for(lambda: said in log.read_text(), proc), log.read_text()
            line = next(line for line in log.read_text().splitlines() if said in line)
            assert newest_before is None or f"resuming from {newest_before} " in line, (line, newest_before)
            resumes_ok += 1
        if plan == "during_save":  # wait for the temporary folder of this process's 1st-3rd save, kill inside it
            target = min(start_step + 5 * rng.randint(1, 3), MAX_STEPS)

            def in_save() -> bool:
                return any(p.name.endswith(f".tmp-{proc.pid}") and int(p.name[5:13]) >= target
                           for p in run.glob("checkpoints/*"))
            assert wait_for(in_save, proc), log.read_text()
            time.sleep(rng.uniform(0.0, 3 * SLOW_SAVE))  # the save sleeps 3 x SLOW_SAVE before its rename
        else:  # mid-training: after 1-4 new optimiser steps (before the next checkpoint), within 5 ms
            target = start_step + rng.randint(1, 4)

            def trained() -> bool:  # this process's metrics.csv (a new file after the resume's truncation)
                if not metrics_file.exists() or metrics_file.stat().st_ino == old_inode:
                    return False
                return any(step.isdigit() and int(step) >= target for step, _ in losses(run))
            assert wait_for(trained, proc), log.read_text()
            time.sleep(rng.uniform(0.0, 0.005))
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        killed_inside_save += any(p.name.endswith(f".tmp-{proc.pid}") for p in run.glob("checkpoints/*"))
        # after every kill: each step-* folder is a complete, verified checkpoint; temporary ones are never loaded
        for path in list_checkpoints(run):
            try:
                load_checkpoint(path)
            except CheckpointError:
                corrupt += 1
        newest = latest_valid_checkpoint(run)
        assert newest is None or STEP_DIR.match(newest.path.name)

    final_log = tmp_path / "final.log"
    final = start(train_args(corpus, run, "--resume"), final_log)
    assert final.wait(timeout=120) == 0, final_log.read_text()
    resumes_ok += "resuming from" in final_log.read_text()
    expected = load_checkpoint(reference / "checkpoints" / "step-00000040")
    got = load_checkpoint(run / "checkpoints" / "step-00000040")
    differences = [max_difference(expected.model, got.model), max_difference(expected.ema, got.ema)]
    differences += [max_difference(state, got.optimizer["state"][param_id])
                    for param_id, state in expected.optimizer["state"].items()]
    print(f"kill test: {kills} kills ({killed_inside_save} inside a checkpoint write, the others mid-training), "
          f"{resumes_ok} resumes ok, "
          f"{corrupt} corrupt checkpoints, max |final - uninterrupted| over weights/EMA/AdamW = {max(differences)}")
    assert kills == len(KILL_PLAN) and killed_inside_save == KILL_PLAN.count("during_save")
    assert resumes_ok == kills and corrupt == 0
    assert not [p for p in run.glob("checkpoints/*") if not STEP_DIR.match(p.name)], "stale temporary folders"
    assert [p.name for p in list_checkpoints(run)] == ["step-00000035", "step-00000040"]
    assert max(differences) <= 1e-6
    assert losses(run) == losses(reference)  # the metrics log continues exactly, no repeated or torn rows


# ----------------------------------------------------------------------------------------------------------
# in-process checks (fast)


def cli_train(corpus: Path, out: Path, *extra: str) -> int:
    return main(train_args(corpus, out, *extra))


def test_resume_skips_a_corrupted_newest_checkpoint_and_says_so(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_train(corpus, run, "--max-steps", "10") == 0
    newest = run / "checkpoints" / "step-00000010" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli_train(corpus, run, "--max-steps", "15", "--resume") == 0
    out = capsys.readouterr().out
    assert f"skipping invalid checkpoint: {newest}: checksum mismatch" in out
    assert f"resuming from {run / 'checkpoints' / 'step-00000005'} (step 5)" in out
    for path in list_checkpoints(run):  # step 10 was redone and replaced the corrupt one
        load_checkpoint(path)


def test_resume_with_no_valid_checkpoint_is_a_clear_error(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_train(corpus, run, "--max-steps", "10") == 0
    for path in list_checkpoints(run):
        (path / "state.json").write_text("{")
    capsys.readouterr()
    assert cli_train(corpus, run, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edlm: error: no valid checkpoint among the 2 in ")
    assert "state.json: not valid JSON" in err[0]


def test_keep_last_k_and_stale_scratch_folders_are_removed(corpus, tmp_path):
    run = tmp_path / "run"
    assert cli_train(corpus, run, "--max-steps", "10") == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = run / "checkpoints"
    # a complete-looking temporary folder of a killed save, with a higher step: never loaded, then deleted
    shutil.copytree(root / "step-00000010", root / f"step-00000099.tmp-{dead.pid}")
    shutil.copytree(root / "step-00000005", root / f"step-00000001.del-{dead.pid}")
    alive = root / f"step-00000098.tmp-{os.getppid()}"  # another live process's save in progress: left alone
    alive.mkdir()
    assert latest_valid_checkpoint(run).path == root / "step-00000010"
    assert cli_train(corpus, run, "--max-steps", "20", "--resume") == 0
    assert sorted(p.name for p in root.iterdir()) == ["step-00000015", "step-00000020", alive.name]


def poisoned_objective(monkeypatch, bad_calls: set[int]):
    """Make the objective return NaN on the given (0-based) calls, i.e. at those training steps."""
    real = loop.make_objective
    calls = {"n": 0}

    def make(config, denoiser=None):
        objective = real(config, denoiser)

        def wrapped(model, batch):
            per_sequence, extras = objective(model, batch)
            calls["n"] += 1
            if calls["n"] - 1 in bad_calls:
                per_sequence = per_sequence * float("nan")
            return per_sequence, extras
        return wrapped

    monkeypatch.setattr(loop, "make_objective", make)


def test_nonfinite_loss_stops_and_leaves_the_last_checkpoint_untouched(corpus, tmp_path, monkeypatch, capsys):
    clean, run = tmp_path / "clean", tmp_path / "run"
    assert cli_train(corpus, clean, "--max-steps", "5") == 0
    poisoned_objective(monkeypatch, {7})  # step 7 (0-based): after the step-5 checkpoint
    capsys.readouterr()
    assert cli_train(corpus, run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edlm: error: non-finite loss (nan) or gradient norm (nan) at "
                                               "step 7; stopped without saving")
    assert [p.name for p in run.glob("checkpoints/*")] == ["step-00000005"]
    good, expected = load_checkpoint(run / "checkpoints" / "step-00000005"), latest_valid_checkpoint(clean)
    assert good.step == 5 and max_difference(good.model, expected.model) == 0.0


def test_nonfinite_loss_is_skipped_when_configured(corpus, tmp_path, monkeypatch, capsys):
    poisoned_objective(monkeypatch, {3})
    assert cli_train(corpus, tmp_path / "run", "--max-steps", "8", "train.on_nonfinite=skip") == 0
    assert "step 3: non-finite loss or gradient, step skipped" in capsys.readouterr().out
    checkpoint = latest_valid_checkpoint(tmp_path / "run")
    assert checkpoint.step == 8
    assert all(torch.isfinite(v).all() for v in checkpoint.model.values())
    assert "4" not in [step for step, _ in losses(tmp_path / "run")]  # the row step 3 -> 4 would have written
