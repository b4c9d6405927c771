"""Brute force for known laws: every sequence enumerated, probabilities from the law's defining tensors only.

Nothing here uses ``edlm.law.chain`` (forward/backward, lumped states): the joint probability of a row is written
out from the definition (stationary start, transition rows, emissions, each mixed with epsilon * uniform).
"""

from __future__ import annotations

import itertools
import math

import torch

from edlm.law import make_law


def tiny_laws(seed: int = 0) -> dict:
    """Small laws of every kind, including an order-2 chain whose pools do not cover the vocabulary."""
    return {
        "markov1": make_law("markov", 3, 2, seed=seed + 1),
        "markov2": make_law("markov", 3, 2, seed=seed + 2, order=2),
        "markov2-pool": make_law("markov", 4, 2, seed=seed + 3, order=2, pool=3),
        "hmm": make_law("hmm", 5, 2, seed=seed + 4, hidden=2, stay=0.8),
        "hmm-ring": make_law("hmm", 4, 1, seed=seed + 5, hidden=3, stay=0.7, moves=1),
    }


def _markov2_rules(law) -> tuple[dict, torch.Tensor]:
    """(Q: {(a, b): (V,) next-symbol law} for every context, stationary pair law (V, V)), from the tensors."""
    V, W = law.vocab_size, law.pool.shape[1]
    rules, pair = {}, torch.zeros(V, V, dtype=torch.float64)
    for a in range(V):
        for j in range(W):
            b = int(law.pool[a, j])
            row = torch.zeros(V, dtype=torch.float64)
            for slot, p in zip(law.successors[a * W + j].tolist(), law.probs[a * W + j].tolist()):
                row[int(law.pool[b, slot])] += p
            rules[(a, b)] = row
            pair[a, b] = law.stationary[a * W + j]
    for b in range(V):  # contexts outside the pools continue with the stationary next-symbol law given b
        following = sum(pair[a, b] * rules[(a, b)] for a in range(V) if (a, b) in rules)
        fallback = following / following.sum()
        for a in range(V):
            rules.setdefault((a, b), fallback)
    return rules, pair


def joint(law, epsilon: float, length: int) -> dict[tuple, float]:
    """p_eps(x) for every x in V^length, from the definition."""
    V = law.vocab_size
    mix = lambda row, size: (1 - epsilon) * row + epsilon / size  # noqa: E731
    out = {}
    if law.kind == "hmm":
        H = law.transition.shape[0]
        start, T, E = (mix(t, size).tolist() for t, size in
                       ((law.stationary, H), (law.transition, H), (law.emission, V)))
        for x in itertools.product(range(V), repeat=length):
            total = 0.0
            for h in itertools.product(range(H), repeat=length):
                p = start[h[0]] * E[h[0]][x[0]]
                for i in range(1, length):
                    p = p * T[h[i - 1]][h[i]] * E[h[i]][x[i]]
                total += p
            out[x] = total
        return out
    if law.order == 1:
        P = torch.zeros(V, V, dtype=torch.float64)
        P.scatter_add_(1, law.successors, law.probs)
        start, P = mix(law.stationary, V), mix(P, V)
        for x in itertools.product(range(V), repeat=length):
            p = float(start[x[0]])
            for i in range(1, length):
                p *= float(P[x[i - 1], x[i]])
            out[x] = p
        return out
    rules, pair = _markov2_rules(law)
    start = mix(pair, V * V)  # the law of (x_{-1}, x_0)
    for x in itertools.product(range(V), repeat=length):
        total = 0.0
        for before in range(V):
            p = float(start[before, x[0]])
            history = (before, *x)
            for i in range(1, length):
                p *= float(mix(rules[(history[i - 1], history[i])], V)[x[i]])
            total += p
        out[x] = total
    return out


def conditional_marginals(table: dict, x_t: list, mask_id: int, V: int) -> torch.Tensor:
    """p(x_i = v | visible tokens of x_t) for one row: (L, V) float64."""
    L = len(x_t)
    out = torch.zeros(L, V, dtype=torch.float64)
    for x, p in table.items():
        if all(t == mask_id or t == s for t, s in zip(x_t, x)):
            for i in range(L):
                out[i, x[i]] += p
    return out / out.sum(-1, keepdim=True)


def marginal(table: dict, fixed: dict[int, int]) -> float:
    """p(x_i = fixed[i] for every i in fixed)."""
    return sum(p for x, p in table.items() if all(x[i] == v for i, v in fixed.items()))


def window_prob(table: dict, tokens: tuple) -> float:
    """The stationary probability of ``tokens`` as consecutive symbols (read at the start of a row)."""
    return marginal(table, dict(enumerate(tokens)))


def entropy(table: dict) -> float:
    return -sum(p * math.log(p) for p in table.values() if p > 0)
