"""Sparse Markov chains of order 1 and 2 over V symbols (docs/method.md §5.1).

Order 1: symbol a is followed by one of ``support`` S successors, with probabilities drawn from a Dirichlet
(``concentration``, 1 = uniform on the simplex). One successor of every symbol is its next symbol on a random
cycle through all V symbols, so the chain is irreducible and every symbol occurs.

Order 2: every symbol b has a ``pool`` of W successors (W = V up to V = 64, else 4 S), again containing b's
cycle successor; a context (a, b) with b in a's pool allows S successors, b's cycle successor and S - 1 others
from b's pool, with its own Dirichlet probabilities. The chain's state is the pair (x_{i-1}, x_i): the V W
"live" pairs (b in a's pool) carry the unsmoothed law, so its cost scales with V W, not V^2. Pairs outside the
pools occur only under smoothing; their future depends on x_i alone (they continue with the stationary
law of the next symbol given x_i), so they are lumped into one "dead" state per symbol (V more states).

The start is the stationary law (of the symbol, resp. of the pair), so every window of a run is a row.
"""

from __future__ import annotations

import numpy as np
import torch

from edlm.law.base import Law, LawError
from edlm.law.chain import SparseKernel, stationary_distribution

POOL_ALL_BELOW = 64  # order 2: every symbol's pool is the whole vocabulary up to this V


def default_pool(vocab_size: int, support: int) -> int:
    return vocab_size if vocab_size <= POOL_ALL_BELOW else min(vocab_size, 4 * support)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats along the last axis (0 log 0 = 0)."""
    return -(probs * probs.clamp_min(1e-300).log()).sum(-1)


class MarkovLaw(Law):
    """A sparse order-1 or order-2 Markov chain (see the module docstring for the construction)."""

    kind = "markov"

    def __init__(self, order: int, vocab_size: int, successors: torch.Tensor, probs: torch.Tensor,
                 pool: torch.Tensor | None = None, seed: int | None = None, concentration: float = 1.0):
        """order 1: successors (V, S) symbols; order 2: pool (V, W) symbols and successors (V W, S) slots of
        the pool of the pair's second symbol (live pair (a, pool[a, j]) has index a W + j); probs like
        successors, rows summing to 1."""
        self.order, self.vocab_size, self.seed, self.concentration = order, vocab_size, seed, concentration
        self.successors, self.probs = successors.long(), probs.double()
        self.support = successors.shape[1]
        V = vocab_size
        if order == 1:
            self.pool = torch.arange(V).expand(V, V)
            self.width, self.symbols = V, torch.arange(V)
            self.next_states = self.successors
        else:
            self.pool = pool.long()
            self.width = W = self.pool.shape[1]
            self.symbols = self.pool.reshape(-1)  # (V W,) symbol of each live pair
            self.next_states = self.symbols.unsqueeze(1) * W + self.successors  # (V W, S)
        self.num_live = len(self.symbols)
        live_rows = torch.arange(self.num_live).repeat_interleave(self.support)
        live = SparseKernel(live_rows, self.next_states.reshape(-1), self.probs.reshape(-1), self.num_live)
        self.stationary = stationary_distribution(live, self.num_live)  # (n_live,)
        self.has_dead = order == 2 and self.width < V
        self._build_dead_states(live_rows)
        self._pair_cache: dict[float, torch.Tensor] = {}

    def _build_dead_states(self, live_rows: torch.Tensor) -> None:
        """Lookup tables for the full state space: the fallback rows q0, the dead states, the kernel."""
        V, W, n_live = self.vocab_size, self.width, self.num_live
        self.slot = torch.full((V, V), -1, dtype=torch.long)  # slot[b, c] = j with pool[b, j] = c, else -1
        self.slot.scatter_(1, self.pool, torch.arange(W).expand(V, W).contiguous())
        self.symbol_stationary = torch.zeros(V, dtype=torch.float64).index_add_(0, self.symbols, self.stationary)
        # q0[b, j]: the stationary law of the next symbol's slot given x_i = b (uniform if b never occurs)
        flow = (self.stationary.unsqueeze(1) * self.probs)  # (n_live, S)
        q0 = torch.zeros(V * W, dtype=torch.float64)
        q0.index_add_(0, (self.symbols.unsqueeze(1) * W + self.successors).reshape(-1), flow.reshape(-1))
        q0 = q0.view(V, W)
        totals = q0.sum(1, keepdim=True)
        self.fallback = torch.where(totals > 0, q0 / totals.clamp_min(1e-300), torch.full_like(q0, 1.0 / W))
        self.live_table = torch.zeros(n_live, W, dtype=torch.float64)  # Q over the next pair's slots
        self.live_table.scatter_add_(1, self.successors, self.probs)
        rows, cols, values = [live_rows], [self.next_states.reshape(-1)], [self.probs.reshape(-1)]
        if self.has_dead:
            rows.append(n_live + torch.arange(V).repeat_interleave(W))
            cols.append(torch.arange(V * W))
            values.append(self.fallback.reshape(-1))
            self.state_symbols = torch.cat([self.symbols, torch.arange(V)])
            in_pools = torch.zeros(V, dtype=torch.float64).index_add_(0, self.pool.reshape(-1),
                                                                      torch.ones(V * W, dtype=torch.float64))
            self.dead_count = V - in_pools  # pairs (a, c) with c outside a's pool, per c
        else:
            self.state_symbols = self.symbols
        self.num_states = len(self.state_symbols)
        self.kernel = SparseKernel(torch.cat(rows), torch.cat(cols), torch.cat(values), self.num_states)

    # --- the state space (chain.StateSpace) ----------------------------------------------------------------
    def initial(self, epsilon: float) -> torch.Tensor:
        start = torch.zeros(self.num_states, dtype=torch.float64)
        start[:self.num_live] = self.stationary
        if not epsilon:
            return start
        V = self.vocab_size
        if self.order == 1:
            uniform = torch.full((V,), 1.0 / V, dtype=torch.float64)
        else:  # uniform over the V^2 pairs (x_{-1}, x_0), lumped like the states
            uniform = torch.full((self.num_states,), 1.0 / V ** 2, dtype=torch.float64)
            if self.has_dead:
                uniform[self.num_live:] = self.dead_count / V ** 2
        return (1 - epsilon) * start + epsilon * uniform

    def push(self, alpha: torch.Tensor, epsilon: float) -> torch.Tensor:
        out = self.kernel.push(alpha)
        if not epsilon:
            return out
        return (1 - epsilon) * out + (epsilon / self.vocab_size) * self._uniform_push(alpha)

    def pull(self, beta: torch.Tensor, epsilon: float) -> torch.Tensor:
        out = self.kernel.pull(beta)
        if not epsilon:
            return out
        return (1 - epsilon) * out + (epsilon / self.vocab_size) * self._uniform_pull(beta)

    def _uniform_push(self, alpha: torch.Tensor) -> torch.Tensor:
        """U^T alpha, U(s, .) = one unit to the state of (sym(s), c) for every symbol c: (n, B) -> (n, B)."""
        if self.order == 1:
            return alpha.sum(0, keepdim=True).expand(self.vocab_size, -1)
        V, W = self.vocab_size, self.width
        mass = torch.zeros(V, alpha.shape[1], dtype=torch.float64).index_add_(0, self.state_symbols, alpha)
        live = mass.repeat_interleave(W, 0)  # (V W, B): pair (b, pool[b, j]) receives b's mass
        if not self.has_dead:
            return live
        in_pool = torch.zeros_like(mass).index_add_(0, self.pool.reshape(-1), live)  # (V, B)
        return torch.cat([live, mass.sum(0, keepdim=True) - in_pool])

    def _uniform_pull(self, beta: torch.Tensor) -> torch.Tensor:
        """U beta: every state with symbol b gets sum_c beta(state of (b, c)): (n, B) -> (n, B)."""
        if self.order == 1:
            return beta.sum(0, keepdim=True).expand(self.vocab_size, -1)
        V, W, B = self.vocab_size, self.width, beta.shape[1]
        per_symbol = beta[:self.num_live].view(V, W, B).sum(1)  # (V, B)
        if self.has_dead:
            dead = beta[self.num_live:]
            per_symbol = per_symbol + dead.sum(0, keepdim=True) - dead[self.pool.reshape(-1)].view(V, W, B).sum(1)
        return per_symbol[self.state_symbols]

    def evidence(self, tokens: torch.Tensor, visible: torch.Tensor, epsilon: float) -> torch.Tensor:
        return ((self.state_symbols.unsqueeze(1) == tokens.unsqueeze(0)) | ~visible.unsqueeze(0)).double()

    def token_marginals(self, gamma: torch.Tensor, epsilon: float) -> torch.Tensor:
        if self.order == 1:  # the state is the symbol
            return gamma
        return torch.zeros(gamma.shape[0], self.vocab_size, dtype=torch.float64).index_add_(
            1, self.state_symbols, gamma)

    # --- exact quantities ----------------------------------------------------------------------------------
    def pair_probs(self, epsilon: float = 0.0) -> torch.Tensor:
        """p_eps(x_0 = a, x_1 = b) from the stationary start: (V, V) float64 (cached per epsilon)."""
        if epsilon not in self._pair_cache:
            onehot = (self.state_symbols.unsqueeze(1) == torch.arange(self.vocab_size)).double()  # (n, V)
            first = self.push(self.initial(epsilon).unsqueeze(1) * onehot, epsilon)  # (n, V): column = x_0
            self._pair_cache[epsilon] = self.token_marginals(first.T, epsilon).contiguous()  # (x_0, x_1)
        return self._pair_cache[epsilon]

    def transition_probs(self, context: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Unsmoothed p(x_i | context): context (..., order) and token (...) int64 -> (...) float64."""
        if self.order == 1:
            return self.live_table[context[..., 0], token]
        a, b = context[..., 0], context[..., 1]
        slot_ab, slot_bc = self.slot[a, b], self.slot[b, token]
        live = self.live_table[a * self.width + slot_ab.clamp_min(0), slot_bc.clamp_min(0)]
        dead = self.fallback[b, slot_bc.clamp_min(0)]
        return torch.where(slot_bc < 0, 0.0, torch.where(slot_ab < 0, dead, live))

    def token_log_probs(self, x: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
        """log p_eps(x_i | x_<i) of full rows (N, L) -> (N, L) float64, by table lookups (no forward pass)."""
        x = x.cpu()
        N, L = x.shape
        out = torch.empty(N, L, dtype=torch.float64)
        first = torch.zeros(self.vocab_size, dtype=torch.float64).index_add_(0, self.state_symbols,
                                                                            self.initial(epsilon))
        out[:, 0] = first[x[:, 0]].log()
        if L > 1 and self.order == 2:
            second = self.pair_probs(epsilon)[x[:, 0], x[:, 1]].log() - out[:, 0]
            out[:, 1] = torch.where(second.isnan(), 0.0, second)  # an impossible x_0 already made the row -inf
        if L > self.order:
            contexts = x.unfold(1, self.order, 1)[:, :L - self.order]  # (N, L - n, n)
            probs = self.transition_probs(contexts, x[:, self.order:])
            out[:, self.order:] = ((1 - epsilon) * probs + epsilon / self.vocab_size).log()
        return out

    def forbidden(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L) bool: the stationary (n+1)-gram ending at i (the i+1-gram at the first n positions) has
        probability 0 under the unsmoothed law."""
        x = x.cpu()
        out = torch.zeros(x.shape, dtype=torch.bool)
        out[:, 0] = self.symbol_stationary[x[:, 0]] == 0
        pairs = self.pair_probs(0.0)
        if x.shape[1] > 1 and self.order == 2:
            out[:, 1] = pairs[x[:, 0], x[:, 1]] == 0
        if x.shape[1] > self.order:
            contexts = x.unfold(1, self.order, 1)[:, :x.shape[1] - self.order]  # (N, L - n, n)
            context_prob = self.symbol_stationary[contexts[..., 0]] if self.order == 1 else \
                pairs[contexts[..., 0], contexts[..., 1]]
            out[:, self.order:] = context_prob * self.transition_probs(contexts, x[:, self.order:]) == 0
        return out

    def entropy_rate(self) -> float:
        """H = -sum_state pi(state) sum_next P log P, nats per token (exact)."""
        return float((self.stationary * _entropy(self.probs)).sum())

    def row_entropy(self, length: int) -> float:
        """H(x_0 .. x_{L-1}) of a row from the stationary start, nats (exact): the first ``order`` terms from
        the stationary marginals, then the entropy rate per token."""
        head = float(_entropy(self.symbol_stationary))
        if self.order == 2 and length > 1:
            head = float(_entropy(self.pair_probs(0.0).reshape(-1)))
        return head + max(0, length - self.order) * self.entropy_rate() if length > 0 else 0.0

    def sampling_rows(self):
        return self.stationary, self.next_states, self.probs, None

    def settings(self) -> dict:
        return {"order": self.order, "vocab_size": self.vocab_size, "support": self.support,
                "pool": self.width if self.order == 2 else None, "concentration": self.concentration,
                "seed": self.seed}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"successors": self.successors, "probs": self.probs, "stationary": self.stationary}
        if self.order == 2:
            out["pool"] = self.pool
        return out

    @classmethod
    def from_files(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> "MarkovLaw":
        return cls(int(settings["order"]), int(settings["vocab_size"]), tensors["successors"], tensors["probs"],
                   tensors.get("pool"), settings.get("seed"), float(settings.get("concentration", 1.0)))


def _random_cycle(rng: np.random.Generator, size: int) -> np.ndarray:
    """next[i]: the symbol after i on a uniformly random cycle through all ``size`` symbols."""
    order = rng.permutation(size)
    following = np.empty(size, dtype=np.int64)
    following[order] = np.roll(order, -1)
    return following


def _row_with(rng: np.random.Generator, forced: int, candidates: np.ndarray, size: int) -> list[int]:
    """``forced`` plus ``size - 1`` distinct others drawn from ``candidates``, sorted."""
    others = candidates[candidates != forced]
    return sorted([int(forced), *rng.choice(others, size - 1, replace=False).tolist()])


def make_markov(order: int, vocab_size: int, support: int, seed: int, pool: int | None = None,
                concentration: float = 1.0) -> MarkovLaw:
    """Draw a sparse Markov chain from numpy's generator ``seed`` (see the module docstring)."""
    V, S = vocab_size, support
    if order not in (1, 2):
        raise LawError(f"{order}: Markov laws have order 1 or 2", "order")
    if V < 2 or not 1 <= S <= V:
        raise LawError(f"{S}: need 1 <= support <= vocab ({V}), vocab >= 2", "support")
    if concentration <= 0:
        raise LawError(f"concentration {concentration}: must be > 0")
    rng = np.random.default_rng(seed)
    cycle = _random_cycle(rng, V)
    symbols = np.arange(V)
    if order == 1:
        successors = torch.tensor([_row_with(rng, cycle[a], symbols, S) for a in range(V)])
        probs = torch.from_numpy(rng.dirichlet(np.full(S, concentration), size=V))
        return MarkovLaw(1, V, successors, probs, seed=seed, concentration=concentration)
    W = default_pool(V, S) if pool is None else pool
    if not S <= W <= V:
        raise LawError(f"pool {W}: need support ({S}) <= pool <= vocab ({V})")
    pools = np.tile(symbols, (V, 1)) if W == V else np.array([_row_with(rng, cycle[b], symbols, W) for b in range(V)])
    slots = np.arange(W)
    rows = []
    for a in range(V):
        for b in pools[a]:
            forced = int(np.flatnonzero(pools[b] == cycle[b])[0])  # b's cycle successor, as a slot of b's pool
            rows.append(_row_with(rng, forced, slots, S))
    probs = torch.from_numpy(rng.dirichlet(np.full(S, concentration), size=V * W))
    return MarkovLaw(2, V, torch.tensor(rows), probs, torch.from_numpy(pools), seed, concentration)


