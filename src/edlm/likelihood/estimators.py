"""Monte-Carlo likelihood estimators for MDLM and EDLM, batched, usable on real models (notes, section 3.4).

Three quantities, all returned per sequence in nats per token (divided by all L positions):

* ``paper_estimate`` -- the EDLM paper's plug-in "NLL": log p(x0 | x_t) = log mu - E - log Z(x_t) put into the
  continuous-time MDLM weighting. Not a bound in general (notes 3.4: x1 = x2 uniform gives 0.5 log 2 per
  sequence against a true NLL of log 2); kept to reproduce and audit the paper's numbers.
* ``edlm_bound`` -- a valid upper bound on the NLL of the distribution the EDLM sampler (T steps, window w,
  k candidates, sampling-importance-resampling) actually draws from: the discrete-time ELBO built on the
  step marginals p_k(x0_R | x_t), each step term bounded once more by Jensen (IWAE-style, ``num_inner``).
* ``mdlm_discrete_nelbo`` -- the same with k = 1 at every step (plain T-step MDLM). The continuous-time
  NELBO lives in ``edlm.diffusion.subs.nelbo_terms`` (and ``edlm.evaluation.nelbo`` over a split).

Protocols. ``log_probs_fn(x_t (B, L) int64) -> (B, L, V + 1)`` SUBS log-probs (mask column -inf, visible
positions one-hot). ``energy(candidates (B, k, L) int64, x_t (B, L), log_probs (B, L, V + 1)) -> (B, k)``,
low = likely, defines p(x0 | x_t) ∝ mu(x0 | x_t) exp(-E) (temperature tau: pass E / tau). Random numbers come
from ``generator`` (drawn on its device, then moved to x0's device), in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import corrupt, masked_token_nll, stratified_times
from edlm.sampling.categorical import inverse_cdf

LogProbsFn = Callable[[torch.Tensor], torch.Tensor]
EnergyFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
WINDOW_TOL = 1e-12  # same tolerance as the sampler's in_window test


# ----------------------------------------------------------------------------------------------- log Z


def log_z_estimate(log_weights: torch.Tensor, jackknife: bool = False) -> torch.Tensor:
    """log Z_hat from n proposal draws: log-mean-exp of log w = -E over the last axis.

    Args: log_weights (..., n) float, -E(x^(j), x_t) for x^(j) ~ mu(. | x_t); may hold -inf (w = 0).
    Returns: (...) in the dtype of ``log_weights``.

    Bias. The mean of the weights is unbiased for Z = E_mu[exp(-E)], so its log is biased LOW (Jensen):
    E[log Z_hat_n] = log Z - Var(w) / (2 n Z^2) + O(n^-2). The jackknife
        log Z_jack = n log Z_n - (n - 1) mean_i log Z_{n-1, (-i)}
    (leave-one-out log-mean-exps) cancels the 1/n term, leaving O(n^-2) of either sign. It needs n >= 2.
    A leave-one-out sum that is 0 (every other weight 0) gives -inf/nan.
    """
    n = log_weights.shape[-1]
    log_z = torch.logsumexp(log_weights, dim=-1) - math.log(n)
    if not jackknife:
        return log_z
    if n < 2:
        raise ValueError("jackknife log Z needs at least 2 proposals (num_proposals >= 2)")
    return n * log_z - (n - 1) * (_leave_one_out_logsumexp(log_weights) - math.log(n - 1)).mean(-1)


def _leave_one_out_logsumexp(log_weights: torch.Tensor) -> torch.Tensor:
    """log sum_{j != i} exp(log_weights_j) for every i; (..., n) -> (..., n), O(n) memory.

    Relative to the largest weight (index a): the sum without i != a is 1 + (others - e_i) >= 1, so no
    cancellation; the sum without a is a logsumexp of the others, taken directly."""
    top, top_index = log_weights.max(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    scaled = (log_weights - top).exp()  # (..., n), the top entry is 1
    is_top = torch.zeros_like(scaled, dtype=torch.bool).scatter_(-1, top_index, True)
    others = scaled.masked_fill(is_top, 0.0).sum(-1, keepdim=True)  # may underflow: only added to 1 below
    without_top = torch.logsumexp(log_weights.masked_fill(is_top, float("-inf")), -1, keepdim=True)
    return torch.where(is_top, without_top, top + torch.log1p(others - scaled))


# ------------------------------------------------------------------------------------------- sampling


def _uniforms(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """float64 uniforms in [0, 1) drawn on the generator's device, returned on ``device``."""
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=generator.device).to(device)


def sample_from_denoiser(log_probs: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Independent x ~ mu(. | x_t) by float64 inverse CDF (notes, section 2).

    Args: log_probs (B, L, V + 1) SUBS log-probs (visible positions one-hot, so they come back copied).
    Returns: (B, num_samples, L) int64. Zero-probability tokens (the mask column included) are never drawn.
    """
    B, L, _ = log_probs.shape
    uniforms = _uniforms((B, L, num_samples), generator, log_probs.device)
    drawn = inverse_cdf(log_probs.double().exp(), uniforms)  # (B, L, n)
    return drawn.clamp_(max=log_probs.shape[-1] - 2).transpose(1, 2).contiguous()  # (B, n, L)


def token_log_mu(log_probs: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """sum_{i in positions} log mu_i(tokens_i | x_t); positions (B, L) bool, tokens (B, L). Returns (B,) float64.

    Positions outside the set are excluded explicitly (no 0 * inf)."""
    picked = log_probs.double().gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, L)
    return torch.where(positions, picked, torch.zeros_like(picked)).sum(-1)


# --------------------------------------------------------------------------------------- paper estimate


def paper_estimate(x0: torch.Tensor, log_probs_fn: LogProbsFn, energy: EnergyFn, schedule: LogLinearSchedule,
                   mask_id: int, generator: torch.Generator, num_proposals: int = 16,
                   log_z: Literal["mean", "jackknife"] = "mean", eps_t: float = 1e-3) -> torch.Tensor:
    """The EDLM paper's plug-in "NLL" (one stratified t per row): per row

        w(t) * [ sum_{i masked} -log mu_i(x0_i | x_t) + E(x0, x_t) + log Z_hat(x_t) ] / L,

    t = eps_t + (1 - eps_t) u with u_i = (U + i) / B mod 1, x_t ~ q(x_t | x0), and log Z_hat from
    ``num_proposals`` draws x ~ mu(. | x_t) (visible positions copied), plain log-mean-exp or jackknife.

    Args: x0 (B, L) int64; ``generator`` must be a CPU generator (``stratified_times``).
    Returns: (B,) float64 nats per token; mean over rows estimates (1 / (1 - eps_t)) int_{eps_t}^1 of the
    plug-in integrand. NOT an upper bound (module docstring); and because log Z_hat is biased low, finite
    ``num_proposals`` pushes the estimate further DOWN (optimistic); "jackknife" removes the 1/n part.
    """
    B, L = x0.shape
    t = stratified_times(B, generator, eps_t).double().to(x0.device)  # (B,)
    x_t = corrupt(x0, t, schedule, mask_id, _uniforms((B, L), generator, x0.device))
    log_probs = log_probs_fn(x_t)  # (B, L, V + 1)
    mu_term = masked_token_nll(log_probs.double(), x0, x_t, mask_id)  # (B,)
    energy_x0 = energy(x0[:, None, :], x_t, log_probs)[:, 0].double()  # (B,)
    proposals = sample_from_denoiser(log_probs, num_proposals, generator)  # (B, n, L)
    log_weights = -energy(proposals, x_t, log_probs).double()  # (B, n)
    log_z_hat = log_z_estimate(log_weights, jackknife=(log_z == "jackknife"))
    any_masked = (x_t == mask_id).any(-1)  # rows with nothing masked contribute exactly 0
    bracket = torch.where(any_masked, mu_term + energy_x0 + log_z_hat, torch.zeros_like(mu_term))
    return schedule.weight(t) * bracket / L


# ------------------------------------------------------------------------------------- discrete bound


@dataclass(frozen=True)
class StepPlan:
    """What the likelihood needs to know about a T-step sampler: per step n (from x_{t_n} to x_{t_{n+1}})
    the probability that a still-masked position is revealed, and the number of SIR candidates k_n (1 = plain
    MDLM step). The last reveal probability must be 1 (everything revealed at the end)."""

    reveal_probs: tuple[float, ...]
    num_candidates: tuple[int, ...]

    @property
    def num_steps(self) -> int:
        return len(self.reveal_probs)


def make_step_plan(schedule: LogLinearSchedule, num_steps: int, window: float = 1.0, num_candidates: int = 1,
                   t_min: float = 0.0) -> StepPlan:
    """Plan of the EDLM sampler on the uniform grid t_0 = 1 > ... > t_T = t_min (notes, 3.3).

    Step n uses r_n = (alpha(t_{n+1}) - alpha(t_n)) / (1 - alpha(t_n)) and k candidates iff
    t_n >= 1 - window (k = 1 outside the window). The sampler always starts from all-[MASK], so the implied
    forward process is "position i is revealed at step n with probability r_n prod_{m<n} (1 - r_m)", whatever
    alpha(1) is.

    Final fill. With t_min = 0 (alpha(0) = 1 for the log-linear schedule, any eps) the last step reveals
    everything and the plan is exactly the sampler's. With alpha(t_min) < 1 the sampler fills the leftovers
    greedily (argmax of mu), which has no density and admits no finite bound; the plan then appends one
    final step with r = 1 that draws the leftovers like any other step (k by the window at t = t_min), i.e.
    it describes the sampler with a *stochastic* final fill.
    """
    times = torch.linspace(1.0, t_min, num_steps + 1, dtype=torch.float64)
    alphas = schedule.alpha(times)
    reveal = ((alphas[1:] - alphas[:-1]) / (1.0 - alphas[:-1])).clamp(0.0, 1.0).tolist()
    ks = [num_candidates if float(t) >= 1.0 - window - WINDOW_TOL else 1 for t in times[:-1]]
    if float(alphas[-1]) < 1.0 - 1e-12:
        reveal.append(1.0)
        ks.append(num_candidates if t_min >= 1.0 - window - WINDOW_TOL else 1)
    reveal[-1] = 1.0  # exact, not 1 - rounding
    return StepPlan(tuple(reveal), tuple(ks))


def sample_reveal_steps(batch: int, length: int, plan: StepPlan, generator: torch.Generator,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Sample the forward masking path: the step n_i at which each position is revealed.

    P(n_i = n) = r_n prod_{m<n} (1 - r_m), independently per position; x_{t_n} is x0 with the positions
    {i : n_i >= n} masked and step n reveals R_n = {i : n_i = n}. Returns (batch, length) int64.
    """
    reveal = torch.tensor(plan.reveal_probs, dtype=torch.float64)
    still_masked = torch.cumprod(1.0 - reveal, 0)  # P(n_i > n)
    cdf = (1.0 - still_masked).to(device)
    cdf[-1] = 1.0
    uniforms = _uniforms((batch, length), generator, torch.device(device))
    return torch.searchsorted(cdf, uniforms, right=True)  # first n with cdf[n] > u


def edlm_bound(x0: torch.Tensor, log_probs_fn: LogProbsFn, energy: EnergyFn | None, plan: StepPlan,
               mask_id: int, generator: torch.Generator, num_inner: int = 1) -> torch.Tensor:
    """Upper bound on -log p_T(x0) / L for the EDLM sampler described by ``plan``; one path per row.

    Discrete-time ELBO. With z_0 = all-[MASK], z_T = x0 and q the forward path (``sample_reveal_steps``),
    a reverse step keeps a masked position masked w.p. 1 - r_n or reveals it to the SIR-chosen candidate; q
    reveals it w.p. r_n to x0. The reveal-pattern factors r^|R| (1 - r)^(m - |R|) cancel in p / q, so
        -log p_T(x0) <= E_q [ sum_n -log p_k(x0_{R_n} | z_n) ],
    p_k(x_R | z) = P(the candidate chosen among k i.i.d. draws of mu(. | z) with prob softmax(-E) equals x
    on R) = mu(x_R | z) E[ k w(y_1) / S ], y_1 ~ mu(. | z, y_R = x_R), y_2..k ~ mu(. | z), w = exp(-E),
    S = sum_j w(y_j). The inner expectation is estimated with ``num_inner`` i.i.d. draws (N):
        term_n = -log mu(x0_R | z_n) - log( (1/N) sum_{a=1..N} k w(y_1^a) / S^a ).
    For N = 1 this is the Jensen bound -log mu + E(y_1) + log(S / k). Steps with k = 1 (outside the window)
    give exactly -log mu(x0_R | z_n): plain MDLM. Rows with R_n empty contribute 0 and are not evaluated.

    Exact vs Monte Carlo: the path average is unbiased; the step terms are -log of unbiased estimates, so
    biased UP by Jensen (by about Var / (2 N) in relative terms). Hence the expectation is an upper bound for
    every N, decreasing in N (IWAE) to the exact discrete-time ELBO, which is tight when the sampler's path
    posterior equals q (e.g. exact energy with k -> infinity).

    Args:
        x0: (B, L) int64 clean tokens. energy: may be None only if every k_n is 1.
        num_inner: N; each step scores B_active * N * k candidates in ONE energy call (memory!).
    Returns: (B,) float64, nats per token, one forward path per row (repeat rows for more paths).
    """
    B, L = x0.shape
    steps = sample_reveal_steps(B, L, plan, generator, x0.device)  # (B, L)
    total = torch.zeros(B, dtype=torch.float64, device=x0.device)
    for n, k in enumerate(plan.num_candidates):
        revealed = steps == n  # (B, L), R_n
        active = revealed.any(-1)
        if not active.any():
            continue
        rows = active.nonzero().squeeze(-1)
        x0_a, revealed_a = x0[rows], revealed[rows]
        x_t = torch.where(steps[rows] >= n, torch.full_like(x0_a, mask_id), x0_a)  # (b, L) = z_n
        log_probs = log_probs_fn(x_t)  # (b, L, V + 1)
        term = -token_log_mu(log_probs, x0_a, revealed_a)  # (b,)
        if k > 1:
            if energy is None:
                raise ValueError("edlm_bound: an energy is required when the plan has k > 1")
            term = term - _log_sir_ratio(x0_a, x_t, revealed_a, log_probs, energy, k, num_inner, generator)
        total[rows] += term
    return total / L


def _log_sir_ratio(x0: torch.Tensor, x_t: torch.Tensor, revealed: torch.Tensor, log_probs: torch.Tensor,
                   energy: EnergyFn, k: int, num_inner: int, generator: torch.Generator) -> torch.Tensor:
    """log( (1/N) sum_a k w(y_1^a) / S^a ): the estimate of log p_k(x0_R | x_t) - log mu(x0_R | x_t).

    Candidate a * k + 0 is y_1 (conditioned on y_R = x0_R), a * k + 1 .. a * k + k - 1 are free draws.
    Returns (b,) float64.
    """
    b, L = x0.shape
    candidates = sample_from_denoiser(log_probs, num_inner * k, generator).reshape(b, num_inner, k, L)
    conditioned = torch.where(revealed[:, None, :], x0[:, None, :], candidates[:, :, 0])  # (b, N, L)
    candidates[:, :, 0] = conditioned
    energies = energy(candidates.reshape(b, num_inner * k, L), x_t, log_probs).double()  # (b, N * k)
    log_w = -energies.reshape(b, num_inner, k)  # (b, N, k)
    log_ratio = math.log(k) + log_w[..., 0] - torch.logsumexp(log_w, dim=-1)  # (b, N)
    return torch.logsumexp(log_ratio, dim=-1) - math.log(num_inner)


def mdlm_discrete_nelbo(x0: torch.Tensor, log_probs_fn: LogProbsFn, plan: StepPlan, mask_id: int,
                        generator: torch.Generator) -> torch.Tensor:
    """T-step MDLM NELBO (k = 1 at every step): E_q [ sum_n -log mu(x0_{R_n} | z_n) ] / L, one path per row.

    Same random stream as ``edlm_bound`` with the same plan's reveal probabilities. (B,) float64 nats/token.
    For the continuous-time NELBO see ``edlm.diffusion.subs.nelbo_terms``; this one tends to it as T grows.
    """
    plain = StepPlan(plan.reveal_probs, (1,) * plan.num_steps)
    return edlm_bound(x0, log_probs_fn, None, plain, mask_id, generator)


def mean_and_stderr(values: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of the mean along ``dim`` (for repeated single-path estimates)."""
    n = values.shape[dim]
    return values.mean(dim), values.std(dim, unbiased=True) / math.sqrt(n)
