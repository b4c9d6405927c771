"""Exact generation metrics on a known law (``edlm eval-gen --law DIR``): no judge model, nothing to flatter.

Per sample i (a row of the law's tokens): its true NLL -log p_law(x) under the unsmoothed law (inf when the law
forbids it), its length, and its forbidden positions (``Law.forbidden``). Over a set of samples:

    law_nll_per_token   sum of NLL / sum of tokens over the possible samples; compare with the law's
                        ``row_entropy_per_token`` (what exact samples of this length score on average) and its
                        ``entropy_rate`` (the limit for long rows)
    impossible_share    share of samples the law gives probability 0 (left out of law_nll_per_token)
    law_nll_per_token_smoothed
                        the same over every sample under the law smoothed by ``epsilon`` (law.json, 1e-3):
                        finite, so sets that both hold impossible samples still compare
    forbidden_rate      forbidden positions / tokens (0 for exact samples)
    ngram_tv[n]         total variation between the samples' pooled n-gram frequencies (n-grams inside rows)
                        and the law's stationary n-gram law, n = 1, 2, 3; it is not 0 for finite sets:
                        ``ngram_tv_reference`` is the value of one equally sized draw from the law itself

Each metric has a 95% interval over samples (``edlm.stats``, numpy ``seed``, ``num_resamples`` index sets): a
percentile bootstrap for the sums, half-sampling for ``ngram_tv`` (a duplicated sample repeats its n-grams, which
a bootstrap would count as agreement). The per-sample values are kept for paired comparisons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edlm.evaluation.judge_base import GenerationEvalError
from edlm.law import DEFAULT_EPSILON
from edlm.stats import DEFAULT_RESAMPLES, bootstrap_indices, centred_interval, half_sample_indices, percentile_interval

NGRAM_ORDERS = (1, 2, 3)
_TV_BUDGET = 1 << 24  # resample x n-gram count cells held at once


def _as_dict(interval) -> dict:
    """``Interval.as_dict`` with None for what is undefined (e.g. the NLL when no sample is possible)."""
    out = interval.as_dict()
    finite = lambda value: float(value) if np.isfinite(value) else None  # noqa: E731
    return {**out, "estimate": finite(out["estimate"]), "ci95": [finite(v) for v in out["ci95"]]}


def _interval(estimate: float, replicates: np.ndarray) -> dict:
    return _as_dict(percentile_interval(estimate, replicates))


def _ratio(numerator: np.ndarray, denominator: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """sum numerator / sum denominator over each index set: indices (R, n) -> (R,)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator[indices].sum(1) / denominator[indices].sum(1)


def _ngram_tv(rows: list[torch.Tensor], law, n: int, indices: np.ndarray) -> tuple[float, np.ndarray]:
    """TV(pooled n-gram frequencies of the samples, the law's n-gram law) on the full set and on each resample.

    TV = sum over the samples' n-grams g of max(freq(g) - p(g), 0), so the law is needed only where samples are.
    """
    V = law.vocab_size
    codes, owners = [], []
    for index, row in enumerate(rows):
        if len(row) >= n:
            grams = row.unfold(0, n, 1)  # (len - n + 1, n)
            codes.append((grams * V ** torch.arange(n - 1, -1, -1)).sum(-1))
            owners.append(torch.full((len(grams),), index))
    if not codes:
        return float("nan"), np.full(len(indices), np.nan)
    unique, inverse = torch.unique(torch.cat(codes), return_inverse=True)
    counts = torch.zeros(len(rows), len(unique))  # (samples, distinct n-grams); float32 counts are exact below 2^24
    counts.index_put_((torch.cat(owners), inverse), torch.ones(len(inverse)), accumulate=True)
    digits = torch.stack([(unique // V ** p) % V for p in range(n - 1, -1, -1)], -1)  # (U, n)
    law_probs = law.ngram_log_prob(digits).exp()  # (U,)

    def tv(weights: torch.Tensor) -> torch.Tensor:  # weights (R, samples) -> (R,)
        pooled = (weights @ counts).double()  # (R, U)
        frequencies = pooled / pooled.sum(-1, keepdim=True)
        return (frequencies - law_probs).clamp_min(0).sum(-1)

    full = float(tv(torch.ones(1, len(rows)))[0])
    chunk = max(1, _TV_BUDGET // max(1, len(unique)))
    replicates = []
    for start in range(0, len(indices), chunk):
        block = torch.from_numpy(indices[start:start + chunk])
        weights = torch.zeros(len(block), len(rows)).scatter_add_(1, block, torch.ones(block.shape))
        replicates.append(tv(weights))
    return full, torch.cat(replicates).numpy() if replicates else np.zeros(0)


def law_metrics(rows: list[torch.Tensor], law, num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                epsilon: float = DEFAULT_EPSILON) -> dict:
    """Exact metrics of samples ``rows`` (each (L_i,) int64 ids) under ``law``; one JSON-able dict."""
    if not rows:
        raise GenerationEvalError("no samples to evaluate")
    nll, smoothed, forbidden = (np.zeros(len(rows)) for _ in range(3))
    for length in sorted({len(row) for row in rows}):  # batch the rows of each length
        group = [i for i, row in enumerate(rows) if len(row) == length]
        stacked = torch.stack([rows[i] for i in group])  # (n_L, L)
        nll[group] = (-law.log_prob(stacked)).numpy()
        smoothed[group] = (-law.log_prob(stacked, epsilon)).numpy()
        forbidden[group] = law.forbidden(stacked).sum(-1).double().numpy()
    tokens = np.array([len(row) for row in rows], dtype=np.float64)
    possible = np.isfinite(nll)
    indices = bootstrap_indices(len(rows), num_resamples, seed)
    halves = half_sample_indices(len(rows), num_resamples if len(rows) >= 4 else 0, seed)
    finite_nll, possible_tokens = np.where(possible, nll, 0.0), np.where(possible, tokens, 0.0)
    everyone = np.arange(len(rows))[None]
    result = {
        "law_nll_per_token": _interval(_ratio(finite_nll, possible_tokens, everyone)[0],
                                       _ratio(finite_nll, possible_tokens, indices)),
        "impossible_share": _interval(1 - possible.mean(), 1 - possible[indices].mean(1)),
        "law_nll_per_token_smoothed": _interval(_ratio(smoothed, tokens, everyone)[0],
                                                _ratio(smoothed, tokens, indices)),
        "smoothing": epsilon,
        "forbidden_rate": _interval(_ratio(forbidden, tokens, everyone)[0], _ratio(forbidden, tokens, indices)),
        "ngram_tv": {str(n): _as_dict(centred_interval(*_ngram_tv(rows, law, n, halves))) for n in NGRAM_ORDERS},
        "entropy_rate": law.entropy_rate(),
        "row_entropy_per_token": float(sum(law.row_entropy(len(row)) for row in rows) / tokens.sum()),
    }
    reference = [law.sample(1, len(row), torch.Generator().manual_seed(seed * 1_000_003 + i))[0]
                 for i, row in enumerate(rows)]
    no_resamples = np.zeros((0, len(rows)), dtype=np.int64)
    result["ngram_tv_reference"] = {str(n): _ngram_tv(reference, law, n, no_resamples)[0] for n in NGRAM_ORDERS}
    result["law_per_sample"] = {"nll": [float(v) if np.isfinite(v) else None for v in nll],
                                "nll_smoothed": smoothed.tolist(), "tokens": tokens.astype(int).tolist(),
                                "forbidden": forbidden.astype(int).tolist()}
    result["law_bootstrap"] = {"resamples": num_resamples, "seed": seed, "interval": "percentile, resampling samples"}
    return result


def sample_rows(record: dict, texts: list[str], law, where: str) -> list[torch.Tensor]:
    """The samples of an ``edlm sample`` record as law ids: its ``token_ids`` when present, else its texts
    re-encoded exactly by the law's tokenizer (``encode_sample``: char one id per character, no normalisation;
    ``sym:V`` the symbols). GenerationEvalError (subject ``samples``) naming ``where`` otherwise."""
    from edlm.data import get_tokenizer

    name = law.tokenizer_name
    if record.get("tokenizer", name) != name:
        raise GenerationEvalError(f"{where}: samples drawn with the {record['tokenizer']} tokenizer, the law uses "
                                  f"{name}", "samples")
    if isinstance(record.get("token_ids"), list):
        rows = [torch.tensor(row, dtype=torch.long) for row in record["token_ids"]]
    else:
        tokenizer, rows = get_tokenizer(name), []
        for index, text in enumerate(texts):
            try:
                rows.append(torch.from_numpy(np.asarray(tokenizer.encode_sample(text), dtype=np.int64)))
            except ValueError as error:
                raise GenerationEvalError(f"{where}: samples[{index}] is not a row of the law's symbols "
                                          f"({error})", "samples") from None
    for index, row in enumerate(rows):
        if row.ndim != 1 or (len(row) and (row.min() < 0 or row.max() >= law.vocab_size)):
            raise GenerationEvalError(f"{where}: sample {index} holds ids outside [0, {law.vocab_size})", "samples")
    return rows


def evaluate_law_record(texts: list[str], record: dict, law_dir: str | Path, num_resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0, where: str = "the samples") -> dict:
    """Exact metrics (``law_metrics``) of samples ``texts`` with their record (``edlm sample``'s: token ids when
    present) under the law in ``law_dir``, with the law's description. GenerationEvalError with subject
    ``samples`` (``where`` names them) or ``law``."""
    from edlm.law import LawError, load_law, read_record

    try:
        description, law = read_record(law_dir), load_law(law_dir)
    except LawError as error:
        raise GenerationEvalError(str(error), "law") from None
    rows = sample_rows(record, texts, law, where)
    result = law_metrics(rows, law, num_resamples, seed, float(description.get("epsilon", DEFAULT_EPSILON)))
    result["law"] = {"folder": str(law_dir), "kind": description["kind"], "order": description["order"],
                     "vocab_size": law.vocab_size, "length": description["length"]}
    return {"num_samples": len(rows), **result}


def law_report_lines(result: dict) -> list[str]:
    """The law metrics of ``law_metrics`` / ``evaluate_law_record`` as table lines."""
    def shown(entry: dict, digits: int = 4) -> str:
        low, high = entry["ci95"]
        if entry["estimate"] is None or low is None:
            return "undefined (no possible sample)" if entry["estimate"] is None else f"{entry['estimate']:.{digits}f}"
        return f"{entry['estimate']:.{digits}f} (95% CI {low:.{digits}f}..{high:.{digits}f})"

    law = result.get("law", {})
    rows = [("law", f"{law.get('kind', '?')} (order {law.get('order', '?')}, {law.get('vocab_size', '?')} symbols) "
                    f"{law.get('folder', '')}"),
            ("law NLL per token (nats)", shown(result["law_nll_per_token"])),
            ("  exact samples score", f"{result['row_entropy_per_token']:.4f} (entropy rate "
                                      f"{result['entropy_rate']:.4f})"),
            ("impossible samples", shown(result["impossible_share"])),
            (f"law NLL, smoothed by {result['smoothing']:g}", shown(result["law_nll_per_token_smoothed"])),
            ("forbidden rate", shown(result["forbidden_rate"]))]
    for n, entry in result["ngram_tv"].items():
        rows.append((f"{n}-gram TV to the law", shown(entry) + f"; a draw from the law: "
                                                              f"{result['ngram_tv_reference'][n]:.4f}"))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]
