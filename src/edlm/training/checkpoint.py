"""Checkpoints: weights in safetensors, everything else in JSON, written atomically (notes: no pickle).

Layout of a run folder::

    RUN/config.json                      RunConfig (written once, checked on resume)
    RUN/metrics.csv                      training metrics
    RUN/checkpoints/step-00000500/       one complete checkpoint
        model.safetensors  ema.safetensors  optimizer.safetensors  state.json

A checkpoint is first written to ``step-XXXXXXXX.tmp-PID``, every file fsynced, then renamed in one
``os.replace``: a crash at any moment leaves either no checkpoint or a complete one. ``state.json`` holds
the sha256 of every weight file and is written last; loading verifies all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edlm.config import ConfigError, RunConfig

STEP_DIR = re.compile(r"^step-(\d{8})$")
WEIGHT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors")
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A missing, truncated, corrupted or incompatible checkpoint; the message names the file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            key = f"{param_id}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


@dataclass
class Checkpoint:
    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    state: dict[str, Any]


def save_checkpoint(run_dir: Path, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer | None, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``RUN/checkpoints/step-XXXXXXXX`` atomically and prune to the newest ``keep``. Returns its path."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        contiguous = lambda d: {k: v.detach().contiguous().cpu() for k, v in d.items()}  # noqa: E731
        save_file(contiguous(model), str(tmp / "model.safetensors"))
        save_file(contiguous(ema), str(tmp / "ema.safetensors"))
        opt_tensors, opt_meta = flatten_optimizer(optimizer) if optimizer is not None else ({}, None)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        for name in WEIGHT_FILES:
            with open(tmp / name, "rb+") as handle:
                os.fsync(handle.fileno())
        full_state = dict(state, step=step, format_version=FORMAT_VERSION, optimizer=opt_meta,
                          sha256={name: sha256_file(tmp / name) for name in WEIGHT_FILES})
        write_json_atomic(tmp / "state.json", full_state)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete-looking checkpoint folders, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def load_checkpoint(path: Path, with_optimizer: bool = True) -> Checkpoint:
    """Load and verify one checkpoint folder; raises CheckpointError naming the bad file."""
    path = Path(path)
    state_file = path / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{state_file}: missing (incomplete checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{state_file}: not valid JSON ({error})") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{state_file}: unsupported format_version {state.get('format_version')}")
    for name in WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (incomplete checkpoint)")
        if sha256_file(file) != state["sha256"].get(name):
            raise CheckpointError(f"{file}: checksum mismatch (truncated or corrupted)")
    try:
        model = load_file(str(path / "model.safetensors"))
        ema = load_file(str(path / "ema.safetensors"))
        optimizer = None
        if with_optimizer and state.get("optimizer") is not None:
            optimizer = unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    except Exception as error:  # safetensors raises its own error types on bad headers
        raise CheckpointError(f"{path}: unreadable safetensors file ({error})") from None
    return Checkpoint(path, int(state["step"]), model, ema, optimizer, state)


def latest_valid_checkpoint(run_dir: Path, with_optimizer: bool = True,
                            report=None) -> Checkpoint | None:
    """Newest checkpoint that passes verification; broken ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, with_optimizer)
        except CheckpointError as error:
            if report is not None:
                report(f"skipping invalid checkpoint: {error}")
    return None


def load_run_config(run_dir: Path) -> RunConfig:
    file = Path(run_dir) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; is {run_dir} a run folder made by `edlm train`?")
    try:
        return RunConfig.from_dict(json.loads(file.read_text()))
    except (json.JSONDecodeError, ConfigError, TypeError) as error:
        raise CheckpointError(f"{file}: invalid config ({error})") from None
