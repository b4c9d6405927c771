"""``edlm eval --energy``: every likelihood figure for a denoiser + energy, each named for what it is.

- ``mdlm_nelbo``: continuous-time MDLM NELBO (a valid upper bound on the denoiser's NLL).
- ``mdlm_discrete_nelbo``: the T-step discrete-time MDLM ELBO (upper bound on the T-step sampler's NLL).
- ``paper_estimate`` / ``paper_estimate_jackknife``: the EDLM paper's plug-in estimator with log Z from N
  proposals (log-mean-exp, and its leave-one-out/jackknife correction). NOT a bound in general.
- ``bound``: valid upper bound on the NLL of the EDLM sampler with T steps, k candidates and window w
  (discrete-time ELBO on the step marginals, each step Jensen-bounded with N inner draws; errs upward, and
  is loose for N = 1 as k grows: it then pays KL(mu || p) on the unrevealed positions, so N >= 8 by default).
- ``ar_nll`` (AR energies only): the AR model's own exact NLL, for reference.
All in nats/token and bits per character with standard errors over sequences.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from edlm.diffusion.schedule import make_schedule
from edlm.evaluation.nelbo import ar_nll_per_sequence, mdlm_nelbo_per_sequence, summarize
from edlm.likelihood.estimators import edlm_bound, make_step_plan, mdlm_discrete_nelbo, paper_estimate
from edlm.sampling.generate import make_denoiser_fn


def edlm_likelihood(config, model, chunks: torch.Tensor, energy, *, steps: int = 32, k: int = 2,
                    window: float = 1.0, is_samples: int = 16, inner: int = 8, batch_size: int = 16,
                    seed: int = 0, precision: str = "fp32", progress: bool = False) -> dict[str, dict]:
    """All estimators on ``chunks`` (N, L); returns {name: summary dict (bpc, stderr_bpc, ...)}."""
    schedule = make_schedule(eps=config.train.schedule_eps)
    mask_id, L = config.model.mask_id, config.model.seq_len
    denoiser = make_denoiser_fn(model, mask_id, precision)
    plan = make_step_plan(schedule, steps, window, k, t_min=0.0)
    values: dict[str, list[torch.Tensor]] = {name: [] for name in (
        "paper_estimate", "paper_estimate_jackknife", "bound", "mdlm_discrete_nelbo")}
    for start in tqdm(range(0, chunks.shape[0], batch_size), desc="edlm likelihood", disable=not progress):
        x0 = chunks[start:start + batch_size]
        # the same generator seed for paired estimators: differences are not drowned in path noise
        for name, log_z in (("paper_estimate", "mean"), ("paper_estimate_jackknife", "jackknife")):
            generator = torch.Generator().manual_seed(seed + start)
            values[name].append(paper_estimate(x0, denoiser, energy, schedule, mask_id, generator,
                                               max(is_samples, 2), log_z, config.train.eps_t).cpu())
        generator = torch.Generator().manual_seed(seed + start + 1)
        values["bound"].append(edlm_bound(x0, denoiser, energy, plan, mask_id, generator, inner).cpu())
        generator = torch.Generator().manual_seed(seed + start + 1)
        values["mdlm_discrete_nelbo"].append(mdlm_discrete_nelbo(x0, denoiser, plan, mask_id, generator).cpu())
    result = {name: summarize(torch.cat(v), L) for name, v in values.items()}
    # bound and T-step MDLM ELBO share their reveal paths (same seed): their difference is paired
    paired = torch.cat(values["mdlm_discrete_nelbo"]) - torch.cat(values["bound"])
    result["bound_improvement_over_mdlm_same_T"] = summarize(paired, L)
    result["mdlm_nelbo"] = summarize(mdlm_nelbo_per_sequence(model, chunks, schedule, mask_id, 1, batch_size,
                                                             seed), L)
    ar_model = getattr(energy, "model", None)
    if ar_model is not None and getattr(ar_model, "causal", False):
        result["ar_nll"] = summarize(ar_nll_per_sequence(ar_model, chunks, mask_id, batch_size), L)
    return result


def edlm_likelihood_report(config, model, chunks, args, device) -> dict:
    """CLI entry (``edlm eval --energy``): builds the energy and returns one JSON-able dict."""
    from edlm.energy import make_energy

    energy = make_energy(args.energy, config.model, args.energy_mode, device)
    result = edlm_likelihood(config, model, chunks, energy, steps=args.steps, k=args.k, window=args.window,
                             is_samples=args.is_samples, inner=args.inner, batch_size=args.batch_size, seed=args.seed,
                             progress=not args.json)
    headline = result["bound"]
    return {"kind": "edlm_likelihood", "energy": args.energy, "energy_mode": args.energy_mode,
            "steps": args.steps, "k": args.k, "window": args.window, "is_samples": args.is_samples,
            "inner": args.inner,
            **{key: headline[key] for key in ("nll_nats", "bpc", "ppl", "stderr_bpc", "tokens")},
            "estimators": result,
            "notes": {"bound": "valid upper bound on the NLL of the T-step EDLM sampler (errs upward)",
                      "paper_estimate": "the EDLM paper's plug-in estimator: not a bound in general",
                      "mdlm_nelbo": "continuous-time MDLM NELBO (upper bound for the denoiser alone)"}}
