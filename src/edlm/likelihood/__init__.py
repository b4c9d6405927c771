"""Likelihood of MDLM and EDLM: Monte-Carlo estimators for real models and brute force for tiny ones.

- ``nelbo``: over a whole split, the MDLM NELBO (``mdlm_nelbo_per_sequence``) and the exact AR NLL
  (``ar_nll_per_sequence``); ``summarize`` turns per-sequence nats into nats/token, bits per character, ppl.
- ``estimators``: ``edlm_bound`` (valid upper bound on the NLL of the sampler ``edlm sample`` runs),
  ``mdlm_discrete_nelbo`` (its k = 1 case), ``paper_estimate`` (the EDLM paper's plug-in, not a bound),
  ``log_z_estimate`` (log-mean-exp and jackknife), ``effective_sample_size``. The continuous-time MDLM NELBO of
  one batch is ``edlm.diffusion.subs.nelbo_terms``.
- ``exact``: enumeration over V^L sequences, mask patterns and reveal paths (V 2-3, L 2-3) giving the
  sampler's exact output distribution, the exact discrete-time ELBO and the exact continuous-time values.
- ``report``: ``likelihood_report`` (``edlm eval``, with and without an energy), one JSON-able dict.
"""

from edlm.likelihood.estimators import (
    PaperEstimate,
    StepPlan,
    edlm_bound,
    effective_sample_size,
    log_z_estimate,
    make_step_plan,
    mdlm_discrete_nelbo,
    mean_and_stderr,
    paper_estimate,
    sample_from_denoiser,
    sample_reveal_steps,
)
from edlm.likelihood.exact import (
    all_mask_patterns,
    all_sequences,
    exact_discrete_elbo,
    exact_mdlm_nelbo,
    exact_paper_value,
    exact_sampler_distribution,
    sequence_index,
    sir_choice_probs,
    sir_jensen_terms,
)

__all__ = [
    "PaperEstimate", "StepPlan", "edlm_bound", "effective_sample_size", "log_z_estimate", "make_step_plan",
    "mdlm_discrete_nelbo", "mean_and_stderr",
    "paper_estimate", "sample_from_denoiser", "sample_reveal_steps", "all_mask_patterns", "all_sequences",
    "exact_discrete_elbo", "exact_mdlm_nelbo", "exact_paper_value", "exact_sampler_distribution",
    "sequence_index", "sir_choice_probs", "sir_jensen_terms",
]
