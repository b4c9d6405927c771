"""Brute-force likelihoods for tiny problems (V 2-3, L 2-3): enumerate every sequence, mask pattern and
reveal path, so that the Monte-Carlo estimators in ``estimators.py`` can be checked against exact numbers.

Everything here is float64 and O(V^L * 3^L) per step group, plus the SIR marginals, which enumerate the
multisets of k - 1 competing candidates (C(C + k - 2, k - 1) of them for C sequences consistent with x_t).
Sequences are indexed lexicographically, position 0 most significant (``all_sequences``).

Functions return nats per token (divided by L) for bounds, probabilities for distributions.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.likelihood.estimators import EnergyFn, LogProbsFn, StepPlan

MAX_MULTISETS = 2_000_000


def all_sequences(vocab_size: int, length: int) -> torch.Tensor:
    """Every sequence of V^L, lexicographic (row index = sum_i x_i V^(L-1-i)); (V^L, L) int64."""
    grids = torch.cartesian_prod(*[torch.arange(vocab_size)] * length)
    return grids.reshape(vocab_size ** length, length)


def sequence_index(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Row of ``all_sequences`` holding each sequence; tokens (..., L) -> (...) int64."""
    powers = vocab_size ** torch.arange(tokens.shape[-1] - 1, -1, -1, device=tokens.device)
    return (tokens * powers).sum(-1)


def all_mask_patterns(length: int) -> torch.Tensor:
    """Every subset of positions as a (2^L, L) bool tensor; row b masks position i iff bit i of b is set."""
    bits = torch.arange(2 ** length)[:, None] >> torch.arange(length)[None, :]
    return (bits & 1).bool()


# ------------------------------------------------------------------------------------ exact SIR marginal


@lru_cache(maxsize=64)
def _multisets(num_items: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """All multisets of ``size`` draws from ``num_items`` items: counts (M, C) and log multinomial coefficients
    log(size! / prod counts!) (M,). Enumerated as "stars and bars": C - 1 bars among size + C - 1 slots."""
    if math.comb(num_items + size - 1, size) > MAX_MULTISETS:
        raise ValueError(f"too many candidate multisets for C={num_items}, k-1={size}: shrink V, L or k")
    slots = size + num_items - 1
    num_multisets = math.comb(slots, num_items - 1)
    bars = np.array(list(itertools.combinations(range(slots), num_items - 1)), dtype=np.int64)
    bars = bars.reshape(num_multisets, num_items - 1)  # (M, C - 1)
    edges = np.concatenate([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), slots)], axis=1)
    counts = np.diff(edges, axis=1) - 1  # (M, C)
    log_factorial = np.array([math.lgamma(j + 1.0) for j in range(size + 1)])
    log_coef = log_factorial[size] - log_factorial[counts].sum(-1)
    return counts, log_coef


def _competitors(mu: np.ndarray, log_w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distribution of S' = sum of k - 1 i.i.d. weights w~(y_j), y_j ~ mu, with w~ = exp(log_w - max).

    Args: mu (C,) > 0 summing to 1, log_w (C,) (may hold -inf). Returns (w~ (C,), S' values (M,), probs (M,)).
    """
    w = np.exp(log_w - np.max(log_w)) if np.isfinite(np.max(log_w)) else np.ones_like(mu)
    counts, log_coef = _multisets(len(mu), k - 1)
    with np.errstate(divide="ignore"):
        probs = np.exp(log_coef + counts @ np.log(mu))
    return w, counts @ w, probs


def sir_choice_probs(mu: np.ndarray, log_weights: np.ndarray, k: int) -> np.ndarray:
    """Exact probability that SIR picks each sequence: k i.i.d. draws y_j ~ mu, keep j w.p. w_j / sum w.

        P(pick y) = k mu(y) E_{y_2..k}[ w(y) / (w(y) + S') ].

    Args: mu (C,) float64 > 0 summing to 1; log_weights (C,) = -E. Returns (C,) summing to 1.
    If every candidate drawn has w = 0 the pick is taken uniform (softmax of all -inf is undefined).
    """
    if k == 1:
        return mu.copy()
    w, competitor_sums, probs = _competitors(mu, log_weights, k)
    total = w[:, None] + competitor_sums[None, :]  # (C, M)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, w[:, None] / total, 1.0 / k)
    return k * mu * (ratio @ probs)


def sir_jensen_terms(mu: np.ndarray, log_weights: np.ndarray, k: int) -> np.ndarray:
    """Per sequence y: E_{y_2..k}[ -log( k w(y) / (w(y) + S') ) ] = E(y) + E[log(S / k)] (shift-invariant).

    The N = 1 Jensen term of ``edlm_bound`` for a given conditioned draw y_1 = y. Returns (C,) (+inf if w = 0).
    """
    if k == 1:
        return np.zeros_like(mu)
    w, competitor_sums, probs = _competitors(mu, log_weights, k)
    with np.errstate(divide="ignore"):
        log_terms = np.log((w[:, None] + competitor_sums[None, :]) / k) - np.log(w)[:, None]  # (C, M)
    return log_terms @ probs


# ------------------------------------------------------------------------------------ per-state oracle


class _Oracle:
    """Caches, per partially masked state z, log mu(y | z) over all V^L sequences and the energies."""

    def __init__(self, vocab_size: int, length: int, log_probs_fn: LogProbsFn, energy: EnergyFn | None,
                 mask_id: int):
        self.sequences = all_sequences(vocab_size, length)  # (C_all, L)
        self.log_probs_fn, self.energy, self.mask_id = log_probs_fn, energy, mask_id
        self._cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._sir_cache: dict[tuple, np.ndarray] = {}

    def tables(self, state: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(log mu(y | z) (C_all,), -E(y, z) (C_all,), -inf where mu = 0)."""
        if state not in self._cache:
            x_t = torch.tensor(state, dtype=torch.int64)[None]  # (1, L)
            log_probs = self.log_probs_fn(x_t).double()  # (1, L, V + 1)
            per_position = log_probs[0].gather(-1, self.sequences.T).T  # (C_all, L)
            log_mu = per_position.sum(-1)
            log_w = torch.full_like(log_mu, float("-inf"))
            support = torch.isfinite(log_mu)
            if self.energy is not None:
                log_w[support] = -self.energy(self.sequences[support][None], x_t, log_probs)[0].double()
            else:
                log_w[support] = 0.0
            self._cache[state] = (log_mu.numpy(), log_w.numpy())
        return self._cache[state]

    def choice_probs(self, state: tuple[int, ...], k: int) -> np.ndarray:
        """P(SIR with k candidates picks y | z) over all V^L sequences; (C_all,)."""
        return self._sir(state, k, sir_choice_probs, 0.0)

    def jensen_terms(self, state: tuple[int, ...], k: int) -> np.ndarray:
        """``sir_jensen_terms`` over all V^L sequences (+inf off the support of mu); (C_all,)."""
        return self._sir(state, k, sir_jensen_terms, np.inf)

    def _sir(self, state, k, function, fill) -> np.ndarray:
        key = (state, k, function.__name__)
        if key not in self._sir_cache:
            log_mu, log_w = self.tables(state)
            support = np.isfinite(log_mu)
            out = np.full_like(log_mu, fill)
            out[support] = function(np.exp(log_mu[support]), log_w[support], k)
            self._sir_cache[key] = out
        return self._sir_cache[key]


def _masked_state(x0: tuple[int, ...], masked: tuple[bool, ...], mask_id: int) -> tuple[int, ...]:
    return tuple(mask_id if m else v for v, m in zip(x0, masked))


# ---------------------------------------------------------------------------- EDLM sampler distribution


def exact_sampler_distribution(vocab_size: int, length: int, log_probs_fn: LogProbsFn, energy: EnergyFn | None,
                               plan: StepPlan, mask_id: int | None = None) -> torch.Tensor:
    """Exact distribution of the EDLM sampler's output over all V^L sequences; (V^L,) float64, sums to 1.

    State z = x_t. Step n: pick y by SIR with k_n candidates (exact ``sir_choice_probs``), reveal each masked
    position independently w.p. r_n to y's token. Summed over every reveal subset R and every y. Positions
    still masked after the last step are filled with the argmax of mu(. | z) (greedy fill, as ``edlm sample``).
    """
    mask_id = vocab_size if mask_id is None else mask_id
    oracle = _Oracle(vocab_size, length, log_probs_fn, energy, mask_id)
    sequences = oracle.sequences.tolist()
    states: dict[tuple[int, ...], float] = {(mask_id,) * length: 1.0}
    for r, k in zip(plan.reveal_probs, plan.num_candidates):
        new_states: dict[tuple[int, ...], float] = {}
        for state, prob in states.items():
            masked = [i for i, v in enumerate(state) if v == mask_id]
            if not masked:
                new_states[state] = new_states.get(state, 0.0) + prob
                continue
            choice = oracle.choice_probs(state, k)
            picked = [(sequences[c], float(choice[c])) for c in np.flatnonzero(choice > 0)]
            for size in range(len(masked) + 1):
                pattern_prob = r ** size * (1.0 - r) ** (len(masked) - size)
                if pattern_prob == 0.0:
                    continue
                for subset in itertools.combinations(masked, size):
                    for y, y_prob in picked:
                        nxt = list(state)
                        for i in subset:
                            nxt[i] = y[i]
                        key = tuple(nxt)
                        new_states[key] = new_states.get(key, 0.0) + prob * pattern_prob * y_prob
        states = new_states
    out = torch.zeros(vocab_size ** length, dtype=torch.float64)
    for state, prob in states.items():
        tokens = torch.tensor(state)
        if mask_id in state:  # greedy fill: argmax of mu at every position (visible ones are one-hot)
            tokens = log_probs_fn(tokens[None])[0].argmax(-1)
        out[int(sequence_index(tokens, vocab_size))] += prob
    return out


# --------------------------------------------------------------------------------- discrete-time ELBO


def _step_coefficients(plan: StepPlan, length: int) -> dict[int, np.ndarray]:
    """A_k[m, rho] = sum_{n : k_n = k} P_q(|M_n| pattern fixed, |R_n| pattern fixed) for one given mask set M
    of size m and reveal set R subset M of size rho: c_n^m (1 - c_n)^(L - m) r_n^rho (1 - r_n)^(m - rho),
    c_n = prod_{j<n} (1 - r_j). Returns {k: (L + 1, L + 1) array}."""
    coefficients: dict[int, np.ndarray] = {}
    still_masked = 1.0
    for r, k in zip(plan.reveal_probs, plan.num_candidates):
        table = coefficients.setdefault(k, np.zeros((length + 1, length + 1)))
        for m in range(1, length + 1):
            for rho in range(1, m + 1):
                table[m, rho] += (still_masked ** m * (1 - still_masked) ** (length - m)
                                  * r ** rho * (1 - r) ** (m - rho))
        still_masked *= 1.0 - r
    return coefficients


def exact_discrete_elbo(vocab_size: int, length: int, log_probs_fn: LogProbsFn, energy: EnergyFn | None,
                        plan: StepPlan, mask_id: int | None = None, jensen: bool = False) -> torch.Tensor:
    """Exact -log(1 - leftover) + E_q'[ sum_n -log p_k(x0_{R_n} | z_n) ] / L for every x0; (V^L,) float64
    nats per token, q' the forward path conditioned on no leftover for the greedy fill (``edlm_bound``).

    ``jensen=False``: the exact discrete-time ELBO, the N -> infinity limit of ``edlm_bound``.
    ``jensen=True``: the exact expectation of ``edlm_bound`` with ``num_inner = 1``,
    -log mu(x0_R | z) + E_{y ~ mu(. | z, y_R = x0_R)} [ sir_jensen_terms(y) ].
    """
    mask_id = vocab_size if mask_id is None else mask_id
    oracle = _Oracle(vocab_size, length, log_probs_fn, energy, mask_id)
    sequences = oracle.sequences  # (C_all, L)
    coefficients = _step_coefficients(StepPlan(plan.conditioned_reveal_probs(), plan.num_candidates), length)
    out = torch.full((len(sequences),), -length * math.log1p(-plan.leftover), dtype=torch.float64)
    for x_index, x0 in enumerate(sequences.tolist()):
        for masked in all_mask_patterns(length).tolist():
            state = _masked_state(tuple(x0), tuple(masked), mask_id)
            masked_positions = [i for i in range(length) if masked[i]]
            for size in range(1, len(masked_positions) + 1):
                for subset in itertools.combinations(masked_positions, size):
                    agree = (sequences[:, list(subset)] == torch.tensor([x0[i] for i in subset])).all(-1).numpy()
                    for k, table in coefficients.items():
                        weight = table[len(masked_positions), size]
                        if weight == 0.0:
                            continue
                        out[x_index] += weight * _step_term(oracle, state, agree, k, jensen)
    return out / length


def _step_term(oracle: _Oracle, state: tuple[int, ...], agree: np.ndarray, k: int, jensen: bool) -> float:
    """-log p_k(x0_R | z) (exact) or its N = 1 Jensen bound; ``agree`` marks sequences with y_R = x0_R."""
    if not jensen or k == 1:
        mass = float(oracle.choice_probs(state, k)[agree].sum())
        return -math.log(mass) if mass > 0 else math.inf
    log_mu, _ = oracle.tables(state)
    mu = np.exp(log_mu) * agree
    if mu.sum() == 0:
        return math.inf
    conditional = mu / mu.sum()
    terms = oracle.jensen_terms(state, k)
    inner = float(np.sum(conditional * np.where(conditional > 0, terms, 0.0)))
    return -math.log(mu.sum()) + inner


# ------------------------------------------------------------------------------ continuous-time values


def _pattern_integral(schedule: LogLinearSchedule, num_masked: int, length: int, t_min: float) -> float:
    """int_{t_min}^1 w(t) P(a given pattern with m masked positions at t) dt.

    With a = 1 - alpha_t, w(t) dt = -alpha'_t / (1 - alpha_t) dt = da / a for any schedule, and
    P = a^m (1 - a)^(L - m), so the integral is int a^(m-1) (1 - a)^(L-m) da over [a(t_min), a(1)]
    (= Beta(m, L - m + 1) for eps = 0, t_min = 0), expanded binomially."""
    a_lo = float(1.0 - schedule.alpha(torch.tensor(t_min, dtype=torch.float64)))
    a_hi = float(1.0 - schedule.alpha(torch.tensor(1.0, dtype=torch.float64)))
    rest = length - num_masked
    return sum(math.comb(rest, j) * (-1) ** j * (a_hi ** (num_masked + j) - a_lo ** (num_masked + j))
               / (num_masked + j) for j in range(rest + 1))


def _continuous_value(vocab_size, length, log_probs_fn, energy, schedule, mask_id, t_min, plug_in):
    mask_id = vocab_size if mask_id is None else mask_id
    oracle = _Oracle(vocab_size, length, log_probs_fn, energy if plug_in else None, mask_id)
    sequences = oracle.sequences
    coefficient = [0.0] + [_pattern_integral(schedule, m, length, t_min) for m in range(1, length + 1)]
    out = torch.zeros(len(sequences), dtype=torch.float64)
    for x_index, x0 in enumerate(sequences.tolist()):
        for masked in all_mask_patterns(length).tolist():
            m = sum(masked)
            if m == 0:
                continue
            state = _masked_state(tuple(x0), tuple(masked), mask_id)
            log_mu, log_w = oracle.tables(state)
            term = -float(log_mu[x_index])  # sum_{i masked} -log mu_i(x0_i | z): mu factorises
            if plug_in:  # + E(x0, z) + log Z(z), Z = sum_y mu(y | z) exp(-E(y, z)) exact
                support = np.isfinite(log_mu)
                log_z = float(torch.logsumexp(torch.from_numpy(log_mu[support] + log_w[support]), 0))
                term += -float(log_w[x_index]) + log_z
            out[x_index] += coefficient[m] * term
    return out / length


def exact_mdlm_nelbo(vocab_size: int, length: int, log_probs_fn: LogProbsFn, schedule: LogLinearSchedule,
                     mask_id: int | None = None, t_min: float = 0.0) -> torch.Tensor:
    """Exact int_{t_min}^1 w(t) E_{x_t}[ sum_{i masked} -log mu_i(x0_i | x_t) ] dt / L for every x0.

    (V^L,) float64 nats per token. This is the continuous-time NELBO when alpha(1) = 0 (eps = 0) and
    t_min = 0; for eps > 0 the prior term is not included. ``nelbo_terms`` with t ~ U[eps_t, 1] estimates
    this value (t_min = eps_t) divided by 1 - eps_t.
    """
    return _continuous_value(vocab_size, length, log_probs_fn, None, schedule, mask_id, t_min, plug_in=False)


def exact_paper_value(vocab_size: int, length: int, log_probs_fn: LogProbsFn, energy: EnergyFn,
                      schedule: LogLinearSchedule, mask_id: int | None = None, t_min: float = 0.0) -> torch.Tensor:
    """Exact value of the paper's plug-in (``paper_estimate`` with n -> infinity proposals, exact log Z):
    int w(t) E_{x_t}[ -log mu(x0_M | x_t) + E(x0, x_t) + log Z(x_t) ] dt / L; (V^L,) float64 nats/token."""
    return _continuous_value(vocab_size, length, log_probs_fn, energy, schedule, mask_id, t_min, plug_in=True)
