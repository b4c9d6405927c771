"""Run folders and checkpoints: weights in safetensors, everything else in JSON, written atomically (no pickle).

Layout of a run folder::

    RUN/config.json                      RunConfig (written once, checked on resume)
    RUN/metrics.csv                      training metrics
    RUN/checkpoints/step-00000500/       one complete checkpoint
        model.safetensors  ema.safetensors  optimizer.safetensors  state.json

A checkpoint is first written to ``step-XXXXXXXX.tmp-PID``, every file fsynced, then renamed in one
``os.replace``: a crash at any moment leaves either no checkpoint or a complete one. ``state.json`` holds
the sha256 of every weight file and is written last; loading verifies all of them, and the tensor names and
shapes against the run's ``config.json``. Old checkpoints are removed by renaming them to
``step-XXXXXXXX.del-PID`` first (so a crash mid-delete never leaves a half-deleted ``step-*`` folder);
``.tmp-PID``/``.del-PID`` folders of processes that no longer exist are deleted by the next save.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edlm.config import ConfigError, RunConfig
from edlm.errors import EdlmError
from edlm.fileio import FileFormatError, read_json, sha256_file, write_json_atomic
from edlm.models import build_model

STEP_DIR = re.compile(r"^step-(\d{8})$")
SCRATCH_DIR = re.compile(r"^step-\d{8}\.(?:tmp|del)-(\d+)$")  # unfinished save / pending delete of process PID
WEIGHT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors")
FORMAT_VERSION = 1


class CheckpointError(EdlmError, RuntimeError):
    """A missing, truncated, corrupted or incompatible checkpoint; the message names the file."""




def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _test_pause() -> None:
    """Test hook: ``EDLM_TEST_SLOW_SAVE=seconds`` sleeps between the steps of a save, so that the kill test
    (tests/test_crash_resume.py) can land SIGKILLs inside a checkpoint write. Unset in normal use."""
    delay = os.environ.get("EDLM_TEST_SLOW_SAVE")
    if delay:
        time.sleep(float(delay))


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_scratch(root: Path) -> list[Path]:
    """Delete ``.tmp-PID`` / ``.del-PID`` folders whose process is gone (left by a killed save). Returns them."""
    removed = []
    for path in Path(root).iterdir() if Path(root).is_dir() else []:
        match = SCRATCH_DIR.match(path.name)
        if match and path.is_dir() and not _process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _remove_checkpoint(path: Path) -> None:
    """Rename to ``.del-PID`` (atomic: the ``step-*`` folder disappears whole), then delete."""
    doomed = path.with_name(f"{path.name}.del-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


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
    """Write ``RUN/checkpoints/step-XXXXXXXX`` atomically and prune to the newest ``keep``. Returns its path.

    An OSError (disk full, permissions) becomes a CheckpointError naming the folder; the temporary folder is
    removed and the earlier checkpoints are left as they were.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_scratch(root)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as error:
        raise CheckpointError(f"{final}: cannot write checkpoint ({error.strerror or error})") from None
    try:
        contiguous = lambda d: {k: v.detach().contiguous().cpu() for k, v in d.items()}  # noqa: E731
        save_file(contiguous(model), str(tmp / "model.safetensors"))
        _test_pause()
        save_file(contiguous(ema), str(tmp / "ema.safetensors"))
        opt_tensors, opt_meta = flatten_optimizer(optimizer) if optimizer is not None else ({}, None)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        _test_pause()
        for name in WEIGHT_FILES:
            with open(tmp / name, "rb+") as handle:
                os.fsync(handle.fileno())
        full_state = dict(state, step=step, format_version=FORMAT_VERSION, optimizer=opt_meta,
                          sha256={name: sha256_file(tmp / name) for name in WEIGHT_FILES})
        write_json_atomic(tmp / "state.json", full_state)
        _fsync_dir(tmp)
        _test_pause()
        if final.exists():
            _remove_checkpoint(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"{final}: cannot write checkpoint ({error.strerror or error}); nothing "
                                  f"partial was kept, earlier checkpoints are intact") from None
        raise
    _test_pause()
    for old in list_checkpoints(run_dir)[:-keep]:
        _remove_checkpoint(old)
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
        state = read_json(state_file, "checkpoint state (incomplete checkpoint)")
    except FileFormatError as error:
        raise CheckpointError(str(error)) from None
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
    config_file = path.parent.parent / "config.json"
    if config_file.is_file():
        _check_shapes(path, load_run_config(path.parent.parent), model, ema)
    return Checkpoint(path, int(state["step"]), model, ema, optimizer, state)


def expected_shapes(model_config) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the network ``model_config`` builds (on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_model(model_config).state_dict().items()}


def check_state_dict(expected: dict[str, tuple[int, ...]], weights: dict[str, torch.Tensor], source: str,
                     against: str, note: str = "") -> None:
    """The one state-dict check: exactly the names of ``expected``, each with its shape.

    Raises ``CheckpointError`` naming ``source`` (the weights) and ``against`` (what defines the shapes).
    """
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not match {against}{note} (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(weights[key].shape)} but {against} gives "
                                  f"{shape}{note}")


def _check_shapes(path: Path, config: RunConfig, model: dict[str, torch.Tensor],
                  ema: dict[str, torch.Tensor]) -> None:
    """The weights must have exactly the tensor names and shapes of ``config.model``."""
    expected = expected_shapes(config.model)
    for name, weights in (("model.safetensors", model), ("ema.safetensors", ema)):
        check_state_dict(expected, weights, str(path / name), str(path.parent.parent / "config.json"),
                         " (incompatible config)")


def latest_valid_checkpoint(run_dir: Path, with_optimizer: bool = True,
                            report=None) -> Checkpoint | None:
    """Newest checkpoint that passes verification; broken ones are reported and skipped.

    None if the run has no checkpoint folder at all; CheckpointError (naming the newest one's defect) if there
    are some but none is valid.
    """
    candidates = list_checkpoints(run_dir)
    first_error = None
    for path in reversed(candidates):
        try:
            return load_checkpoint(path, with_optimizer)
        except CheckpointError as error:
            first_error = first_error or error
            if report is not None:
                report(f"skipping invalid checkpoint: {error}")
    if first_error is not None:
        raise CheckpointError(f"no valid checkpoint among the {len(candidates)} in {Path(run_dir) / 'checkpoints'}"
                              f"; newest: {first_error}")
    return None


def load_run_config(run_dir: Path) -> RunConfig:
    file = Path(run_dir) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; is {run_dir} a run folder made by `edlm train`?")
    try:
        return RunConfig.from_dict(read_json(file, "run config"))
    except FileFormatError as error:
        raise CheckpointError(f"{file}: invalid config ({error})") from None
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{file}: invalid config ({error})") from None


def load_model(run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
               ) -> tuple[RunConfig, torch.nn.Module]:
    """Load a trained model (EMA weights by default) from the newest valid checkpoint of ``run_dir``.

    Returns (config, model in eval mode on ``device``). Raises ``CheckpointError`` naming the folder or file.
    """
    config = load_run_config(Path(run_dir))
    checkpoint = latest_valid_checkpoint(Path(run_dir), with_optimizer=False)
    if checkpoint is None:
        raise CheckpointError(f"{run_dir}: no valid checkpoint in {Path(run_dir) / 'checkpoints'}")
    model = build_model(config.model)
    model.load_state_dict(checkpoint.ema if weights == "ema" else checkpoint.model)  # names/shapes checked on load
    return config, model.to(device).eval()


TOKENIZER_META = "tokenizer_meta.json"


def save_run_tokenizer(run_dir: Path, data_dir: Path) -> None:
    """Keep the data folder's tokenizer with the run (its meta, and for ``bpe:N`` its ``tokenizer.json``), so
    that sampling and evaluation decode and check text without the data folder."""
    from edlm.data import load_meta

    tokenizer = load_meta(data_dir)["tokenizer"]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    if "file" in tokenizer:
        source = Path(data_dir) / tokenizer["file"]
        (Path(run_dir) / tokenizer["file"]).write_bytes(source.read_bytes())
    write_json_atomic(Path(run_dir) / TOKENIZER_META, tokenizer)


def copy_tokenizer_files(source: Path, dest: Path, config: RunConfig | None = None) -> list[str]:
    """Copy a run's tokenizer files (``tokenizer_meta.json`` and, for ``bpe:N``, the ``tokenizer.json`` it names)
    from folder ``source`` to ``dest``; returns the names copied. A char run from before these files existed gets
    the char description (``config`` given); other folders without them copy nothing."""
    meta_file = Path(source) / TOKENIZER_META
    if meta_file.is_file():
        meta = read_json(meta_file, "tokenizer description")
        names = [str(meta["file"])] if "file" in meta else []
        for name in names:
            shutil.copyfile(Path(source) / name, Path(dest) / name)
        write_json_atomic(Path(dest) / TOKENIZER_META, meta)
        return names + [TOKENIZER_META]
    if config is not None and config.model.tokenizer == "char":
        from edlm.data.tokenizers import CHAR_META

        write_json_atomic(Path(dest) / TOKENIZER_META, CHAR_META)
        return [TOKENIZER_META]
    return []


def load_run_tokenizer(run_dir: Path, config: RunConfig):
    """The tokenizer a run was trained with: from ``RUN/tokenizer_meta.json`` (fingerprint-checked), else by the
    name in its config (char, gpt2). Raises ``CheckpointError`` when a trained ``bpe:N`` file is missing."""
    from edlm.data.tokenizers import get_tokenizer, tokenizer_from_meta
    from edlm.fileio import read_json

    meta_file = Path(run_dir) / TOKENIZER_META
    if meta_file.is_file():
        return tokenizer_from_meta(read_json(meta_file, "tokenizer description"), run_dir)
    if config.model.tokenizer.startswith("bpe"):
        raise CheckpointError(f"{meta_file}: missing; a {config.model.tokenizer} run needs its tokenizer files "
                              f"(copy tokenizer.json and tokenizer_meta.json from the data folder)")
    return get_tokenizer(config.model.tokenizer)


def publish_folder(out: Path, fill, what: str) -> None:
    """Create the new folder ``out`` whole or not at all: ``fill(staging)`` writes into a hidden folder beside
    ``out``, which is then renamed into place (an empty ``out`` is replaced). Any failure removes the staging
    folder; an OS error becomes a ``CheckpointError`` naming ``what`` (e.g. ``--out runs/x``)."""
    out = Path(out)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        fill(staging)
        if out.exists():
            out.rmdir()  # empty (the callers check before)
        os.replace(staging, out)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"{what}: cannot write ({error.strerror or error})") from None
        raise
