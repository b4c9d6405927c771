"""The samples file that ``edlm sample --out/--json`` writes, as ``edlm eval-gen`` reads it.

A JSON object with ``samples`` (one text per row) and, when written by ``edlm sample``: ``run`` (the sampler's run
folder), ``model``, ``tokenizer`` (its name), ``length`` (tokens per row), ``settings`` (the flags) and optionally
``token_ids`` (the rows' ids, for the published protocols' token entropy).
"""

from __future__ import annotations

import json
from pathlib import Path

from edlm.errors import EdlmError
from edlm.evaluation.judge_base import GenerationEvalError


def read_samples(path: str | Path) -> tuple[list[str], dict]:
    """The ``samples`` list of a samples file -> (texts, whole record); GenerationEvalError (subject ``samples``)
    naming the file."""
    path = Path(path)
    hint = "expected the JSON written by `edlm sample --json` or `--out`"
    if not path.is_file():
        raise GenerationEvalError(f"{path}: no such file", "samples")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenerationEvalError(f"{path}: not valid JSON ({error}); {hint}", "samples") from None
    samples = record.get("samples") if isinstance(record, dict) else None
    if not isinstance(samples, list):
        raise GenerationEvalError(f"{path}: no \"samples\" list; {hint}", "samples")
    if not samples:
        raise GenerationEvalError(f"{path}: the \"samples\" list is empty", "samples")
    for index, sample in enumerate(samples):
        if not isinstance(sample, str):
            raise GenerationEvalError(f"{path}: samples[{index}] is a {type(sample).__name__}, not a string",
                                      "samples")
    token_ids = record.get("token_ids")
    if token_ids is not None and not (isinstance(token_ids, list) and len(token_ids) == len(samples)
                                      and all(isinstance(row, list) for row in token_ids)):
        raise GenerationEvalError(f"{path}: \"token_ids\" must hold one list of ids per sample", "samples")
    return samples, record


def sample_length(record: dict) -> int | None:
    """Tokens per sample (the sampler's row length) recorded in a samples file, if any."""
    length = record.get("length")
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None


def sampler_energy(record: dict) -> str | None:
    """The ``--energy`` setting recorded in a samples file, if any."""
    settings = record.get("settings")
    energy = settings.get("energy") if isinstance(settings, dict) else None
    return energy if isinstance(energy, str) else None


def sampler_tokenizer(record: dict):
    """The tokenizer that wrote the samples: the sampler run's (``run``, when that folder is here), else the one
    ``tokenizer`` names when it needs no data folder (char, gpt2); None when neither can be had."""
    from edlm.data import DataError, get_tokenizer

    run = record.get("run")
    if isinstance(run, str) and (Path(run) / "config.json").is_file():
        from edlm.checkpoint import load_run_config, load_run_tokenizer

        try:
            return load_run_tokenizer(Path(run), load_run_config(Path(run)))
        except EdlmError:  # an unreadable run: fall back to the name below
            pass
    name = record.get("tokenizer", "char" if record.get("model") in ("mdlm", "ar") else None)
    try:
        return get_tokenizer(name) if isinstance(name, str) else None
    except DataError:  # bpe:N needs its folder
        return None


def same_folder(a: str | None, b: str | None) -> bool:
    try:
        return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
