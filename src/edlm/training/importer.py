"""Import MDLM weights (kuleshov-group/mdlm) into an edlm run folder: ``edlm import-mdlm``.

This is the only place in edlm that reads a pickle-based file, and it reads it only with PyTorch's
weights-only loader (``weights_only=True``, map_location cpu): a restricted unpickler, which builds
tensors, numbers, strings and plain containers and refuses every other global, so loading never runs code
from the file. A file that holds other Python objects is refused (exit 2). A ``.safetensors`` file (e.g. the
Hugging Face release of MDLM, whose keys carry the same ``backbone.`` prefix) is read with safetensors.

Key mapping. MDLM's ``DIT`` backbone uses the parameter names of ``edlm.models.transformer.Transformer``:
``vocab_embed.embedding``, ``sigma_map.mlp.{0,2}``, ``blocks.N.{norm1, attn_qkv, attn_out, norm2, mlp.0, mlp.2,
adaLN_modulation}``, ``output_layer.{norm_final, linear, adaLN_modulation}``. A Lightning checkpoint stores them
under ``state_dict`` with the prefix ``backbone.``, which is removed; ``rotary_emb.inv_freq`` (a buffer that
edlm recomputes) is dropped. MDLM keeps its EMA as ``ema.shadow_params``, a list in ``backbone.parameters()``
order, which is the order of ``Transformer.parameters()``; it becomes the run's EMA weights when the count and
every shape agree, otherwise the raw weights are used as EMA too (a note says so).

Sizes inferred from shapes: vocab_size (rows - 1; the last row is [MASK]), hidden, n_layers, cond_dim,
mlp_ratio. Not inferable, taken from ``--preset`` and overrides: n_heads, seq_len, time_conditioning.
The importer maps weights only: it does not remap vocabularies. MDLM's public checkpoints use their own
tokenizers (GPT-2 BPE for OpenWebText), so edlm's 27-symbol character pipeline can only use an import whose
vocabulary is edlm's (ids 0-25 a-z, 26 space, 27 [MASK]).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch

from edlm.config import ModelConfig, RunConfig, apply_overrides, get_preset
from edlm.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
from edlm.fileio import write_json_atomic

PREFIX = "backbone."
DROPPED = ("rotary_emb.inv_freq",)  # buffers edlm recomputes
FREQ_DIM = 256  # TimestepEmbedder input size (same in MDLM)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def read_checkpoint_file(path: Path) -> tuple[dict[str, torch.Tensor], list[torch.Tensor] | None, int]:
    """Read weights from a Lightning/PyTorch checkpoint (weights_only) or a safetensors file.

    Returns (state dict with the ``backbone.`` prefix removed, EMA shadow list or None, global step or 0).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--ckpt {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _strip_prefix(load_file(str(path)), path), None, 0
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(f"--ckpt {path}: unreadable safetensors file ({error})") from None
    try:
        with warnings.catch_warnings():  # keep the CLI's error to one line
            warnings.simplefilter("ignore")
            # The one pickle read in edlm: restricted to tensors and plain containers, never runs code.
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        hint = "Extract the weights into a .safetensors file in an environment you trust and import that"
        unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsupported:
            raise CheckpointError(
                f"--ckpt {path}: refused: it contains a Python object other than tensors and plain containers "
                f"({unsupported.group(1)}); unpickling it could run code, so edlm does not. {hint}") from None
        if type(error).__name__ == "UnpicklingError":
            detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
            raise CheckpointError(
                f"--ckpt {path}: refused by PyTorch's weights-only loader "
                f"({detail.group(1).strip() if detail else first_line}); edlm unpickles nothing else. {hint}"
            ) from None
        raise CheckpointError(f"--ckpt {path}: not a readable PyTorch checkpoint ({first_line})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"--ckpt {path}: expected a dict of tensors, found {type(content).__name__}")
    state = content.get("state_dict", content)
    if not isinstance(state, dict):
        raise CheckpointError(f"--ckpt {path}: 'state_dict' is a {type(state).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    ema = content.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if shadow is not None and not (isinstance(shadow, (list, tuple)) and all(torch.is_tensor(t) for t in shadow)):
        shadow = None
    step = content.get("global_step", 0)
    return _strip_prefix(tensors, path), None if shadow is None else list(shadow), step if isinstance(step, int) else 0


def _strip_prefix(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Keep the backbone's tensors under our names: drop ``backbone.`` (if any key has it) and recomputed buffers."""
    if any(k.startswith(PREFIX) for k in tensors):
        tensors = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    tensors = {k: v for k, v in tensors.items() if k not in DROPPED}
    if "vocab_embed.embedding" not in tensors:
        raise CheckpointError(f"--ckpt {path}: no MDLM backbone weights found (looked for "
                              f"'backbone.vocab_embed.embedding' or 'vocab_embed.embedding')")
    return tensors


def infer_model_config(weights: dict[str, torch.Tensor], base: ModelConfig, source: Path) -> ModelConfig:
    """Sizes from tensor shapes; n_heads, seq_len and time conditioning from ``base``."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in weights:
            raise CheckpointError(f"--ckpt {source}: missing tensor {PREFIX}{key}")
        return tuple(weights[key].shape)

    rows, hidden = shape("vocab_embed.embedding")
    cond_dim, freq_dim = shape("sigma_map.mlp.0.weight")
    if freq_dim != FREQ_DIM:
        raise CheckpointError(f"--ckpt {source}: sigma_map.mlp.0.weight has input size {freq_dim}, edlm uses "
                              f"{FREQ_DIM}")
    n_layers = len({int(m.group(1)) for k in weights if (m := _BLOCK.match(k))})
    if n_layers == 0:
        raise CheckpointError(f"--ckpt {source}: no transformer blocks (blocks.N.*) found")
    mlp_ratio = shape("blocks.0.mlp.0.weight")[0] // hidden
    return dataclasses.replace(base, kind="mdlm", vocab_size=rows - 1, hidden=hidden, n_layers=n_layers,
                               cond_dim=cond_dim, mlp_ratio=mlp_ratio)


def import_mdlm(ckpt: str | Path, out: str | Path, preset: str = "text8-paper",
                overrides: list[str] | None = None) -> tuple[RunConfig, list[str]]:
    """Write an edlm run folder ``out`` (config.json + checkpoints/step-N) from an MDLM checkpoint.

    Everything is checked in memory first; the folder is assembled beside ``out`` and renamed into place, so
    a failure leaves nothing behind. Returns (config, notes for the user).
    """
    from edlm.models import build_model

    ckpt, out = Path(ckpt), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "holds checkpoints" if list_checkpoints(out) else "is not an empty folder"
        raise CheckpointError(f"--out {out}: {what}; choose a new folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise CheckpointError(f"--out {out}: not writable ({probe} is not a writable folder)")
    weights, shadow, step = read_checkpoint_file(ckpt)
    config = get_preset(preset)
    config = dataclasses.replace(config, model=infer_model_config(weights, config.model, ckpt))
    config = apply_overrides(config, list(overrides or []))  # validates (e.g. hidden divisible by n_heads)
    model = build_model(config.model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"--ckpt {ckpt}: tensors do not match an edlm Transformer (missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in expected.items():
        if weights[key].shape != value.shape:
            raise CheckpointError(f"--ckpt {ckpt}: {PREFIX}{key} has shape {tuple(weights[key].shape)}, "
                                  f"expected {tuple(value.shape)} for the inferred config")
    model.load_state_dict(weights)
    notes = [f"inferred vocab_size={config.model.vocab_size}, hidden={config.model.hidden}, "
             f"n_layers={config.model.n_layers}, cond_dim={config.model.cond_dim}, "
             f"mlp_ratio={config.model.mlp_ratio}; from --preset {preset}: n_heads={config.model.n_heads}, "
             f"seq_len={config.model.seq_len}"]
    ema = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    params = list(model.named_parameters())
    if shadow is not None and len(shadow) == len(params) and all(
            s.shape == p.shape for s, (_, p) in zip(shadow, params)):
        ema.update({name: s.detach().float().clone() for s, (name, _) in zip(shadow, params)})
        notes.append("EMA weights taken from ema.shadow_params")
    else:
        notes.append("no usable EMA in the file" + ("" if shadow is None else
                     f" ({len(shadow)} shadow tensors for {len(params)} parameters)")
                     + "; the EMA weights are the raw weights")

    staging = out.with_name(f".{out.name}.import-{os.getpid()}")
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        write_json_atomic(staging / "config.json", json.loads(config.to_json()))
        source = {"file": str(ckpt), "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
        save_checkpoint(staging, step, model.state_dict(), ema, None,
                        {"history": {}, "preset": config.preset, "imported_from": source}, keep=1)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"--out {out}: cannot write ({error.strerror or error})") from None
        raise
    return config, notes
