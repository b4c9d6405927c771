"""edlm.parallel: sharding by whole batches, and gathering on rank 0 in rank order (2 gloo processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edlm.parallel import gather_to_rank0, shard


@pytest.mark.parametrize("n_items", [0, 1, 7, 16, 33])
@pytest.mark.parametrize("batch_size", [1, 4, 5])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_contiguous_whole_batches_covering_everything(n_items, batch_size, world):
    ranges = [shard(n_items, rank, world, batch_size) for rank in range(world)]
    assert [i for r in ranges for i in r] == list(range(n_items))  # in order, each item once
    for r in ranges:  # every shard starts on a batch boundary of the one-process run
        assert r.start % batch_size == 0 or r.start == n_items
    batches = [-(-len(r) // batch_size) for r in ranges]
    assert max(batches) - min(batches) <= 1  # balanced to within one batch


def test_one_process_gathers_itself():
    assert gather_to_rank0({"a": 1}) == [{"a": 1}]


SCRIPT = textwrap.dedent("""
    import json, sys
    from edlm.parallel import cleanup, gather_to_rank0, init_from_env, shard

    info = init_from_env("cpu")
    mine = shard(23, info.rank, info.world, batch_size=4)
    gathered = gather_to_rank0([f"sample {i} from rank {info.rank}" for i in mine])
    if info.is_main:
        with open(sys.argv[1], "w") as handle:
            json.dump({"world": info.world, "gathered": gathered}, handle)
    else:
        assert gathered is None
    cleanup()
""")


@pytest.mark.slow
def test_two_gloo_processes_gather_in_order(tmp_path):
    script, out = tmp_path / "gather.py", tmp_path / "out.json"
    script.write_text(SCRIPT)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["world"] == 2
    flat = [line for part in record["gathered"] for line in part]
    assert [int(line.split()[1]) for line in flat] == list(range(23))
    # ranks 0 and 1 hold 3 batches of 4 (items 0-11) and the rest (12-22)
    assert [line.split()[-1] for line in flat] == ["0"] * 12 + ["1"] * 11
