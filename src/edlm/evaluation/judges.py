"""Judges by name: ``run:DIR`` (an edlm AR run) or ``hf:DIR_OR_NAME`` (a Hugging Face causal LM); ``JUDGES`` maps
each kind to its builder (``judge_base`` says what a judge offers, ``judge_models`` holds the two kinds)."""

from __future__ import annotations

from pathlib import Path

import torch

from edlm.evaluation.judge_base import (  # noqa: F401 (re-exported)
    GenerationEvalError,
    Judge,
    ModelJudge,
    padded_batches,
)
from edlm.evaluation.judge_models import HFJudge, RunJudge, load_run_judge  # noqa: F401 (HFJudge re-exported)


def _check_spec(spec: str) -> tuple[str, str]:
    kind, sep, folder = spec.partition(":")
    expected = ("expected run:DIR (an edlm AR model) or hf:DIR_OR_NAME (a Hugging Face causal LM: a local folder "
                "or a Hub name)")
    if not sep:
        raise GenerationEvalError(f"{spec!r}: {expected}", "judge")
    if kind not in JUDGES:
        raise GenerationEvalError(f"{spec!r}: unknown judge kind {kind!r}; {expected}", "judge")
    if not folder:
        raise GenerationEvalError(f"{spec!r}: no folder after '{kind}:'; {expected}", "judge")
    return kind, folder


def _run_judge(folder: str, device, batch_size: int) -> ModelJudge:
    if not Path(folder).is_dir():
        raise GenerationEvalError(f"run:{folder}: no such folder {folder}", "judge")
    return load_run_judge(Path(folder), device, batch_size)


def _hf_judge(folder: str, device, batch_size: int) -> ModelJudge:
    return HFJudge(folder, device, batch_size)


JUDGES = {"run": _run_judge, "hf": _hf_judge}
JUDGE_KINDS = tuple(JUDGES)


def make_judge(spec: str, device: str | torch.device = "cpu", batch_size: int = 16) -> ModelJudge:
    """``run:DIR`` or ``hf:DIR_OR_NAME`` -> a judge on ``device`` (the kind picked from ``JUDGES``);
    GenerationEvalError (subject ``judge``) naming the bad spec or folder."""
    kind, folder = _check_spec(spec)
    return JUDGES[kind](folder, device, batch_size)
