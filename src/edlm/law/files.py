"""A law folder on disk: ``law.safetensors`` (the law's tensors) + ``law.json`` (everything else), and the
corpus drawn from it (``corpus.safetensors``: one stationary run per split). No pickle.

``law.json``: ``format_version``, ``kind``, ``order``, ``vocab_size``, ``support``, ``seed``, ``length`` (the row
length samplers and models use), ``epsilon`` (the default smoothing of the law's energy), ``tokenizer``,
``settings`` (the kind's constructor settings), ``entropy_rate`` and ``row_entropy`` (nats per token of a row of
``length``; informative, recomputed from the tensors when loaded), and ``corpus`` (split sizes) once written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from edlm.fileio import FileFormatError, read_json, write_json_atomic
from edlm.law.base import Law, LawError
from edlm.law.hmm import HiddenMarkovLaw
from edlm.law.markov import MarkovLaw

FORMAT_VERSION = 1
LAW_JSON, LAW_TENSORS, CORPUS_TENSORS = "law.json", "law.safetensors", "corpus.safetensors"
SPLITS = ("train", "val", "test")
LAW_CLASSES: dict[str, type] = {"markov": MarkovLaw, "hmm": HiddenMarkovLaw}
DEFAULT_EPSILON = 1e-3


class LawFileError(LawError):
    """A law folder that is missing or cannot be read; the message names the file."""


def describe(law: Law, length: int, epsilon: float = DEFAULT_EPSILON) -> dict:
    """The ``law.json`` record of ``law`` (without corpus)."""
    settings = law.settings()
    return {"format_version": FORMAT_VERSION, "kind": law.kind, "order": law.order, "vocab_size": law.vocab_size,
            "support": settings.get("support"), "seed": settings.get("seed"), "length": length,
            "epsilon": epsilon, "tokenizer": law.tokenizer_name, "settings": settings,
            "entropy_rate": law.entropy_rate(), "row_entropy": law.row_entropy(length) / length}


def save_law(law: Law, folder: str | Path, length: int, epsilon: float = DEFAULT_EPSILON,
             corpus: dict | None = None) -> dict:
    """Write ``law.safetensors`` and ``law.json`` into ``folder`` (created); returns the JSON record."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = describe(law, length, epsilon)
    if corpus is not None:
        record["corpus"] = corpus
    save_file({name: tensor.contiguous() for name, tensor in law.tensors().items()}, str(folder / LAW_TENSORS))
    write_json_atomic(folder / LAW_JSON, record)
    return record


def read_record(folder: str | Path) -> dict:
    """``law.json`` of a law folder, checked; LawFileError naming the file otherwise."""
    path = Path(folder) / LAW_JSON
    if not Path(folder).is_dir():
        raise LawFileError(f"{folder}: no such law folder; make one with `edlm law make`")
    try:
        record = read_json(path, "law description")
    except FileFormatError as error:
        raise LawFileError(str(error)) from None
    version = record.get("format_version") if isinstance(record, dict) else None
    if version != FORMAT_VERSION:
        raise LawFileError(f"{path}: format_version {version!r}, expected {FORMAT_VERSION}")
    if record.get("kind") not in LAW_CLASSES:
        raise LawFileError(f"{path}: unknown law kind {record.get('kind')!r} (valid: {', '.join(LAW_CLASSES)})")
    return record


def load_law(folder: str | Path) -> Law:
    """The law saved in ``folder`` (rebuilt from its tensors, not redrawn from the seed)."""
    record = read_record(folder)
    path = Path(folder) / LAW_TENSORS
    if not path.is_file():
        raise LawFileError(f"{path}: missing (law tensors)")
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error type for a damaged file
        raise LawFileError(f"{path}: not a safetensors file ({error})") from None
    try:
        law = LAW_CLASSES[record["kind"]].from_files(record["settings"], tensors)
    except (KeyError, RuntimeError, IndexError) as error:
        raise LawFileError(f"{path}: tensors do not match {Path(folder) / LAW_JSON} ({error})") from None
    if law.vocab_size != record["vocab_size"]:
        raise LawFileError(f"{path}: vocabulary {law.vocab_size}, but law.json says {record['vocab_size']}")
    return law


def save_corpus(folder: str | Path, splits: dict[str, np.ndarray], vocab_size: int) -> dict:
    """Write ``corpus.safetensors`` (uint8 ids up to 256 symbols, else int32); returns {split: tokens}."""
    dtype = torch.uint8 if vocab_size <= 256 else torch.int32
    save_file({name: torch.from_numpy(np.ascontiguousarray(ids)).to(dtype) for name, ids in splits.items()},
              str(Path(folder) / CORPUS_TENSORS))
    return {name: int(len(ids)) for name, ids in splits.items()}


def load_corpus(folder: str | Path) -> dict[str, np.ndarray]:
    """{split: (N,) int64 ids} of ``corpus.safetensors``; LawFileError if missing or incomplete."""
    path = Path(folder) / CORPUS_TENSORS
    if not path.is_file():
        raise LawFileError(f"{path}: missing; `edlm law make` writes it (with --tokens > 0)")
    try:
        tensors = load_file(str(path))
    except Exception as error:
        raise LawFileError(f"{path}: not a safetensors file ({error})") from None
    missing = [split for split in SPLITS if split not in tensors]
    if missing:
        raise LawFileError(f"{path}: no {', '.join(missing)} split")
    return {split: tensors[split].long().numpy() for split in SPLITS}
