"""Import MDLM weights (kuleshov-group/mdlm) into an edlm run folder: ``edlm import-mdlm``.

Two sources:

- ``--hf DIR_OR_NAME``: a local copy of the Hugging Face repository ``kuleshov-group/mdlm-owt`` (``config.json``
  with ``model_type mdlm`` + ``model.safetensors``), or the repo id itself, fetched into (or found in) the
  Hugging Face cache by ``edlm.hub.resolve_hf_folder`` (JSON, safetensors and text files only). Only JSON and
  safetensors are read: the repository's Python code (which needs flash-attn) is never downloaded, imported or
  run. Every size comes from ``config.json``; the tokenizer is
  ``gpt2`` (MDLM-OWT: 50257 GPT-2 tokens + [MASK] = 50258 rows).
- ``--ckpt FILE``: a Lightning ``.ckpt`` or a bare ``.safetensors`` state dict. This is the only place in edlm
  that reads a pickle-based file, and it reads it only with PyTorch's weights-only loader
  (``weights_only=True``, map_location cpu): a restricted unpickler, which builds tensors, numbers, strings and
  plain containers and refuses every other global, so loading never runs code from the file. Sizes are inferred
  from shapes; n_heads, seq_len and time conditioning come from ``--preset`` and overrides.

Key mapping. MDLM's ``DIT`` backbone uses the parameter names of ``edlm.models.transformer.Transformer``
(``MDLM_PARAMETER_NAMES`` lists them in MDLM's order) under the prefix ``backbone.``, which is removed;
``rotary_emb.inv_freq`` (a buffer that edlm recomputes) is checked against edlm's and dropped.

EMA. MDLM's Lightning checkpoint keeps its EMA as ``ema.shadow_params``, a list in the order of
``backbone.parameters()``: it is mapped by position onto ``MDLM_PARAMETER_NAMES``, after checking the count and
every shape (a mismatch is refused: a mis-mapped EMA gives garbled samples). Without an EMA the raw weights are
used as EMA too. The Hugging Face release holds one set of weights, used as both.

The importer maps weights only: it does not remap vocabularies; the run's tokenizer must be the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import warnings
from pathlib import Path

import torch

from edlm.checkpoint import (
    TOKENIZER_META,
    CheckpointError,
    check_state_dict,
    copy_tokenizer_files,
    list_checkpoints,
    publish_folder,
    save_checkpoint,
)
from edlm.config import ConfigError, ModelConfig, RunConfig, apply_overrides, get_preset
from edlm.data import DataError
from edlm.data.tokenizers import tokenizer_from_meta
from edlm.fileio import (
    FileFormatError,
    read_json,
    sha256_file,
    unwritable_ancestor,
    write_json_atomic,
)
from edlm.hub import resolve_hf_folder

PREFIX = "backbone."
ROTARY = "rotary_emb.inv_freq"  # a buffer edlm recomputes (base 10000)
FREQ_DIM = 256  # TimestepEmbedder input size (same in MDLM)
MDLM_MLP_RATIO = 4  # hard-coded in MDLM's DDiTBlock
GPT2_VOCAB = 50257  # GPT-2 BPE tokens; MDLM-OWT adds [MASK] = 50257
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def mdlm_parameter_names(n_layers: int) -> list[str]:
    """MDLM's ``DIT.parameters()`` order (the order of ``ema.shadow_params``), written out from MDLM's modules."""
    block = ["norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight", "mlp.0.weight", "mlp.0.bias",
             "mlp.2.weight", "mlp.2.bias", "adaLN_modulation.weight", "adaLN_modulation.bias"]
    return (["vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias", "sigma_map.mlp.2.weight",
             "sigma_map.mlp.2.bias"]
            + [f"blocks.{i}.{name}" for i in range(n_layers) for name in block]
            + ["output_layer.norm_final.weight", "output_layer.linear.weight", "output_layer.linear.bias",
               "output_layer.adaLN_modulation.weight", "output_layer.adaLN_modulation.bias"])


# ----------------------------------------------------------------------------------------------------------
# reading


def _errors_about(subject: str):
    """The helpers here name the file an error is about; an entry point adds the argument that file came from
    (``subject``, ``ckpt`` or ``hf``) to the errors that lack one, so the command line shows its flag."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except CheckpointError as error:
                if error.subject is not None:
                    raise
                raise CheckpointError(str(error), subject) from None
        return wrapper
    return decorate


def read_checkpoint_file(path: Path) -> tuple[dict[str, torch.Tensor], list[torch.Tensor] | None, int]:
    """Read weights from a Lightning/PyTorch checkpoint (weights_only) or a safetensors file.

    Returns (state dict with the ``backbone.`` prefix removed, EMA shadow list or None, global step or 0).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file", "ckpt")
    if path.suffix == ".safetensors":
        return _strip_prefix(_load_safetensors(path), str(path)), None, 0
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
                f"{path}: refused: it contains a Python object other than tensors and plain containers "
                f"({unsupported.group(1)}); unpickling it could run code, so edlm does not. {hint}", "ckpt") from None
        if type(error).__name__ == "UnpicklingError":
            detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
            raise CheckpointError(
                f"{path}: refused by PyTorch's weights-only loader "
                f"({detail.group(1).strip() if detail else first_line}); edlm unpickles nothing else. {hint}", "ckpt"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line})", "ckpt") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(content).__name__}", "ckpt")
    state = content.get("state_dict", content)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, not a dict of tensors", "ckpt")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    ema = content.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if shadow is not None and not (isinstance(shadow, (list, tuple)) and all(torch.is_tensor(t) for t in shadow)):
        raise CheckpointError(f"{path}: ema.shadow_params is not a list of tensors", "ckpt")
    step = content.get("global_step", 0)
    return (_strip_prefix(tensors, str(path)), None if shadow is None else list(shadow),
            step if isinstance(step, int) else 0)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path}: unreadable safetensors file ({error})") from None


def _strip_prefix(tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Keep the backbone's tensors under our names: drop ``backbone.`` (if any key has it) and the rotary buffer."""
    if any(k.startswith(PREFIX) for k in tensors):
        tensors = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    if "vocab_embed.embedding" not in tensors:
        raise CheckpointError(f"{where}: no MDLM backbone weights found (looked for "
                              f"'backbone.vocab_embed.embedding' or 'vocab_embed.embedding')")
    return tensors


@_errors_about("hf")
def read_hf_folder(hf_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``config.json`` and ``model.safetensors`` of a local MDLM Hugging Face folder (no code is run); ``hf_dir``
    may be a Hub repo id (see ``edlm.hub.resolve_hf_folder``)."""
    hf_dir = resolve_hf_folder(hf_dir, "", CheckpointError, "hf")
    try:
        hf_config = read_json(hf_dir / "config.json", "Hugging Face config")
    except FileFormatError as error:
        raise CheckpointError(f"{error}", "hf") from None
    weights = hf_dir / "model.safetensors"
    if not weights.is_file():
        other = sorted(p.name for p in hf_dir.iterdir() if p.suffix in (".bin", ".pt", ".ckpt", ".json")
                       and p.name != "config.json")
        raise CheckpointError(f"{hf_dir}: no model.safetensors" + (f" (found {', '.join(other)}; edlm reads "
                              f"only a single safetensors file here)" if other else ""), "hf")
    return hf_config, _strip_prefix(_load_safetensors(weights), str(weights))


def model_config_from_hf(hf_config: dict, source: Path) -> ModelConfig:
    """An edlm ``ModelConfig`` from MDLM's Hugging Face ``config.json`` (``vocab_size`` there counts [MASK])."""
    where = f"{source}/config.json"
    if not isinstance(hf_config, dict) or hf_config.get("model_type") != "mdlm":
        found = hf_config.get("model_type") if isinstance(hf_config, dict) else type(hf_config).__name__
        raise CheckpointError(f"{where}: model_type is {found!r}, expected 'mdlm' (kuleshov-group/mdlm-owt)")
    sizes = {}
    for key in ("vocab_size", "model_length", "hidden_dim", "n_blocks", "n_heads", "cond_dim"):
        value = hf_config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{where}: {key} must be a positive integer, found {value!r}")
        sizes[key] = value
    time_conditioning = hf_config.get("time_conditioning", False)
    dropout = hf_config.get("dropout", 0.1)
    if not isinstance(time_conditioning, bool) or not isinstance(dropout, (int, float)):
        raise CheckpointError(f"{where}: time_conditioning must be true/false and dropout a number")
    return ModelConfig(kind="mdlm", vocab_size=sizes["vocab_size"] - 1, seq_len=sizes["model_length"],
                       n_layers=sizes["n_blocks"], hidden=sizes["hidden_dim"], n_heads=sizes["n_heads"],
                       cond_dim=sizes["cond_dim"], mlp_ratio=MDLM_MLP_RATIO, time_conditioning=time_conditioning,
                       dropout=float(dropout))


def infer_model_config(weights: dict[str, torch.Tensor], base: ModelConfig, where: str) -> ModelConfig:
    """Sizes from tensor shapes; n_heads, seq_len and time conditioning from ``base``."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in weights:
            raise CheckpointError(f"{where}: missing tensor {PREFIX}{key}")
        return tuple(weights[key].shape)

    rows, hidden = shape("vocab_embed.embedding")
    cond_dim, freq_dim = shape("sigma_map.mlp.0.weight")
    if freq_dim != FREQ_DIM:
        raise CheckpointError(f"{where}: sigma_map.mlp.0.weight has input size {freq_dim}, edlm uses {FREQ_DIM}")
    n_layers = len({int(m.group(1)) for k in weights if (m := _BLOCK.match(k))})
    if n_layers == 0:
        raise CheckpointError(f"{where}: no transformer blocks (blocks.N.*) found")
    mlp_ratio = shape("blocks.0.mlp.0.weight")[0] // hidden
    return dataclasses.replace(base, kind="mdlm", vocab_size=rows - 1, hidden=hidden, n_layers=n_layers,
                               cond_dim=cond_dim, mlp_ratio=mlp_ratio)


# ----------------------------------------------------------------------------------------------------------
# checking and writing


def load_backbone(config: ModelConfig, weights: dict[str, torch.Tensor], where: str) -> torch.nn.Module:
    """An edlm Transformer holding ``weights`` after checking names, shapes and the rotary buffer (float32)."""
    from edlm.models import build_model

    model = build_model(config)
    rotary = weights.pop(ROTARY, None)
    if rotary is not None and (rotary.shape != model.rotary_emb.inv_freq.shape or not torch.allclose(
            rotary.float(), model.rotary_emb.inv_freq, rtol=1e-5, atol=0)):
        raise CheckpointError(f"{where}: {PREFIX}{ROTARY} differs from edlm's rotary frequencies (base 10000, "
                              f"head size {config.hidden // config.n_heads}); check n_heads")
    expected = {PREFIX + k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(expected, {PREFIX + k: v for k, v in weights.items()}, where,
                     "an edlm Transformer of the config")
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model


def ema_from_shadow(shadow: list[torch.Tensor], model: torch.nn.Module, where: str) -> dict[str, torch.Tensor]:
    """Map MDLM's positional EMA list onto parameter names (MDLM's order), checking count and every shape."""
    names = mdlm_parameter_names(model.config.n_layers)
    params = dict(model.named_parameters())
    if len(shadow) != len(names):
        raise CheckpointError(f"{where}: ema.shadow_params has {len(shadow)} tensors, the backbone has "
                              f"{len(names)} parameters; refusing to map the EMA by position")
    for index, (tensor, name) in enumerate(zip(shadow, names)):
        if tensor.shape != params[name].shape:
            raise CheckpointError(f"{where}: ema.shadow_params[{index}] has shape {tuple(tensor.shape)}, but "
                                  f"parameter {index} ({PREFIX}{name}) is {tuple(params[name].shape)}")
    return {name: tensor.detach().float().clone() for name, tensor in zip(names, shadow)}


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "holds checkpoints" if list_checkpoints(out) else "is not an empty folder"
        raise CheckpointError(f"{out}: {what}; choose a new folder", "out")
    probe = unwritable_ancestor(out)
    if probe is not None:
        raise CheckpointError(f"{out}: not writable ({probe} is not a writable folder)", "out")


def _write_run(out: Path, config: RunConfig, model: torch.nn.Module, ema: dict[str, torch.Tensor], step: int,
               source: dict, tokenizer_dir: Path | None = None) -> None:
    """Assemble the run folder beside ``out`` and rename it into place: a failure leaves nothing behind.
    ``tokenizer_dir``: a folder whose tokenizer files the run keeps (``checkpoint.copy_tokenizer_files``)."""
    def fill(folder: Path) -> None:
        write_json_atomic(folder / "config.json", json.loads(config.to_json()))
        save_checkpoint(folder, step, model.state_dict(), ema, None,
                        {"history": {}, "preset": config.preset, "imported_from": source}, keep=1)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, folder)

    try:
        publish_folder(out, fill, str(out))
    except CheckpointError as error:  # the run folder could not be written: about out, not the source
        raise CheckpointError(str(error), "out") from None


TOKENIZER_SIZES = {"char": 27, "gpt2": GPT2_VOCAB}  # tokens (without [MASK]) of the tokenizers known by name


def _folder_tokenizer(hf_dir: Path, requested: str | None, rows: int) -> tuple[str, bool]:
    """(the run's tokenizer name, whether ``hf_dir`` holds its files) for an MDLM folder with ``rows`` - 1 tokens.

    The folder's own ``tokenizer_meta.json`` (written by ``edlm export-hf``) names and fixes the tokenizer;
    ``requested`` (``--tokenizer``) must agree with it. Without one, ``requested`` or gpt2 (MDLM-OWT), whose
    size must fit; a ``bpe:N`` needs the folder's files."""
    if (hf_dir / TOKENIZER_META).is_file():
        try:
            found = tokenizer_from_meta(read_json(hf_dir / TOKENIZER_META, "tokenizer description"), hf_dir)
        except (DataError, FileFormatError) as error:
            raise CheckpointError(f"{hf_dir}: {error}", "hf") from None
        if requested is not None and requested != found.name:
            raise CheckpointError(f"{requested}: {hf_dir} holds the {found.name} tokenizer "
                                  f"({TOKENIZER_META}); drop --tokenizer to use it", "tokenizer")
        name, size, has_files = found.name, found.vocab_size, True
    else:
        name, has_files = requested or "gpt2", False
        if name.startswith("bpe"):
            raise CheckpointError(f"{name}: {hf_dir} has no {TOKENIZER_META} + tokenizer.json; a "
                                  f"trained BPE needs its files (`edlm export-hf` writes them)", "tokenizer")
        size = TOKENIZER_SIZES.get(name)
    if size is not None and size != rows - 1:
        raise CheckpointError(f"{hf_dir}/config.json: vocab_size {rows} is not the {name} tokenizer's {size} "
                              f"tokens + [MASK]; pass --tokenizer NAME for the folder's tokenizer (char, gpt2, or "
                              f"bpe:N with its tokenizer files)", "hf")
    return name, has_files


# ----------------------------------------------------------------------------------------------------------
# the two entry points


@_errors_about("ckpt")
def import_mdlm(ckpt: str | Path, out: str | Path, preset: str = "text8-paper",
                overrides: list[str] | None = None) -> tuple[RunConfig, list[str]]:
    """Write an edlm run folder ``out`` (config.json + checkpoints/step-N) from an MDLM ``.ckpt``/``.safetensors``.

    Everything is checked in memory first. Returns (config, notes for the user).
    """
    ckpt, out = Path(ckpt), Path(out)
    _check_out(out)
    weights, shadow, step = read_checkpoint_file(ckpt)
    where = str(ckpt)
    config = get_preset(preset)
    config = dataclasses.replace(config, model=infer_model_config(weights, config.model, where))
    config = apply_overrides(config, list(overrides or []))  # validates (e.g. hidden divisible by n_heads)
    model = load_backbone(config.model, weights, where)
    notes = [f"inferred vocab_size={config.model.vocab_size}, hidden={config.model.hidden}, "
             f"n_layers={config.model.n_layers}, cond_dim={config.model.cond_dim}, "
             f"mlp_ratio={config.model.mlp_ratio}; from --preset {preset}: n_heads={config.model.n_heads}, "
             f"seq_len={config.model.seq_len}"]
    if shadow is not None:
        ema = ema_from_shadow(shadow, model, where)
        notes.append(f"EMA weights taken from ema.shadow_params ({len(shadow)} tensors mapped by position)")
    else:
        ema = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
        notes.append("no EMA in the file; the EMA weights are the raw weights")
    _write_run(out, config, model, ema, step, {"file": str(ckpt), "sha256": sha256_file(ckpt)})
    return config, notes


@_errors_about("hf")
def import_mdlm_hf(hf_dir: str | Path, out: str | Path, preset: str = "text8-paper", tokenizer: str | None = None,
                   overrides: list[str] | None = None) -> tuple[RunConfig, list[str]]:
    """Write an edlm run folder ``out`` from a Hugging Face MDLM folder or Hub repo id (``kuleshov-group/mdlm-owt``).

    Model sizes come from its ``config.json``; the training section from ``preset``; ``overrides`` may change
    either (e.g. ``train.lr=1e-4`` for fine-tuning). ``tokenizer`` names the run's tokenizer; None: the folder's
    (the tokenizer files ``edlm export-hf`` writes, kept with the run), else ``gpt2`` as MDLM-OWT, whose 50258
    rows must then be the 50257 GPT-2 tokens + [MASK]. Returns (config, notes).
    """
    source, out = str(hf_dir), Path(out)
    _check_out(out)
    hf_dir = resolve_hf_folder(source, "", CheckpointError, "hf")  # a repo id becomes its cached snapshot
    hf_config, weights = read_hf_folder(hf_dir)
    model_config = model_config_from_hf(hf_config, hf_dir)
    tokenizer, has_files = _folder_tokenizer(hf_dir, tokenizer, model_config.vocab_size + 1)
    config = dataclasses.replace(get_preset(preset), model=dataclasses.replace(model_config, tokenizer=tokenizer))
    try:
        config = apply_overrides(config, list(overrides or []))  # validates (e.g. hidden divisible by n_heads)
    except ConfigError as error:
        raise ConfigError(f"{hf_dir}: {error}", "hf") from None
    model = load_backbone(config.model, weights, f"{hf_dir}/model.safetensors")
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    files = {name: sha256_file(hf_dir / name) for name in ("config.json", "model.safetensors")}
    origin = {"hf_folder": str(hf_dir), "sha256": files, "tokenizer": tokenizer}
    if Path(source).expanduser() != hf_dir:  # resolved, so a folder source expands without error
        origin["hf_repo"] = source  # the Hub name; hf_folder is its snapshot (named by the commit hash)
    _write_run(out, config, model, ema, 0, origin, hf_dir if has_files else None)
    notes = [f"{config.model.n_layers} layers, hidden {config.model.hidden}, {config.model.n_heads} heads, "
             f"vocab_size {config.model.vocab_size} + [MASK], seq_len {config.model.seq_len}, tokenizer "
             f"{tokenizer}; training settings from --preset {preset}",
             "the Hugging Face weights are used as both the raw and the EMA weights"]
    return config, notes
