"""Monte-Carlo likelihood estimators for MDLM and EDLM, batched, usable on real models (docs/method.md §3.4).

Three quantities, all returned per sequence in nats per token (divided by all L positions):

* ``paper_estimate`` -- the EDLM paper's plug-in "NLL": log p(x0 | x_t) = log mu - E - log Z(x_t) put into the
  continuous-time MDLM weighting. Not a bound in general (docs/method.md §3.4: x1 = x2 uniform gives
  0.5 log 2 per sequence against a true NLL of log 2); kept to reproduce and audit the paper's numbers.
  Self-normalised energies (coAR) use no log Z; the others report the effective sample size of their
  Monte-Carlo log Z.
* ``edlm_bound`` -- a valid upper bound on the NLL of the sampler ``edlm sample`` runs (``StepPlan``: T steps on
  the grid 1 = t_0 > ... > t_T = t_min, window w, k candidates, greedy fill of what is still masked at t_min,
  temperature 1, top-p 1, energy temperature 1): the discrete-time ELBO on the step marginals p_k(x0_R | x_t),
  each step term bounded once more by Jensen (IWAE-style, ``num_inner``).
* ``mdlm_discrete_nelbo`` -- the same with k = 1 at every step (plain T-step MDLM). The continuous-time
  NELBO lives in ``edlm.diffusion.subs.nelbo_terms`` (and ``edlm.likelihood.nelbo`` over a split).

Protocols. ``log_probs_fn(x_t (B, L) int64) -> (B, L, V + 1)`` SUBS log-probs (mask column -inf, visible
positions one-hot). ``energy(candidates (B, k, L) int64, x_t (B, L), log_probs (B, L, V + 1)) -> (B, k)``,
low = likely, defines p(x0 | x_t) ∝ mu(x0 | x_t) exp(-E) (temperature tau: pass E / tau).

Devices. Every estimator runs on ``device`` (default: x0's; pass the denoiser's), moves x0 there, draws its
random numbers in float64 from a CPU ``generator`` (reproducible across devices) and returns CPU tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from edlm.diffusion.categorical import inverse_cdf
from edlm.diffusion.posterior import time_grid
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import corrupt, stratified_times
from edlm.sampling.importance import WINDOW_TOL  # the sampler's window test, so a bound's plan is the sampler's

LogProbsFn = Callable[[torch.Tensor], torch.Tensor]
EnergyFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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
    """Independent x ~ mu(. | x_t) by float64 inverse CDF (docs/method.md §2).

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


@dataclass(frozen=True)
class PaperEstimate:
    """``paper_estimate``'s output, on the CPU.

    per_token: (B,) float64 nats per token. ess: (B,) float64 effective sample size (sum w)^2 / sum w^2 of the
    ``num_proposals`` weights w = exp(-E) behind each row's log Z (between 1 and n; nan where no log Z was
    estimated: ``log_z="none"``, or nothing masked in the row).
    """

    per_token: torch.Tensor
    ess: torch.Tensor


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """(sum w)^2 / sum w^2 over the last axis, from log w (..., n); (...) float64, in [1, n] (nan if all w = 0)."""
    log_weights = log_weights.double()
    return (2 * torch.logsumexp(log_weights, -1) - torch.logsumexp(2 * log_weights, -1)).exp()


def paper_estimate(x0: torch.Tensor, log_probs_fn: LogProbsFn, energy: EnergyFn, schedule: LogLinearSchedule,
                   mask_id: int, generator: torch.Generator, num_proposals: int = 16,
                   log_z: Literal["none", "mean", "jackknife"] = "mean", eps_t: float = 1e-3,
                   device: torch.device | str | None = None) -> PaperEstimate:
    """The EDLM paper's plug-in "NLL" (one stratified t per row): per row

        w(t) * [ sum_{i masked} -log mu_i(x0_i | x_t) + E(x0, x_t) + log Z_hat(x_t) ] / L,

    t = eps_t + (1 - eps_t) u with u_i = (U + i) / B mod 1, x_t ~ q(x_t | x0), and log Z_hat from
    ``num_proposals`` draws x ~ mu(. | x_t) (visible positions copied), plain log-mean-exp or jackknife.
    ``log_z="none"`` uses log Z = 0 and draws no proposals: right for a self-normalised energy such as coAR,
    where mu exp(-E) = prod_{i masked} p_AR(x0_i | x0_<i) sums to exactly 1 over the masked tokens (sum out
    the last masked position first, then the one before, ...), so Z(x_t) = 1 (docs/method.md §3.4).

    Args: x0 (B, L) int64 on any device; ``generator`` a CPU generator; ``device`` where the denoiser and the
    energy run (default x0's).
    Returns: ``PaperEstimate`` on the CPU; the mean of ``per_token`` estimates (1 / (1 - eps_t)) int_{eps_t}^1
    of the plug-in integrand. NOT an upper bound (module docstring); and because log Z_hat is biased low,
    finite ``num_proposals`` pushes the estimate further DOWN (optimistic), by an amount that grows as the
    ESS falls towards 1; "jackknife" removes the 1/n part of that bias.
    """
    device = torch.device(device) if device is not None else x0.device
    x0 = x0.to(device)
    B, L = x0.shape
    t = stratified_times(B, generator, eps_t).double().to(device)  # (B,)
    x_t = corrupt(x0, t, schedule, mask_id, _uniforms((B, L), generator, device))
    log_probs = log_probs_fn(x_t).to(device)  # (B, L, V + 1)
    mu_term = -token_log_mu(log_probs, x0, x_t == mask_id)  # (B,) float64
    energy_x0 = energy(x0[:, None, :], x_t, log_probs)[:, 0].double().to(device)  # (B,)
    any_masked = (x_t == mask_id).any(-1)  # rows with nothing masked contribute exactly 0
    if log_z == "none":
        log_z_hat = torch.zeros_like(mu_term)
        ess = torch.full_like(mu_term, float("nan"))
    else:
        proposals = sample_from_denoiser(log_probs, num_proposals, generator)  # (B, n, L)
        log_weights = -energy(proposals, x_t, log_probs).double().to(device)  # (B, n)
        log_z_hat = log_z_estimate(log_weights, jackknife=(log_z == "jackknife"))
        ess = torch.where(any_masked, effective_sample_size(log_weights), torch.full_like(mu_term, float("nan")))
    bracket = torch.where(any_masked, mu_term + energy_x0 + log_z_hat, torch.zeros_like(mu_term))
    return PaperEstimate((schedule.weight(t) * bracket / L).cpu(), ess.cpu())


# ------------------------------------------------------------------------------------- discrete bound


@dataclass(frozen=True)
class StepPlan:
    """What the likelihood needs to know about a T-step sampler: per step n (from x_{t_n} to x_{t_{n+1}})
    the probability r_n that a still-masked position is revealed, and the number of SIR candidates k_n (1 =
    plain MDLM step). Positions still masked after the last step (probability ``leftover`` each, 0 when the
    last r_n is 1) are filled greedily with the argmax of mu, as ``edlm sample`` does."""

    reveal_probs: tuple[float, ...]
    num_candidates: tuple[int, ...]

    @property
    def num_steps(self) -> int:
        return len(self.reveal_probs)

    @property
    def leftover(self) -> float:
        """P(a position is still masked after the T steps) = prod_n (1 - r_n) (= t_min for the log-linear
        schedule on the sampler's grid, whatever eps)."""
        return math.prod(1.0 - r for r in self.reveal_probs)

    def conditioned_reveal_probs(self) -> tuple[float, ...]:
        """The forward process conditioned on every position being revealed within the T steps:
        P'(n_i = n) = c_n r_n / (1 - leftover), c_n = prod_{m<n} (1 - r_m), written as per-step reveal
        probabilities r'_n = c_n r_n / (c_n - leftover); the last one is 1."""
        leftover, still_masked, out = self.leftover, 1.0, []
        for r in self.reveal_probs:
            out.append(min(1.0, still_masked * r / (still_masked - leftover)) if still_masked > leftover else 1.0)
            still_masked *= 1.0 - r
        out[-1] = 1.0
        return tuple(out)


def make_step_plan(schedule: LogLinearSchedule, num_steps: int, window: float = 1.0, num_candidates: int = 1,
                   t_min: float = 1e-5) -> StepPlan:
    """Plan of ``edlm sample`` (docs/method.md §2, §3.3): the grid ``time_grid(num_steps, t_min)``,
    t_0 = 1 > ... > t_T = t_min, step n reveals with r_n = (alpha(t_{n+1}) - alpha(t_n)) / (1 - alpha(t_n))
    (float64) and uses k candidates iff window > 0 and t_n >= 1 - window (the sampler's ``in_window``; k = 1
    outside), then a greedy fill.

    The sampler always starts from all-[MASK], so the implied forward process is "position i is revealed at
    step n with probability r_n prod_{m<n} (1 - r_m)", whatever alpha(1) is. With t_min = 0 the last step
    reveals everything (r = 1 exactly) and there is no greedy fill.
    """
    times = time_grid(num_steps, t_min)
    reveal = schedule.reveal_probability(times[:-1], times[1:]).clamp(0.0, 1.0).tolist()
    ks = [num_candidates if window > 0 and float(t) >= 1.0 - window - WINDOW_TOL else 1 for t in times[:-1]]
    return StepPlan(tuple(reveal), tuple(ks))


def sample_reveal_steps(batch: int, length: int, plan: StepPlan, generator: torch.Generator,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Sample the path q' used by the bound: the step n_i at which each position is revealed, conditioned on
    n_i < T (``StepPlan.conditioned_reveal_probs``).

    P(n_i = n) = c_n r_n / (1 - leftover), independently per position; x_{t_n} is x0 with the positions
    {i : n_i >= n} masked and step n reveals R_n = {i : n_i = n}. Returns (batch, length) int64 on ``device``.
    """
    reveal = torch.tensor(plan.conditioned_reveal_probs(), dtype=torch.float64)
    still_masked = torch.cumprod(1.0 - reveal, 0)  # P'(n_i > n)
    cdf = 1.0 - still_masked
    cdf[-1] = 1.0
    uniforms = _uniforms((batch, length), generator, cdf.device)
    return torch.searchsorted(cdf, uniforms, right=True).to(device)  # first n with cdf[n] > u


def edlm_bound(x0: torch.Tensor, log_probs_fn: LogProbsFn, energy: EnergyFn | None, plan: StepPlan,
               mask_id: int, generator: torch.Generator, num_inner: int = 1,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Upper bound on -log p_T(x0) / L for the sampler described by ``plan``; one path per row.

    Which sampler. ``edlm sample`` with the plan's T, grid (t_min), window and k: at each step k candidates
    x0 ~ mu(. | x_t) (temperature 1, top-p 1), one chosen with probability softmax(-E) (energy temperature 1),
    each masked position revealed to it with probability r_n; what is masked after step T is set to the argmax
    of mu (greedy fill).

    Discrete-time ELBO. For any distribution q' over reveal paths, -log p_T(x0) <= E_q'[-log p(path, x0) +
    log q'(path)]. Take q' = the forward masking path conditioned on every position being revealed within the
    T steps (``sample_reveal_steps``; no position is left for the greedy fill). Such paths are a subset of the
    sampler's ways to produce x0, so dropping the others (a leftover filled greedily with x0's token) only
    lowers p_T: the bound stays TRUE, and never pays -log 1{x0 == argmax} (+inf for a stochastic x0). The
    reveal-pattern factors r^|R| (1 - r)^(m - |R|) cancel in p / q' up to the conditioning constant, so
        -log p_T(x0) <= -L log(1 - leftover) + E_q' [ sum_n -log p_k(x0_{R_n} | z_n) ],
    (leftover = t_min on the sampler's grid: a cost of about t_min nats per token), with
    p_k(x_R | z) = P(the candidate chosen among k i.i.d. draws of mu(. | z) with prob softmax(-E) equals x
    on R) = mu(x_R | z) E[ k w(y_1) / S ], y_1 ~ mu(. | z, y_R = x_R), y_2..k ~ mu(. | z), w = exp(-E),
    S = sum_j w(y_j). The inner expectation is estimated with ``num_inner`` i.i.d. draws (N):
        term_n = -log mu(x0_R | z_n) - log( (1/N) sum_{a=1..N} k w(y_1^a) / S^a ).
    For N = 1 this is the Jensen bound -log mu + E(y_1) + log(S / k). Steps with k = 1 (outside the window)
    give exactly -log mu(x0_R | z_n): plain MDLM. Rows with R_n empty contribute 0 and are not evaluated.

    Exact vs Monte Carlo: the path average is unbiased; the step terms are -log of unbiased estimates, so
    biased UP by Jensen (by about Var / (2 N) in relative terms). Hence the expectation is an upper bound for
    every N, decreasing in N (IWAE) to the exact discrete-time ELBO (``exact.exact_discrete_elbo``).

    Args:
        x0: (B, L) int64 clean tokens, any device. energy: may be None only if every k_n is 1.
        num_inner: N; each step scores B_active * N * k candidates in ONE energy call (memory!).
        device: where the denoiser and the energy run (default x0's); random numbers come from the CPU
        ``generator``.
    Returns: (B,) float64 on the CPU, nats per token, one forward path per row (repeat rows for more paths).
    """
    if plan.leftover >= 1.0:
        raise ValueError("edlm_bound: the plan reveals nothing (every reveal probability is 0)")
    device = torch.device(device) if device is not None else x0.device
    x0 = x0.to(device)
    B, L = x0.shape
    steps = sample_reveal_steps(B, L, plan, generator, device)  # (B, L)
    total = torch.full((B,), -L * math.log1p(-plan.leftover), dtype=torch.float64, device=device)
    for n, k in enumerate(plan.num_candidates):
        revealed = steps == n  # (B, L), R_n
        active = revealed.any(-1)
        if not active.any():
            continue
        rows = active.nonzero().squeeze(-1)
        x0_a, revealed_a = x0[rows], revealed[rows]
        x_t = torch.where(steps[rows] >= n, torch.full_like(x0_a, mask_id), x0_a)  # (b, L) = z_n
        log_probs = log_probs_fn(x_t).to(device)  # (b, L, V + 1)
        term = -token_log_mu(log_probs, x0_a, revealed_a)  # (b,)
        if k > 1:
            if energy is None:
                raise ValueError("edlm_bound: an energy is required when the plan has k > 1")
            term = term - _log_sir_ratio(x0_a, x_t, revealed_a, log_probs, energy, k, num_inner, generator)
        total[rows] += term
    return (total / L).cpu()


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
    energies = energy(candidates.reshape(b, num_inner * k, L), x_t, log_probs).double().to(x0.device)
    log_w = -energies.reshape(b, num_inner, k)  # (b, N, k)
    log_ratio = math.log(k) + log_w[..., 0] - torch.logsumexp(log_w, dim=-1)  # (b, N)
    return torch.logsumexp(log_ratio, dim=-1) - math.log(num_inner)


def mdlm_discrete_nelbo(x0: torch.Tensor, log_probs_fn: LogProbsFn, plan: StepPlan, mask_id: int,
                        generator: torch.Generator, device: torch.device | str | None = None) -> torch.Tensor:
    """T-step MDLM NELBO (k = 1 at every step): E_q [ sum_n -log mu(x0_{R_n} | z_n) ] / L, one path per row.

    Same random stream as ``edlm_bound`` with the same plan's reveal probabilities (so their difference is
    paired), the same greedy-fill treatment. (B,) float64 nats/token on the CPU.
    For the continuous-time NELBO see ``edlm.diffusion.subs.nelbo_terms``; this one tends to it as T grows.
    """
    plain = StepPlan(plan.reveal_probs, (1,) * plan.num_steps)
    return edlm_bound(x0, log_probs_fn, None, plain, mask_id, generator, device=device)


def mean_and_stderr(values: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of the mean along ``dim`` (for repeated single-path estimates)."""
    n = values.shape[dim]
    return values.mean(dim), values.std(dim, unbiased=True) / math.sqrt(n)
