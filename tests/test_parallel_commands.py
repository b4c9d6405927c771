"""``edlm sample | eval | eval-gen`` under torchrun (2 gloo processes on CPU) give the 1-process output.

Each process takes a contiguous block of whole batches (``edlm.parallel.shard``) and every batch's random draws
depend on (seed, batch index) only, so the gathered result is the one-process result: sample texts identical,
likelihood and judge figures equal up to float rounding (1e-9 relative; the same batches run the same
arithmetic, only the final means are summed in another grouping).
The uneven splits (5 items in batches of 2: ranks hold 4 and 1) check the batch boundaries. The in-process
tests check the pieces (per-batch seeding of the NELBO and the EDLM estimators, AR rows, stats merging)
without launching processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edlm.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
RTOL = 1e-9


def torchrun(args: list[str], nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node NPROC -m edlm -- ARGS`` (gloo on CPU).

    The "--" is needed: torchrun would read edlm's --run and --num as abbreviations of its own --run-path and
    --numa-binding (and fail); edlm drops a leading "--"."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "edlm", "--", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def in_process(args: list[str], capsys) -> str:
    """The one-process run (plain ``edlm ARGS``, no process group): its stdout."""
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def assert_close(a, b, path: str = "") -> None:
    """Equal JSON values, floats to RTOL (nan equals nan)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (path, sorted(set(a) ^ set(b)))
        for key in a:
            assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for index, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{index}]")
    elif isinstance(a, float) and not isinstance(b, str):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """A char-tiny MDLM denoiser and a char-tiny AR model (3 training steps each) on the tiny corpus."""
    root = tmp_path_factory.mktemp("parallel_commands")
    for kind in ("mdlm", "ar"):
        assert main(["train", "--data", str(tiny_data), "--preset", "char-tiny", "--model", kind, "--out",
                     str(root / kind), "--max-steps", "3", "--device", "cpu", "--no-progress",
                     "train.precision=fp32"]) == 0
    return {"root": root, "data": tiny_data, "mdlm": root / "mdlm", "ar": root / "ar"}


# ----------------------------------------------------------------------------------------------------------
# in process: the pieces


def test_nelbo_of_a_shard_equals_those_rows_of_the_whole_split(runs):
    from edlm.checkpoint import load_model
    from edlm.data import eval_chunks, load_split
    from edlm.diffusion.schedule import schedule_for
    from edlm.likelihood.nelbo import mdlm_nelbo_per_sequence

    config, model = load_model(runs["mdlm"], device="cpu")
    chunks = eval_chunks(load_split(runs["data"], "test"), config.model.seq_len)[:7]
    nelbo = lambda x, first: mdlm_nelbo_per_sequence(model, x, schedule_for(config),  # noqa: E731
                                                     config.model.mask_id, 2, 2, 5, first_batch=first)
    whole = nelbo(chunks, 0)
    assert torch.equal(torch.cat([nelbo(chunks[:4], 0), nelbo(chunks[4:], 2)]), whole)
    assert not torch.equal(nelbo(chunks[4:], 0), whole[4:])  # the draws do depend on the batch index


def test_edlm_estimators_of_a_shard_equal_those_rows_of_the_whole_split(runs):
    from edlm.checkpoint import load_model
    from edlm.config import LikelihoodConfig
    from edlm.data import eval_chunks, load_split
    from edlm.energy import make_energy
    from edlm.likelihood.report import edlm_per_sequence

    config, model = load_model(runs["mdlm"], device="cpu")
    chunks = eval_chunks(load_split(runs["data"], "test"), config.model.seq_len)[:5]
    settings = LikelihoodConfig(batch_size=2, steps=4, inner=2, is_samples=2, t_samples=1)
    energy = make_energy(f"ar:{runs['ar']}", config.model, "full", "cpu", "fp32")
    whole = edlm_per_sequence(settings, config, model, chunks, energy)
    parts = [edlm_per_sequence(settings, config, model, chunks[:4], energy, 0),
             edlm_per_sequence(settings, config, model, chunks[4:], energy, 4)]
    assert set(whole) == {"paper_estimate", "paper_estimate.ess", "paper_estimate_jackknife",
                          "paper_estimate_jackknife.ess", "bound", "mdlm_discrete_nelbo", "mdlm_nelbo", "ar_nll"}
    for name, values in whole.items():
        assert values.shape == (5,) and values.dtype == torch.float64
        torch.testing.assert_close(torch.cat([part[name] for part in parts]), values, rtol=1e-12, atol=1e-12,
                                   equal_nan=True)


def test_ar_rows_equal_those_rows_of_a_full_run(runs):
    from edlm.checkpoint import load_model
    from edlm.sampling.ar import generate_ar

    config, model = load_model(runs["ar"], device="cpu")
    whole, stats = generate_ar(model, config, 5, 20, seed=3, batch_size=2)
    first, _ = generate_ar(model, config, 5, 20, seed=3, batch_size=2, rows=range(0, 4))
    last, last_stats = generate_ar(model, config, 5, 20, seed=3, batch_size=2, rows=range(4, 5))
    assert first + last == whole and len(whole) == 5
    assert last_stats["nfe"] < stats["nfe"]


def test_merged_sample_stats_count_all_the_work():
    from edlm.sampling.generate import merge_sample_stats

    parts = [(4, {"nfe": 10, "nfe_per_sequence": 5.0, "energy_calls": 3, "prompt": "ab", "cached": True}),
             (1, {"nfe": 4, "nfe_per_sequence": 10.0, "energy_calls": 1, "prompt": "ab", "cached": True}),
             (0, {"nfe": 0, "nfe_per_sequence": 0.0, "energy_calls": 0, "prompt": "ab", "cached": True})]
    merged = merge_sample_stats(parts)
    assert merged == {"nfe": 14, "nfe_per_sequence": pytest.approx(6.0), "energy_calls": 4, "prompt": "ab",
                      "cached": True}
    assert merge_sample_stats(parts[:1]) == parts[0][1]


def test_an_empty_shard_samples_nothing(runs):
    from edlm.checkpoint import load_model
    from edlm.sampling import SampleConfig
    from edlm.sampling.generate import generate

    config, model = load_model(runs["mdlm"], device="cpu")
    texts, result = generate(model, config, SampleConfig(num=2, batch_size=2, steps=2), batches=range(0))
    assert texts == [] and result.tokens.shape == (0, config.model.seq_len) and result.nfe == 0


# ----------------------------------------------------------------------------------------------------------
# 2 processes vs 1


@pytest.mark.slow
def test_sample_with_an_energy_on_two_processes_gives_the_one_process_samples(runs, capsys):
    args = ["sample", "--run", str(runs["mdlm"]), "--energy", f"ar:{runs['ar']}", "--num", "5", "--batch-size",
            "2", "--steps", "6", "--k", "2", "--window", "1.0", "--seed", "11", "--device", "cpu"]
    one_file, two_file = runs["root"] / "one.json", runs["root"] / "two.json"
    in_process(args + ["--out", str(one_file)], capsys)
    result = torchrun(args + ["--out", str(two_file), "--json"])
    one, two = json.loads(one_file.read_text()), json.loads(two_file.read_text())
    assert len(one["samples"]) == 5 and two["samples"] == one["samples"]
    assert result.stdout.count('"samples"') == 1  # only rank 0 prints
    for key in ("nfe", "energy_calls", "energy_rows"):
        assert two[key] == one[key] > 0, key
    assert two["nfe_per_sequence"] == pytest.approx(one["nfe_per_sequence"], rel=1e-12)
    assert two["processes"] == 2 and len(two["process_seconds"]) == 2 and "processes" not in one
    assert two["seconds"] >= max(two["process_seconds"])  # wall clock of the job


def edlm_command(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m edlm ARGS`` as a user types it (no torchrun in front)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_NUM_THREADS", None)  # as a user's shell: the launcher sets one thread per worker
    result = subprocess.run([sys.executable, "-m", "edlm", *args], capture_output=True, text=True, env=env,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_nproc_launches_the_workers_itself_and_gives_the_one_process_samples(runs, capsys):
    """``edlm sample --run R --nproc 2``: the plain form (torchrun in front of it took --run for its --run-path);
    edlm starts the 2 gloo workers itself and they write the one-process samples; eval likewise."""
    args = ["sample", "--run", str(runs["mdlm"]), "--num", "5", "--batch-size", "2", "--steps", "4", "--seed", "3",
            "--device", "cpu"]
    one_file, two_file = runs["root"] / "nproc-one.json", runs["root"] / "nproc-two.json"
    in_process(args + ["--out", str(one_file)], capsys)
    edlm_command(args + ["--nproc", "2", "--out", str(two_file)])
    one, two = json.loads(one_file.read_text()), json.loads(two_file.read_text())
    assert len(one["samples"]) == 5 and two["samples"] == one["samples"] and two["processes"] == 2
    args = ["eval", "--run", str(runs["mdlm"]), "--data", str(runs["data"]), "--max-sequences", "5",
            "--batch-size", "2", "--t-samples", "2", "--seed", "7", "--device", "cpu", "--json"]
    lines = edlm_command(args + ["--nproc", "2"]).stdout.strip().splitlines()
    assert len(lines) == 1  # only rank 0 prints
    assert_close(json.loads(lines[0]), json.loads(in_process(args, capsys)))


@pytest.mark.slow
@pytest.mark.parametrize("energy", [[], ["--energy", "ar:{ar}", "--energy-mode", "full"]], ids=["nelbo", "edlm"])
def test_eval_on_two_processes_gives_the_one_process_figures(runs, capsys, energy):
    args = ["eval", "--run", str(runs["mdlm"]), "--data", str(runs["data"]), "--max-sequences", "5",
            "--batch-size", "2", "--t-samples", "2", "--steps", "4", "--inner", "2", "--is-samples", "2",
            "--seed", "7", "--device", "cpu", "--json"] + [a.format(ar=runs["ar"]) for a in energy]
    one = json.loads(in_process(args, capsys))
    result = torchrun(args)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # only rank 0 prints
    two = json.loads(lines[0])
    assert one["sequences"] == 5 and one["kind"] == ("edlm_likelihood" if energy else "mdlm_nelbo_upper_bound")
    assert_close(two, one)


@pytest.mark.slow
def test_eval_gen_on_two_processes_gives_the_one_process_scores(runs, capsys):
    samples = runs["root"] / "samples.json"
    in_process(["sample", "--run", str(runs["mdlm"]), "--num", "5", "--steps", "4", "--seed", "2", "--device",
                "cpu", "--out", str(samples)], capsys)
    args = ["eval-gen", "--samples", str(samples), "--judge", f"run:{runs['ar']}", "--batch-size", "2",
            "--bootstrap", "200", "--device", "cpu", "--json"]
    one = json.loads(in_process(args, capsys))
    lines = torchrun(args).stdout.strip().splitlines()
    assert len(lines) == 1
    two = json.loads(lines[0])
    assert one["num_samples"] == 5 and len(one["per_sample"]["nll"]) == 5
    assert_close(two, one)
