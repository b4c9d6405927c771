"""Generation quality of sample texts: judge perplexity, judge bits per character, entropy, diversity, MAUVE.

Per-token generative perplexity depends on how the judge splits text (docs/method.md §2), so the judge's NLL
per character (bpc) and the samples' entropy are always reported beside it, each with a 95% bootstrap
interval, and the per-sample scores are kept so that two sample sets can be compared later, paired
(``edlm.stats``). A judge (``edlm.evaluation.judges``) must never be the energy model that
produced the samples: ``evaluate_samples`` warns when it is. Judges with ``features`` also feed MAUVE
(``edlm.evaluation.mauve_score``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from edlm.evaluation.diversity import (
    distinct_n,  # noqa: F401 (re-exported: tests and older callers)
    diversity_metrics,
    mean_entropy,
    unigram_entropy,
)
from edlm.evaluation.judges import (  # noqa: F401 (re-exported)
    JUDGE_KINDS,
    GenerationEvalError,
    HFJudge,
    Judge,
    RunJudge,
    load_judge,
    make_judge,
)
from edlm.stats import DEFAULT_RESAMPLES, METRICS, SampleScores, bootstrap_ci
from edlm.parallel import gather_to_rank0, shard

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------------------
# metrics


def generation_metrics(texts: Sequence[str], judge: Judge, num_resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0, scores: Sequence[tuple[float, int, int]] | None = None) -> dict:
    """All generation metrics of ``texts`` under ``judge``; one JSON-able dict.

    ``per_sample`` keeps each sample's judge NLL (nats), judge tokens, characters and character entropy
    (bits), in sample order, so two sets drawn with the same seeds can be compared later, paired
    (``edlm.stats.compare_sets``). ``ci95`` holds 95% bootstrap intervals [low, high] of gen-PPL,
    judge bpc and entropy (``num_resamples`` resamples of the samples, numpy seed ``seed``). ``scores``: the
    judge's ``nll(texts)`` when already computed (e.g. by several processes); None: computed here.
    """
    texts = list(texts)
    if not texts:
        raise GenerationEvalError("no samples to evaluate")
    triples = list(scores) if scores is not None else judge.nll(texts)
    total_nll = sum(t[0] for t in triples)
    total_tokens = sum(t[1] for t in triples)
    total_chars = sum(t[2] for t in triples)
    if total_tokens == 0:
        raise GenerationEvalError("every sample is empty: the judge scored no tokens")
    per_token = np.array([t[0] / t[1] for t in triples if t[1] > 0])  # per-sample NLL, nats per judge token
    entropy_bits, entropy_nats = mean_entropy(texts)
    sample_entropy = [unigram_entropy(text) / LN2 if text else None for text in texts]
    scores = SampleScores.from_lists([t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples],
                                     sample_entropy)
    result = {
        "num_samples": len(texts),
        "judge": judge.name,
        "judge_tokens": total_tokens,
        "characters": total_chars,
        "gen_ppl": math.exp(total_nll / total_tokens),
        "gen_ppl_mean_per_sample": float(np.exp(per_token).mean()),
        "judge_nll_per_token": total_nll / total_tokens,
        "judge_bpc": total_nll / total_chars / LN2 if total_chars else None,
        "entropy_bits": entropy_bits,
        "entropy_nats": entropy_nats,
        "entropy_unit": "character",
        "ci95": {metric: [interval.low, interval.high] for metric in METRICS
                 for interval in [bootstrap_ci(scores, metric, num_resamples, seed)]},
        "bootstrap": {"resamples": num_resamples, "seed": seed, "interval": "percentile, resampling samples"},
        **diversity_metrics(texts),
        "nll_spread": {"mean": float(per_token.mean()), "std": float(per_token.std()),
                       "min": float(per_token.min()), "max": float(per_token.max())},
        "per_sample": {"nll": [t[0] for t in triples], "tokens": [t[1] for t in triples],
                       "characters": [t[2] for t in triples], "entropy_bits": sample_entropy},
    }
    if hasattr(judge, "token_ids"):
        token_bits, token_nats = mean_entropy(judge.token_ids(texts))
        result.update(token_entropy_bits=token_bits, token_entropy_nats=token_nats)
    return result


def evaluate_samples(texts: Sequence[str], judge: Judge, references: Sequence[str] | None = None,
                     mauve_seeds: Sequence[int] = (0,), energy: str | None = None, judge_spec: str | None = None,
                     num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     scores: Sequence[tuple[float, int, int]] | None = None) -> dict:
    """``generation_metrics`` plus MAUVE against ``references`` (when given) and a ``warnings`` list.

    ``energy`` is the sampler's ``--energy`` setting (e.g. ``ar:DIR``) and ``judge_spec`` the judge's
    (``run:DIR``): when both name one folder, a warning says the judge is not independent. MAUVE is
    averaged over ``mauve_seeds`` (k-means seeds); ``result["mauve"]`` is None when it was not asked for.
    ``scores``: the judge's per-sample ``nll(texts)`` when already computed.
    """
    result = generation_metrics(texts, judge, num_resamples, seed, scores)
    warnings = []
    if energy and judge_spec and _same_folder(energy.partition(":")[2], judge_spec.partition(":")[2]):
        warnings.append(f"the judge {judge_spec} is the energy model that produced these samples; its "
                        f"perplexity is not an independent measure (docs/method.md §2)")
    result["mauve"] = None
    if references is not None:
        from edlm.evaluation.mauve_score import judge_mauve

        result["mauve"] = judge_mauve(judge, texts, references, mauve_seeds)
        if result["mauve"]["mauve"] is None:
            warnings.append(f"MAUVE unavailable: {result['mauve']['unavailable']}")
    result["warnings"] = warnings
    return result


def evaluate_samples_file(samples: str | Path, judge_spec: str, device, batch_size: int = 16,
                          mauve: bool = False, reference: str | Path | None = None,
                          mauve_seeds: Sequence[int] = (0,), num_resamples: int = DEFAULT_RESAMPLES,
                          seed: int = 0, rank: int = 0, world: int = 1) -> dict | None:
    """``edlm eval-gen`` as a library call: a samples file and a judge spec -> the ``evaluate_samples`` dict.

    With ``world`` > 1 processes (torchrun; the process group up, ``edlm.parallel.init_from_env``), process
    ``rank`` scores its block of whole judge batches of the texts, rank 0 gathers the per-sample scores and
    computes every metric (bootstrap intervals, diversity, MAUVE) and returns the dict; other ranks return None.

    With ``mauve``, the references are ``num_samples`` windows of the ``reference`` data folder's test split,
    as long as the longest sample, drawn with ``seed`` (recorded under ``mauve.reference``).
    GenerationEvalError (one line naming the flag) for a bad file, judge or a missing ``reference``.
    """
    texts, record = read_samples(samples)
    if mauve and not reference:
        raise GenerationEvalError("--mauve needs --reference DATA_DIR (a prepared data folder)")
    judge = make_judge(judge_spec, device, batch_size)
    rows = shard(len(texts), rank, world, batch_size)
    parts = gather_to_rank0(judge.nll(texts[rows.start:rows.stop]) if len(rows) else [])
    if parts is None:
        return None
    scores = [triple for part in parts for triple in part]  # judge.nll(texts), in sample order
    references = None
    if mauve:
        from edlm.evaluation.mauve_score import reference_texts

        length = max(len(text) for text in texts)
        references = reference_texts(reference, len(texts), length, seed)
    result = evaluate_samples(texts, judge, references, mauve_seeds, sampler_energy(record), judge_spec,
                              num_resamples, seed, scores)
    if references is not None and result["mauve"]["mauve"] is not None:
        result["mauve"]["reference"] = {"data": str(reference), "split": "test", "length": length, "seed": seed}
    result.update(samples_file=str(samples), sampler_run=record.get("run"), sampler_model=record.get("model"))
    return result


def _interval_text(result: dict, metric: str, digits: int) -> str:
    low, high = result["ci95"][metric]
    return f"{result[metric]:.{digits}f} (95% CI {low:.{digits}f}..{high:.{digits}f})"


def report_lines(result: dict) -> list[str]:
    """The human-readable table of an ``evaluate_samples`` result, one string per line (no printing)."""
    rows = [("samples", f"{result['num_samples']}"),
            ("judge", result["judge"]),
            ("gen PPL (per judge token)", _interval_text(result, "gen_ppl", 3)),
            ("gen PPL (mean per sample)", f"{result['gen_ppl_mean_per_sample']:.3f}"),
            ("judge NLL (bits per character)", _interval_text(result, "judge_bpc", 4)),
            ("entropy per sample (characters)", _interval_text(result, "entropy_bits", 4)
             + f" bits, {result['entropy_nats']:.4f} nats")]
    if "token_entropy_bits" in result:
        rows.append(("entropy per sample (judge tokens)", f"{result['token_entropy_bits']:.4f} bits"))
    shown = {name: "-" if value is None else f"{value:.3f}" for name, value in result["distinct"].items()}
    rows.append(("distinct char 1/2/3/4", " / ".join(shown[f"char_{n}"] for n in range(1, 5))))
    rows.append(("distinct word 1/2/3", " / ".join(shown[f"word_{n}"] for n in range(1, 4))))
    repeat = {name: "-" if value is None else f"{value:.3f}" for name, value in result["repetition_4"].items()}
    rows.append(("repeated 4-grams (char / word)", f"{repeat['char']} / {repeat['word']}"))
    bleu = result.get("self_bleu")
    rows.append(("self-BLEU (sacrebleu)", f"{bleu:.2f}" if bleu is not None else
                 f"unavailable ({result.get('self_bleu_unavailable', '')})"))
    mauve = result.get("mauve")
    if mauve is not None:
        rows.append(("MAUVE", f"{mauve['mauve']:.4f} (k-means seeds {mauve['seeds']}, std {mauve['std']:.4f})"
                     if mauve["mauve"] is not None else f"unavailable ({mauve['unavailable']})"))
    spread = result["nll_spread"]
    rows.append(("NLL per token, per sample", f"mean {spread['mean']:.4f}, std {spread['std']:.4f}, "
                                              f"min {spread['min']:.4f}, max {spread['max']:.4f} nats"))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]


# ----------------------------------------------------------------------------------------------------------
# samples files


def read_samples(path: str | Path) -> tuple[list[str], dict]:
    """The ``samples`` list of a JSON file from ``edlm sample --json/--out`` -> (texts, whole record)."""
    path = Path(path)
    hint = "expected the JSON written by `edlm sample --json` or `--out`"
    if not path.is_file():
        raise GenerationEvalError(f"--samples {path}: no such file")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenerationEvalError(f"--samples {path}: not valid JSON ({error}); {hint}") from None
    samples = record.get("samples") if isinstance(record, dict) else None
    if not isinstance(samples, list):
        raise GenerationEvalError(f"--samples {path}: no \"samples\" list; {hint}")
    if not samples:
        raise GenerationEvalError(f"--samples {path}: the \"samples\" list is empty")
    for index, sample in enumerate(samples):
        if not isinstance(sample, str):
            raise GenerationEvalError(f"--samples {path}: samples[{index}] is a {type(sample).__name__}, "
                                      f"not a string")
    return samples, record


def sampler_energy(record: dict) -> str | None:
    """The ``--energy`` setting recorded in a samples file, if any."""
    settings = record.get("settings")
    energy = settings.get("energy") if isinstance(settings, dict) else None
    return energy if isinstance(energy, str) else None


def _same_folder(a: str | None, b: str | None) -> bool:
    try:
        return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
