"""Scoring samples through the public API: a judge model (``run:DIR``, ``hf:DIR_OR_NAME``) by a named protocol,
and/or a known law's exact metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from edlm.api.model import LAW_PREFIX, ApiError, Model
from edlm.api.sample import Samples
from edlm.evaluation.mauve_score import DEFAULT_MAUVE_RESAMPLES, DEFAULT_SEEDS
from edlm.stats import DEFAULT_RESAMPLES


def load_judge(spec: str, device: str | torch.device | None = None, batch_size: int = 16):
    """The judge ``spec`` names: ``run:DIR`` (an edlm AR run) or ``hf:DIR_OR_NAME`` (a Hugging Face causal LM, a
    local folder or a Hub name), on ``device`` (None: CUDA when present, else the CPU), scoring ``batch_size``
    texts per forward pass. GenerationEvalError (subject ``judge``) naming the bad spec or folder."""
    from edlm.device import resolve_device
    from edlm.evaluation.judges import make_judge

    return make_judge(spec, resolve_device(None if device is None else str(device), flag="device"), batch_size)


def samples_and_record(samples: Samples | str | Path) -> tuple[list[str], dict, str]:
    """(texts, record, what to call them in errors) of ``Samples`` or of a samples file (``edlm sample --out``)."""
    if isinstance(samples, Samples):
        return list(samples.texts), samples.record(), "the samples"
    from edlm.evaluation.samples_file import read_samples

    texts, record = read_samples(samples)
    return texts, record, str(samples)


def judge_scores(samples: Samples | str | Path, judge, protocol: str = "native", rows: range | None = None) -> list:
    """The judge's per-sample scores (``edlm.evaluation.generation.SampleScore``) of ``samples[rows]`` (default:
    all) under ``protocol``: what ``score(..., scores=...)`` takes when several processes score a block each."""
    from edlm.evaluation.generation import check_judge_reads, score_samples
    from edlm.evaluation.samples_file import sample_length

    texts, record, _ = samples_and_record(samples)
    check_judge_reads(judge, record)
    return score_samples(texts, judge, protocol, rows, sample_length(record))


def score(samples: Samples | str | Path, judge=None, law: Model | str | Path | None = None,
          protocol: str = "native", *, reference: str | Path | None = None,
          mauve_seeds: Sequence[int] = DEFAULT_SEEDS, mauve_resamples: int = DEFAULT_MAUVE_RESAMPLES,
          bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, scores: Sequence | None = None,
          device: str | torch.device | None = None, batch_size: int = 16) -> dict:
    """Generation quality of ``samples`` (``Samples`` from ``sample``, or a samples file) as one JSON-able dict:
    what ``edlm eval-gen --json`` prints.

    ``judge``: a judge (``load_judge``) or its spec (``run:DIR``, ``hf:DIR_OR_NAME``; loaded on ``device`` with
    ``batch_size``): gen-PPL and entropy by ``protocol`` (``edlm.evaluation.protocols.PROTOCOLS``), judge bits per
    character, diversity, each with a 95% interval (``bootstrap`` resamples, numpy ``seed``), and MAUVE against
    whole validation rows of ``reference`` (a prepared data folder) when given. ``scores``: ``judge_scores`` of
    every sample when computed elsewhere. ``law``: a known law (``DIR``, ``law:DIR`` or a law ``Model``): its exact
    metrics are added (``edlm.evaluation.law_metrics``). At least one of ``judge`` and ``law``.
    """
    from edlm.errors import EdlmError

    if judge is None and law is None:
        raise ApiError("needs a judge (a judge model) and/or a law (a known law)", "score")
    texts, record, where = samples_and_record(samples)
    result: dict = {}
    if judge is not None:
        from edlm.evaluation.generation import evaluate_record

        judge = load_judge(judge, device, batch_size) if isinstance(judge, str) else judge
        result = evaluate_record(texts, record, judge, judge.name, protocol, reference, mauve_seeds, bootstrap,
                                 seed, scores, mauve_resamples, where)
        if not isinstance(samples, Samples):
            result.update(samples_file=str(samples))
    elif reference is not None:
        raise EdlmError("needs a judge (MAUVE uses the judge's features)", "reference")
    if law is not None:
        from edlm.evaluation.law_metrics import evaluate_law_record

        result.update(evaluate_law_record(texts, record, law_folder(law), bootstrap, seed, where))
    return result


def law_folder(law: Model | str | Path) -> str | Path:
    """The folder of a known law given as a law ``Model``, ``law:DIR`` or ``DIR`` (as given)."""
    if isinstance(law, Model):
        if law.law_folder is None:
            raise ApiError(f"{law.source} is an {law.kind!r} model, not a known law", "law")
        return law.law_folder
    return law[len(LAW_PREFIX):] if isinstance(law, str) and law.startswith(LAW_PREFIX) else law
