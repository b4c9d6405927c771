"""Generation quality of sample texts: generative perplexity and entropy by a named protocol, judge bits per
character, diversity, MAUVE, each with a 95% interval.

Per-token generative perplexity depends on how the judge splits text and on which tokens it counts (docs/method.md
§2.1): every result names its ``protocol`` (``edlm.evaluation.protocols``) and keeps edlm's own judge bits per
character and character entropy beside the protocol's numbers. The per-sample scores are kept so that two sample
sets can be compared later, paired (``edlm.stats``). A judge (``edlm.evaluation.judges``) must never be
the energy model that produced the samples: ``evaluate_samples`` warns when it is.

Library functions compute; they do not shard or gather across processes: ``score_samples`` scores a row range,
and the command line (``commands.cmd_eval_gen``) splits the rows, gathers the scores and passes them in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from edlm.data.tokenizers.base import split_at_eos
from edlm.evaluation.diversity import (
    distinct_n,  # noqa: F401 (re-exported: tests and older callers)
    diversity_intervals,
    diversity_metrics,
    mean_entropy,
    unigram_entropy,
)
from edlm.evaluation.judges import (  # noqa: F401 (re-exported)
    JUDGE_KINDS,
    GenerationEvalError,
    Judge,
    ModelJudge,
    make_judge,
)
from edlm.evaluation.mauve_score import DEFAULT_MAUVE_RESAMPLES, DEFAULT_SEEDS
from edlm.evaluation.protocols import PROTOCOLS, protocol_entropy, reference_scores
from edlm.evaluation.samples_file import (  # noqa: F401 (read_samples re-exported)
    read_samples,
    same_folder,
    sample_length,
    sampler_energy,
    sampler_tokenizer,
)
from edlm.stats import DEFAULT_HALF_SAMPLES, DEFAULT_RESAMPLES, SampleScores, bootstrap_ci

LN2 = math.log(2.0)
INTERVAL_METRICS = ("gen_ppl", "judge_bpc", "entropy_bits", "entropy")


class SampleScore(NamedTuple):
    """One sample's judge scores: edlm's own (``nll`` nats over ``tokens`` judge tokens, ``characters``) and the
    protocol's gen-PPL scoring (``protocol_nll`` over ``protocol_tokens``; equal to edlm's for ``native``)."""

    nll: float
    tokens: int
    characters: int
    protocol_nll: float
    protocol_tokens: int


def score_samples(texts: Sequence[str], judge: Judge, protocol: str = "native", rows: range | None = None,
                  max_tokens: int | None = None) -> list[SampleScore]:
    """The judge's scores of ``texts[rows]`` (default: all) under ``protocol``; ``max_tokens`` is the published
    protocols' truncation length (the samples' length in tokens; None: the judge's context)."""
    rows = range(len(texts)) if rows is None else rows
    native = judge.nll([texts[i] for i in rows]) if len(rows) else []
    if not PROTOCOLS[protocol].reference_scoring:
        return [SampleScore(nll, tokens, chars, nll, tokens) for nll, tokens, chars in native]
    if not isinstance(judge, ModelJudge):
        raise GenerationEvalError(f"protocol {protocol!r} needs a model judge (run: or hf:), not {judge.name}",
                                  "judge")
    published = reference_scores(judge, texts, rows, max_tokens)
    return [SampleScore(*own, *theirs) for own, theirs in zip(native, published)]


def generation_metrics(texts: Sequence[str], judge: Judge, num_resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0, scores: Sequence[SampleScore] | None = None, protocol: str = "native",
                       token_ids: Sequence[Sequence[int]] | None = None, sampler_tokenizer=None,
                       max_tokens: int | None = None, half_samples: int = DEFAULT_HALF_SAMPLES) -> dict:
    """Every generation metric of ``texts`` under ``judge`` by ``protocol``; one JSON-able dict.

    ``gen_ppl`` (pooled over samples), ``judge_tokens`` and ``entropy`` (``entropy_unit``, ``entropy_of``) follow
    the protocol; ``judge_bpc`` and ``entropy_bits`` / ``entropy_nats`` (characters) are edlm's own, always.
    ``per_sample`` keeps each sample's scores in sample order for paired comparisons later. ``ci95`` holds 95%
    intervals: bootstrap over samples (``num_resamples``, numpy seed ``seed``) for the sums and means, and for
    distinct-n and self-BLEU as ``ci95_method`` says (``half_samples`` resamples). ``token_ids`` /
    ``sampler_tokenizer``: the sampler's ids for the token entropy of the published protocols. ``scores``: the
    judge's ``score_samples`` when already computed (e.g. by several processes); None: computed here.
    """
    texts, rules = list(texts), PROTOCOLS[protocol]
    if not texts:
        raise GenerationEvalError("no samples to evaluate", "samples")
    scores = list(scores) if scores is not None else score_samples(texts, judge, protocol, max_tokens=max_tokens)
    scores = [SampleScore(*s, s[0], s[1]) if len(s) == 3 else SampleScore(*s) for s in scores]
    total_nll, total_tokens = sum(s.protocol_nll for s in scores), sum(s.protocol_tokens for s in scores)
    own_nll, total_chars = sum(s.nll for s in scores), sum(s.characters for s in scores)
    if total_tokens == 0:
        raise GenerationEvalError("every sample is empty: the judge scored no tokens", "samples")
    per_token = np.array([s.protocol_nll / s.protocol_tokens for s in scores if s.protocol_tokens > 0])
    plain = ["\n".join(split_at_eos(text)) for text in texts]  # the documents, without end-of-text markers
    char_entropy = [unigram_entropy(text) / LN2 if text else None for text in plain]
    entropy, entropy_of = (char_entropy, "characters") if rules.entropy_of == "characters" else \
        protocol_entropy(rules, texts, token_ids, sampler_tokenizer)
    table = SampleScores.from_lists([s.protocol_nll for s in scores], [s.protocol_tokens for s in scores],
                                    [s.characters for s in scores], char_entropy, [s.nll for s in scores], entropy)
    entropy_bits, entropy_nats = mean_entropy(plain)
    diversity = diversity_metrics(plain)
    intervals = {metric: bootstrap_ci(table, metric, num_resamples, seed) for metric in INTERVAL_METRICS
                 if metric != "entropy" or entropy is not None}
    extra, methods = diversity_intervals(plain, half_samples, seed, diversity.pop("self_bleu_per_sample", None))
    result = {
        "num_samples": len(texts), "judge": judge.name, "protocol": protocol, "protocol_rules": rules.rules(),
        "judge_tokens": total_tokens, "characters": total_chars,
        "gen_ppl": math.exp(total_nll / total_tokens), "gen_ppl_mean_per_sample": float(np.exp(per_token).mean()),
        "judge_nll_per_token": total_nll / total_tokens,
        "judge_bpc": own_nll / total_chars / LN2 if total_chars else None,
        "entropy": None if entropy is None else intervals["entropy"].estimate,
        "entropy_unit": rules.entropy_unit, "entropy_of": entropy_of,
        "entropy_bits": entropy_bits, "entropy_nats": entropy_nats,
        "ci95": {**{name: [i.low, i.high] for name, i in intervals.items()},
                 **{name: [i.low, i.high] for name, i in extra.items()}},
        "ci95_method": {**{name: f"bootstrap over samples, {num_resamples} resamples" for name in intervals},
                        **methods},
        "bootstrap": {"resamples": num_resamples, "seed": seed, "interval": "percentile, resampling samples"},
        **diversity,
        "nll_spread": {"mean": float(per_token.mean()), "std": float(per_token.std()),
                       "min": float(per_token.min()), "max": float(per_token.max())},
        "per_sample": {"nll": [s.protocol_nll for s in scores], "tokens": [s.protocol_tokens for s in scores],
                       "characters": [s.characters for s in scores], "entropy_bits": char_entropy,
                       "bpc_nll": [s.nll for s in scores], "entropy": entropy},
    }
    dropped = {name: i.dropped for name, i in {**intervals, **extra}.items() if i.dropped}
    if dropped:
        result["ci95_dropped_replicates"] = dropped
    if hasattr(judge, "token_ids"):
        token_bits, token_nats = mean_entropy([judge.token_ids(text) for text in texts])
        result.update(token_entropy_bits=token_bits, token_entropy_nats=token_nats)
    return result


def evaluate_samples(texts: Sequence[str], judge: Judge, references: Sequence[str] | None = None,
                     mauve_seeds: Sequence[int] = DEFAULT_SEEDS, energy: str | None = None,
                     judge_spec: str | None = None, num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     scores: Sequence[SampleScore] | None = None, protocol: str = "native",
                     max_tokens: int | None = None, token_ids: Sequence[Sequence[int]] | None = None,
                     sampler_tokenizer=None, half_samples: int = DEFAULT_HALF_SAMPLES,
                     mauve_resamples: int = DEFAULT_MAUVE_RESAMPLES) -> dict:
    """``generation_metrics`` plus MAUVE against ``references`` (when given) and a ``warnings`` list.

    ``energy`` is the sampler's ``--energy`` setting (e.g. ``ar:DIR``) and ``judge_spec`` the judge's
    (``run:DIR``): when both name one folder, a warning says the judge is not independent. MAUVE follows ReMDM's
    protocol (``mauve_score``: features of texts cut to ``max_tokens`` judge tokens, k-means ``mauve_seeds``
    averaged, a half-sampling interval of ``mauve_resamples``); ``result["mauve"]`` is None when not asked for.
    """
    result = generation_metrics(texts, judge, num_resamples, seed, scores, protocol, token_ids, sampler_tokenizer,
                                max_tokens, half_samples)
    warnings = []
    if energy and judge_spec and same_folder(energy.partition(":")[2], judge_spec.partition(":")[2]):
        warnings.append(f"the judge {judge_spec} is the energy model that produced these samples; its "
                        f"perplexity is not an independent measure (docs/method.md §2)")
    if result["entropy"] is None:
        warnings.append(f"{protocol} entropy {result['entropy_of']}")
    result["mauve"] = None
    if references is not None:
        from edlm.evaluation.mauve_score import judge_mauve

        mauve = judge_mauve(judge, texts, references, mauve_seeds, max_tokens=max_tokens,
                            num_resamples=mauve_resamples, seed=seed)
        result["mauve"] = mauve
        warnings += mauve.pop("warnings", [])
        if mauve["mauve"] is None:
            warnings.append(f"MAUVE unavailable: {mauve['unavailable']}")
        elif "ci95" in mauve:
            result["ci95"]["mauve"], result["ci95_method"]["mauve"] = mauve["ci95"], mauve["ci95_method"]
    result["warnings"] = warnings
    return result


def evaluate_samples_file(samples: str | Path, judge: Judge, judge_spec: str | None = None,
                          protocol: str = "native", reference: str | Path | None = None,
                          mauve_seeds: Sequence[int] = DEFAULT_SEEDS, num_resamples: int = DEFAULT_RESAMPLES,
                          seed: int = 0, scores: Sequence[SampleScore] | None = None,
                          mauve_resamples: int = DEFAULT_MAUVE_RESAMPLES) -> dict:
    """``edlm eval-gen`` as a library call, in this process: a samples file and a judge -> ``evaluate_record``'s
    dict, with ``samples_file``. GenerationEvalError for a bad file (subject ``samples``)."""
    texts, record = read_samples(samples)
    result = evaluate_record(texts, record, judge, judge_spec, protocol, reference, mauve_seeds, num_resamples,
                             seed, scores, mauve_resamples, str(samples))
    result.update(samples_file=str(samples))
    return result


def evaluate_record(texts: Sequence[str], record: dict, judge: Judge, judge_spec: str | None = None,
                    protocol: str = "native", reference: str | Path | None = None,
                    mauve_seeds: Sequence[int] = DEFAULT_SEEDS, num_resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0, scores: Sequence[SampleScore] | None = None,
                    mauve_resamples: int = DEFAULT_MAUVE_RESAMPLES, where: str = "the samples") -> dict:
    """Samples ``texts`` with their record (``edlm.evaluation.samples_file``: what ``edlm sample`` wrote) and a
    judge -> the ``evaluate_samples`` dict, with the sampler's run and model and the MAUVE references.

    The published protocols truncate to the samples' length (``length`` in the record) and take the sampler's
    token ids from the record (``token_ids``) or its tokenizer (``sampler_tokenizer``). With ``reference`` (a
    prepared data folder), MAUVE compares against whole rows of its validation split
    (``mauve_score.reference_texts``). ``scores``: ``score_samples`` of every sample when computed elsewhere
    (several processes). GenerationEvalError for a record without a length (MAUVE; ``where`` names it), a bad
    reference or a judge that cannot read the samples' tokenizer.
    """
    check_judge_reads(judge, record)
    length = sample_length(record)
    references = None
    if reference is not None:
        from edlm.data import DataError
        from edlm.evaluation.mauve_score import reference_texts

        if length is None:
            raise GenerationEvalError(f"{where}: no \"length\" (tokens per sample): MAUVE's references are "
                                      f"rows of that length; write the file with `edlm sample --out`", "samples")
        try:
            references = reference_texts(reference, len(texts), length, seed)
        except DataError as error:
            raise GenerationEvalError(str(error), "reference") from None
    result = evaluate_samples(texts, judge, references, mauve_seeds, sampler_energy(record), judge_spec,
                              num_resamples, seed, scores, protocol, length, record.get("token_ids"),
                              sampler_tokenizer(record) if "token_ids" not in record else None,
                              mauve_resamples=mauve_resamples)
    if references is not None and result["mauve"]["mauve"] is not None:
        result["mauve"]["reference"] = {"data": str(reference), "split": "val", "rows": len(references),
                                        "row_tokens": length, "seed": seed}
    result.update(sampler_run=record.get("run"), sampler_model=record.get("model"))
    return result


def check_judge_reads(judge: Judge, record: dict) -> None:
    """A judge with a tokenizer of its own must read the samples' tokenizer: a char judge cannot score subword
    text. GenerationEvalError naming both tokenizers (subject ``judge``)."""
    theirs = record.get("tokenizer")
    ours = getattr(getattr(judge, "tokenizer", None), "name", None)
    if isinstance(theirs, str) and ours == "char" and theirs != "char":
        raise GenerationEvalError(f"{judge.name}: tokenizer mismatch: the judge reads the char alphabet (27 "
                                  f"symbols) but the samples were written with the {theirs} tokenizer; judge them "
                                  f"with a model of their tokenizer (an AR run on the same data, or hf:gpt2)",
                                  "judge")


def _interval_text(result: dict, metric: str, digits: int) -> str:
    low, high = result["ci95"][metric]
    return f"{result[metric]:.{digits}f} (95% CI {low:.{digits}f}..{high:.{digits}f})"


def _with_ci(result: dict, name: str, value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if name not in result["ci95"]:
        return f"{value:.{digits}f}"
    low, high = result["ci95"][name]
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def report_lines(result: dict) -> list[str]:
    """The human-readable table of an ``evaluate_samples`` result, one string per line (no printing)."""
    protocol = result["protocol"]
    entropy = "unavailable" if result["entropy"] is None else \
        f"{_interval_text(result, 'entropy', 4)} {result['entropy_unit']}"
    rows = [("samples", f"{result['num_samples']}"),
            ("judge", result["judge"]),
            ("protocol", f"{protocol} ({result['protocol_rules']['follows']})"),
            (f"gen PPL, {protocol} protocol", _interval_text(result, "gen_ppl", 3)),
            (f"entropy, {protocol} protocol", f"{entropy} ({result['entropy_of']})"),
            ("gen PPL (mean per sample)", f"{result['gen_ppl_mean_per_sample']:.3f}"),
            ("judge NLL, edlm (bits per character)", _interval_text(result, "judge_bpc", 4)),
            ("entropy per sample (characters)", _interval_text(result, "entropy_bits", 4)
             + f" bits, {result['entropy_nats']:.4f} nats")]
    if "token_entropy_bits" in result:
        rows.append(("entropy per sample (judge tokens)", f"{result['token_entropy_bits']:.4f} bits"))
    distinct = result["distinct"]
    rows.append(("distinct char 1/2/3/4 [95% CI]", " / ".join(
        _with_ci(result, f"distinct_char_{n}", distinct[f"char_{n}"], 3) for n in range(1, 5))))
    rows.append(("distinct word 1/2/3 [95% CI]", " / ".join(
        _with_ci(result, f"distinct_word_{n}", distinct[f"word_{n}"], 3) for n in range(1, 4))))
    repeat = {name: "-" if value is None else f"{value:.3f}" for name, value in result["repetition_4"].items()}
    rows.append(("repeated 4-grams (char / word)", f"{repeat['char']} / {repeat['word']}"))
    bleu = result.get("self_bleu")
    rows.append(("self-BLEU (sacrebleu) [95% CI]", _with_ci(result, "self_bleu", bleu, 2) if bleu is not None else
                 f"unavailable ({result.get('self_bleu_unavailable', '')})"))
    mauve = result.get("mauve")
    if mauve is not None:
        rows.append(("MAUVE [95% CI]", f"{_with_ci(result, 'mauve', mauve['mauve'], 4)} (k-means seeds "
                     f"{mauve['seeds']}; {mauve['protocol_name']})" if mauve["mauve"] is not None
                     else f"unavailable ({mauve['unavailable']})"))
    spread = result["nll_spread"]
    rows.append(("NLL per token, per sample", f"mean {spread['mean']:.4f}, std {spread['std']:.4f}, "
                                              f"min {spread['min']:.4f}, max {spread['max']:.4f} nats"))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]
