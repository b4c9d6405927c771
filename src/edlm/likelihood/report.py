"""Every likelihood figure of ``edlm eval`` (with and without ``--energy``), each named for what it is.

- ``mdlm_nelbo``: continuous-time MDLM NELBO (a valid upper bound on the denoiser's NLL), ``t_samples`` t
  draws per sequence.
- ``ar_nll``: an AR model's exact NLL (an AR run, or the AR model inside an AR energy).
- ``mdlm_discrete_nelbo``: the T-step MDLM ELBO (upper bound on the NLL of ``edlm sample`` without energy).
- ``bound``: valid upper bound on the NLL of the EDLM sampler ``edlm sample --steps T --k k --window w --is-target row``
  runs (the paper's whole-row weights; the bound of the reveal-set sampler is not derived)
  (temperature 1, top-p 1, energy temperature 1, grid down to t_min, greedy final fill); discrete-time ELBO on
  the step marginals, each step Jensen-bounded with N inner draws (errs upward; loose for N = 1 as k grows).
- ``paper_estimate`` (and ``paper_estimate_jackknife`` when log Z is estimated): the EDLM paper's plug-in.
  NOT a bound in general. No log Z for a self-normalised energy (coAR); otherwise reported with the effective
  sample size of its log Z, and marked unavailable when that ESS is near 1.
All rows are in nats/token, perplexity per token and bits per character, with standard errors over sequences,
computed at ONE precision (``LikelihoodConfig.precision``), stated in the output.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from edlm.config import LikelihoodConfig, RunConfig
from edlm.diffusion.schedule import schedule_for
from edlm.errors import EdlmError
from edlm.likelihood.nelbo import (
    ar_nll_per_sequence,
    mdlm_nelbo_per_sequence,
    summarize,
)
from edlm.likelihood.estimators import (
    PaperEstimate,
    edlm_bound,
    make_step_plan,
    mdlm_discrete_nelbo,
    paper_estimate,
)
from edlm.models.denoiser import make_denoiser_fn
from edlm.progress import progress as show_progress
from edlm.stats import mean_interval


class LikelihoodError(EdlmError, ValueError):
    """A likelihood that cannot be computed for this model / energy; ``subject`` names the input."""


def is_self_normalised(energy) -> bool:
    """True when sum_{x0_M} mu(x0 | x_t) exp(-E(x0, x_t)) = 1 exactly, so log Z = 0 needs no estimate: the energy
    declares it (``Energy.self_normalised``: the zero energy and coAR do)."""
    return bool(energy.self_normalised)


def paper_summary(estimate: PaperEstimate, seq_len: int, min_ess: float, chars_per_token: float = 1.0,
                  num_proposals: int | None = None) -> dict:
    """Summary of a paper estimate, or ``{"available": False, "reason": ...}`` when its log Z is not to be trusted.

    The mean ESS is taken over the rows with a Monte-Carlo log Z (nan ESS = no log Z: self-normalised energy,
    or nothing masked). ESS near 1 means a single proposal carries the weight: log Z_hat is then biased low by
    an unknown amount (tens of nats in practice) and the "estimate" can even go negative.
    """
    ess = estimate.ess[torch.isfinite(estimate.ess)]
    if ess.numel() == 0:  # log Z = 0 exactly (self-normalised): nothing to check
        return dict(summarize(estimate.per_token, seq_len, chars_per_token), available=True, log_z="none")
    mean_ess = float(ess.mean())
    base = {"log_z": "monte_carlo", "mean_ess": mean_ess, "min_ess_required": min_ess,
            "num_proposals": num_proposals}
    if mean_ess < min_ess:
        return dict(base, available=False,
                    reason=f"mean effective sample size of log Z is {mean_ess:.2f} < {min_ess} (one proposal "
                           f"carries the weight): log Z is biased low by an unknown amount; no estimate")
    return dict(base, available=True, **summarize(estimate.per_token, seq_len, chars_per_token))


def sampler_description(settings: LikelihoodConfig, leftover: float) -> dict:
    """What the bound bounds, for the JSON: the exact ``edlm sample`` settings."""
    return {"command": f"edlm sample --steps {settings.steps} --k {settings.k} --window {settings.window} "
                       f"--is-target row",
            "steps": settings.steps, "k": settings.k, "window": settings.window, "t_min": settings.t_min,
            "temperature": 1.0, "top_p": 1.0, "energy_temperature": 1.0,
            "final_step": "greedy argmax fill of the positions still masked at t_min",
            "leftover_prob_per_position": leftover,
            "greedy_fill_cost_nats_per_token": -math.log1p(-leftover),
            "how": "discrete-time ELBO over reveal paths that reveal every position within the T steps (the "
                   "greedy fill's paths are dropped, which only lowers the sampler's probability: still an "
                   "upper bound on its NLL), costing -log(1 - leftover) nats per token"}


def edlm_per_sequence(settings: LikelihoodConfig, run_config: RunConfig, model, chunks: torch.Tensor, energy,
                      first_row: int = 0, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every estimator's per-sequence figure for a denoiser + energy on ``chunks`` (n, L) int64.

    Returns {name: (n,) float64 CPU tensor} (nats per token; ``<paper name>.ess`` the effective sample size of
    each row's log Z). ``chunks`` may be a shard of whole batches of ``settings.batch_size`` that starts at row
    ``first_row`` of the evaluated split: batch b's generators are seeded from ``settings.seed`` and its first
    row only, so a shard's rows equal those of a one-process run. Runs on the model's device with CPU
    generators; the bound and the T-step MDLM ELBO share their reveal paths (a paired difference).
    """
    device = next(model.parameters()).device
    schedule = schedule_for(run_config)
    mask_id = run_config.model.mask_id
    denoiser = make_denoiser_fn(model, mask_id, settings.precision, schedule)
    plan = make_step_plan(schedule, settings.steps, settings.window, settings.k, t_min=settings.t_min)
    variants = (("paper_estimate", "none"),) if is_self_normalised(energy) else (
        ("paper_estimate", "mean"), ("paper_estimate_jackknife", "jackknife"))
    parts: dict[str, list[torch.Tensor]] = {}
    for start in show_progress(range(0, chunks.shape[0], settings.batch_size), "edlm likelihood", progress):
        x0 = chunks[start:start + settings.batch_size].to(device)
        row = first_row + start  # the batch's first row in the split
        for name, log_z in variants:  # the same seed for paired estimators
            generator = torch.Generator().manual_seed(settings.seed + row)
            estimate = paper_estimate(x0, denoiser, energy, schedule, mask_id, generator, settings.is_samples,
                                      log_z, settings.eps_t, device)
            parts.setdefault(name, []).append(estimate.per_token)
            parts.setdefault(f"{name}.ess", []).append(estimate.ess)
        generator = torch.Generator().manual_seed(settings.seed + row + 1)
        parts.setdefault("bound", []).append(edlm_bound(x0, denoiser, energy, plan, mask_id, generator,
                                                        settings.inner, device))
        generator = torch.Generator().manual_seed(settings.seed + row + 1)
        parts.setdefault("mdlm_discrete_nelbo", []).append(mdlm_discrete_nelbo(x0, denoiser, plan, mask_id,
                                                                               generator, device))
    result = {name: torch.cat(values).double().cpu() for name, values in parts.items()}
    result["mdlm_nelbo"] = mdlm_nelbo_per_sequence(
        model, chunks, schedule, mask_id, settings.t_samples, settings.batch_size, settings.seed, settings.eps_t,
        settings.precision, progress, first_batch=first_row // settings.batch_size)
    ar_model = getattr(energy, "model", None)
    if ar_model is not None and getattr(ar_model, "causal", False):
        result["ar_nll"] = ar_nll_per_sequence(ar_model, chunks, mask_id, settings.batch_size, settings.precision,
                                               progress)
    return result


def edlm_summaries(settings: LikelihoodConfig, per_sequence: dict[str, torch.Tensor], seq_len: int,
                   chars_per_token: float = 1.0) -> dict[str, dict]:
    """``edlm_per_sequence``'s figures (all sequences) -> {name: summary dict}; see the module docstring."""
    result: dict[str, dict] = {}
    for name in ("paper_estimate", "paper_estimate_jackknife"):
        if name in per_sequence:
            joined = PaperEstimate(per_sequence[name], per_sequence[f"{name}.ess"])
            result[name] = paper_summary(joined, seq_len, settings.min_ess, chars_per_token, settings.is_samples)
    for name in ("bound", "mdlm_discrete_nelbo"):
        result[name] = summarize(per_sequence[name], seq_len, chars_per_token)
    paired = per_sequence["mdlm_discrete_nelbo"] - per_sequence["bound"]
    result["bound_improvement_over_mdlm_same_T"] = summarize(paired, seq_len, chars_per_token)
    result["mdlm_nelbo"] = dict(summarize(per_sequence["mdlm_nelbo"], seq_len, chars_per_token),
                                t_samples=settings.t_samples)
    if "ar_nll" in per_sequence:
        result["ar_nll"] = summarize(per_sequence["ar_nll"], seq_len, chars_per_token)
    return result


def edlm_likelihood(settings: LikelihoodConfig, run_config: RunConfig, model, chunks: torch.Tensor, energy,
                    chars_per_token: float = 1.0, progress: bool = False) -> dict[str, dict]:
    """All estimators for a denoiser + energy on ``chunks`` (N, L) int64, in one process.

    Returns {name: summary dict}; see the module docstring for the names and ``edlm_per_sequence`` for the
    seeding (``settings.seed``).
    """
    per_sequence = edlm_per_sequence(settings, run_config, model, chunks, energy, 0, progress)
    return edlm_summaries(settings, per_sequence, chunks.shape[1], chars_per_token)


def build_energy(settings: LikelihoodConfig, run_config: RunConfig, device, tokenizer=None):
    """The energy ``settings.energy`` names, on ``device`` at ``settings.precision`` (None without one), checked
    against ``tokenizer`` (the run's) when given: an hf: energy's tokenizer must give the same ids."""
    if not settings.energy:
        return None
    from edlm.energy import make_energy

    return make_energy(settings.energy, run_config.model, settings.energy_mode, device, settings.precision,
                       tokenizer)


def check_evaluable(run_config: RunConfig, energy) -> None:
    """Raise ``LikelihoodError`` when the run (with ``energy``, or without: None) has no figure ``edlm eval`` can
    compute."""
    kind = run_config.model.kind
    if energy is None and kind not in ("mdlm", "ar"):
        raise LikelihoodError(f"an {kind!r} model has no likelihood of its own: evaluate its denoiser with the "
                              f"energy nce:RUN_DIR")
    if energy is not None and kind != "mdlm":
        raise LikelihoodError(f"needs an MDLM denoiser run, got an {kind!r} model", "energy")
    if energy is not None and run_config.model.time_conditioning:
        raise LikelihoodError("needs a denoiser without time conditioning: the EDLM bound calls the denoiser "
                              "without t (model.time_conditioning=true is not supported)", "energy")


def likelihood_rows(settings: LikelihoodConfig, run_config: RunConfig, model, chunks: torch.Tensor, energy=None,
                    first_row: int = 0, progress: bool = False) -> dict[str, torch.Tensor]:
    """The per-sequence figures of ``chunks`` (n, L) int64, rows ``first_row`` .. of the evaluated split.

    Returns {name: (n,) float64 CPU tensor} in nats per token (``mdlm_nelbo`` or ``ar_nll`` without an energy;
    every estimator of ``edlm_per_sequence`` with one). ``chunks`` may be any block of whole batches of
    ``settings.batch_size`` (e.g. ``edlm.parallel.shard``): every batch's random draws depend on
    (``settings.seed``, its position in the split) only, so blocks computed apart and joined in order
    (``join_rows``) equal one computation over all rows.
    """
    if chunks.shape[0] == 0:
        return {}
    if energy is not None:
        return edlm_per_sequence(settings, run_config, model, chunks, energy, first_row, progress)
    if run_config.model.kind == "mdlm":
        return {"mdlm_nelbo": mdlm_nelbo_per_sequence(
            model, chunks, schedule_for(run_config), run_config.model.mask_id, settings.t_samples,
            settings.batch_size, settings.seed, settings.eps_t, settings.precision, progress,
            first_batch=first_row // settings.batch_size)}
    return {"ar_nll": ar_nll_per_sequence(model, chunks, run_config.model.mask_id, settings.batch_size,
                                          settings.precision, progress)}


def join_rows(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``likelihood_rows`` of consecutive blocks, in order -> the figures of all their rows (empty blocks skipped)."""
    parts = [part for part in parts if part]
    if not parts:
        raise LikelihoodError("no sequences to evaluate (max_sequences 0 or an empty split)")
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}  # (N,) each


def likelihood_summary(settings: LikelihoodConfig, run_config: RunConfig, per_sequence: dict[str, torch.Tensor],
                       seq_len: int, chars_per_token: float = 1.0, energy=None) -> dict:
    """``edlm eval``'s report from the per-sequence figures of every evaluated row: one JSON-able dict.

    Without an energy, the model's own figure (``kind`` = ``mdlm_nelbo_upper_bound`` or ``ar_exact_nll``) with
    nll_nats, bpc, ppl, their standard errors; with one, ``kind`` = ``edlm_likelihood``, the headline ``bound``
    at top level, every estimator under ``estimators``, and ``sampler_bounded`` saying exactly which sampler the
    bound is for. ``chars_per_token``: characters of decoded text per token (1.0 for character models): bits
    per character = nats per token / chars_per_token / ln 2.
    """
    common = {"precision": settings.precision, "chars_per_token": chars_per_token, "split": settings.split,
              "seed": settings.seed}
    if energy is None and "mdlm_nelbo" in per_sequence:
        return dict(summarize(per_sequence["mdlm_nelbo"], seq_len, chars_per_token),
                    kind="mdlm_nelbo_upper_bound", t_samples=settings.t_samples, eps_t=settings.eps_t, **common)
    if energy is None:
        return dict(summarize(per_sequence["ar_nll"], seq_len, chars_per_token), kind="ar_exact_nll", **common)
    result = edlm_summaries(settings, per_sequence, seq_len, chars_per_token)
    plan = make_step_plan(schedule_for(run_config), settings.steps, settings.window,
                          settings.k, t_min=settings.t_min)
    headline = result["bound"]
    return {"kind": "edlm_likelihood", **common,
            **{key: headline[key] for key in ("nll_nats", "bpc", "ppl", "stderr_nats", "stderr_bpc", "tokens",
                                              "sequences")},
            "settings": dataclasses.asdict(settings),
            "sampler_bounded": sampler_description(settings, plan.leftover),
            "estimators": result,
            "notes": {"bound": "valid upper bound on the NLL of the sampler in sampler_bounded (errs upward)",
                      "paper_estimate": "the EDLM paper's plug-in estimator: not a bound in general"
                                        + ("; no log Z (self-normalised energy)" if is_self_normalised(energy)
                                           else "; log Z by Monte Carlo, see mean_ess"),
                      "mdlm_nelbo": "continuous-time MDLM NELBO (upper bound for the denoiser alone); compare "
                                    "the bound with mdlm_discrete_nelbo (same T, paired), not with this row"}}


def likelihood_report(settings: LikelihoodConfig, run_config: RunConfig, model, chunks: torch.Tensor,
                      energy=None, chars_per_token: float = 1.0, progress: bool = False, tokenizer=None) -> dict:
    """``edlm eval`` in this process: one JSON-able dict (``likelihood_summary``), no printing.

    Args:
        settings: the evaluation knobs (range-checked when the config was built).
        run_config, model: the evaluated run (MDLM denoiser or AR model) on its device.
        chunks: (N, L) int64 sequences of the split (CPU); the first ``max_sequences`` are used (None: all).
        energy: a built energy; if None and ``settings.energy`` is set, it is built (``build_energy``) on the
            model's device, checked against ``tokenizer`` (the run's) when given.
    Several processes each compute ``likelihood_rows`` of their block and join them (``edlm eval`` under
    torchrun does, in ``edlm.commands``): the result equals this one.
    """
    if settings.max_sequences is not None:
        chunks = chunks[: settings.max_sequences]
    if energy is None:
        energy = build_energy(settings, run_config, next(model.parameters()).device, tokenizer)
    check_evaluable(run_config, energy)
    per_sequence = join_rows([likelihood_rows(settings, run_config, model, chunks, energy, 0, progress)])
    return likelihood_summary(settings, run_config, per_sequence, chunks.shape[1], chars_per_token, energy)


def report_lines(result: dict) -> list[str]:
    """``likelihood_summary``'s dict as the text ``edlm eval`` prints: each figure named for what it is (a bound
    of which sampler, an estimate, an exact NLL), bits per character ± one standard error over sequences, the
    paired improvement with its 95% t-interval over sequences."""
    def figure(summary: dict) -> str:
        return f"{summary['bpc']:.4f} ± {summary['stderr_bpc']:.4f} bpc"

    head = (f"{figure(result)} ({result['nll_nats']:.4f} nats/token, ppl {result['ppl']:.3f}) over "
            f"{result['tokens']:,} tokens of {result['split']}, {result['precision']}")
    if result["kind"] == "mdlm_nelbo_upper_bound":
        return [f"MDLM NELBO: {head}: an upper bound on the denoiser's NLL (continuous time, "
                f"{result['t_samples']} t draws per sequence)"]
    if result["kind"] == "ar_exact_nll":
        return [f"AR NLL: {head} (exact)"]
    estimators = result["estimators"]
    gain = estimators["bound_improvement_over_mdlm_same_T"]
    interval = mean_interval(gain["bpc"], gain["stderr_bpc"], gain["sequences"])
    where = f"(95% CI {interval.low:.4f}..{interval.high:.4f} bpc)"
    lines = [f"EDLM bound: {head}: an upper bound on the NLL of `{result['sampler_bounded']['command']}`",
             f"  MDLM bound, same T (that sampler without energy): {figure(estimators['mdlm_discrete_nelbo'])}",
             "  improvement over the MDLM bound (paired): "
             + (f"{gain['bpc']:.4f} bpc {where}" if interval.significant
                else f"no significant difference {where}"),
             f"  MDLM continuous-time NELBO (the denoiser alone): {figure(estimators['mdlm_nelbo'])}"]
    paper = estimators.get("paper_estimate_jackknife", estimators["paper_estimate"])
    lines.append("  the paper's estimate (not a bound): " + (figure(paper) if paper["available"]
                                                             else f"unavailable: {paper['reason']}"))
    if "ar_nll" in estimators:
        lines.append(f"  AR model's own NLL (exact): {figure(estimators['ar_nll'])}")
    return lines
