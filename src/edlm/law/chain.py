"""Exact inference on a law written as a Markov chain over hidden states (docs/method.md §5).

Every law of this package is a chain over ``num_states`` states s_0, s_1, ... with an initial distribution, a
transition matrix P and an emission law E(s, v) of the token x_i given the state s_i (a Markov chain of order n
is such a chain whose state is its last n tokens: E is then 0/1). A law supplies these members (``StateSpace``),
all with states on the first axis and rows of the batch on the second, ``(n, B)``, so that a sparse P is
multiplied from the left:

- ``initial(eps)`` (n,): the start distribution; ``push(alpha, eps)`` = P_eps^T alpha, ``pull(beta, eps)`` =
  P_eps beta, each (n, B) -> (n, B);
- ``evidence(tokens (B,), visible (B,) bool, eps)`` (n, B): E_eps(s, x_i) where x_i is visible, 1 elsewhere;
- ``token_marginals(gamma (M, n), eps)`` (M, V): sum_s gamma(s) E_eps(s, v) (rows of the batch first here).

``eps`` is the smoothing of ``edlm.law`` (every row mixed with eps * uniform); 0 is the law itself.

The algorithms here are the scaled forward and backward passes with partial observations: a masked position
has evidence 1, so it is summed over, and everything stays exact in float64.
"""

from __future__ import annotations

from typing import Protocol

import torch

STATE_BUDGET = 1 << 24  # float64 forward messages kept at once (128 MiB): rows are processed in chunks below it


class StateSpace(Protocol):
    num_states: int
    vocab_size: int

    def initial(self, epsilon: float) -> torch.Tensor: ...

    def push(self, alpha: torch.Tensor, epsilon: float) -> torch.Tensor: ...

    def pull(self, beta: torch.Tensor, epsilon: float) -> torch.Tensor: ...

    def evidence(self, tokens: torch.Tensor, visible: torch.Tensor, epsilon: float) -> torch.Tensor: ...

    def token_marginals(self, gamma: torch.Tensor, epsilon: float) -> torch.Tensor: ...


def _normalise(message: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """message (n, B) -> (message / its column sums, column sums (B,)); a zero column stays zero."""
    total = message.sum(0)  # (B,)
    return message / torch.where(total > 0, total, torch.ones_like(total)), total


def forward_log_normalisers(space: StateSpace, x: torch.Tensor, observed: torch.Tensor,
                            epsilon: float) -> torch.Tensor:
    """log p(x_i | the observed tokens before i) at observed positions, 0 elsewhere: (N, L) float64.

    x (N, L) int64 (any value where not observed), observed (N, L) bool. Row sums are log p(x_observed);
    a row whose observed tokens are impossible has -inf from its first impossible position on.
    """
    N, L = x.shape
    out = torch.empty(N, L, dtype=torch.float64)
    alpha = space.initial(epsilon).unsqueeze(1).expand(-1, N)  # (n, N)
    for i in range(L):
        if i:
            alpha = space.push(alpha, epsilon)
        alpha, total = _normalise(alpha * space.evidence(x[:, i], observed[:, i], epsilon))  # (n, N)
        out[:, i] = total.log()
    return out.masked_fill(~observed, 0.0)


def posterior_marginals(space: StateSpace, x: torch.Tensor, observed: torch.Tensor,
                        epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-backward with partial observations: p(x_i = v | every observed token) for every position.

    x (B, L) int64, observed (B, L) bool -> (marginals (B, L, V) float64, log p(observed tokens) (B,)). Rows
    are processed in chunks so that at most ``STATE_BUDGET`` forward messages are held at once. A row whose
    observed tokens are impossible (log evidence -inf) has undefined (nan) marginals.
    """
    B, L = x.shape
    chunk = max(1, STATE_BUDGET // max(1, L * space.num_states))
    parts = [_posterior_chunk(space, x[start:start + chunk], observed[start:start + chunk], epsilon)
             for start in range(0, B, chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _posterior_chunk(space: StateSpace, x: torch.Tensor, observed: torch.Tensor,
                     epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, L = x.shape
    alphas = torch.empty(B, L, space.num_states, dtype=torch.float64)  # normalised forward messages
    log_evidence = torch.zeros(B, dtype=torch.float64)
    alpha = space.initial(epsilon).unsqueeze(1).expand(-1, B)  # (n, B)
    for i in range(L):
        if i:
            alpha = space.push(alpha, epsilon)
        alpha, total = _normalise(alpha * space.evidence(x[:, i], observed[:, i], epsilon))
        log_evidence += total.log()
        alphas[:, i] = alpha.T
    beta = torch.ones(space.num_states, B, dtype=torch.float64)
    for i in range(L - 1, -1, -1):
        if i < L - 1:  # beta_i = P (E_{i+1} * beta_{i+1}), rescaled (the scale cancels in gamma)
            beta = space.pull(beta * space.evidence(x[:, i + 1], observed[:, i + 1], epsilon), epsilon)
            beta = beta / beta.amax(0).clamp_min(1e-300)
        alphas[:, i] *= beta.T  # gamma_i, unnormalised
    tokens = space.token_marginals(alphas.view(B * L, space.num_states), epsilon)  # (B L, V)
    tokens = tokens / tokens.sum(-1, keepdim=True)
    return tokens.view(B, L, -1), log_evidence


class SparseKernel:
    """A fixed nonnegative (n, n) matrix P with the two products the passes need: P^T a and P b, a, b (n, B).

    Dense below ``dense_below`` states (a small matmul is faster), else CSR (torch's sparse matmul).
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: int,
                 dense_below: int = 96):
        self.size = size
        if size < dense_below:
            dense = torch.zeros(size, size, dtype=torch.float64)
            dense.index_put_((rows, cols), values.double(), accumulate=True)
            self.forward_matrix, self.backward_matrix = dense.T.contiguous(), dense
        else:
            self.forward_matrix = _csr(cols, rows, values, size)  # P^T
            self.backward_matrix = _csr(rows, cols, values, size)  # P

    def push(self, alpha: torch.Tensor) -> torch.Tensor:
        """P^T alpha: (n, B) -> (n, B)."""
        return self.forward_matrix @ alpha

    def pull(self, beta: torch.Tensor) -> torch.Tensor:
        """P beta: (n, B) -> (n, B)."""
        return self.backward_matrix @ beta


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """The (size, size) float64 CSR matrix with ``values`` at (rows, cols) (duplicates summed)."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values.double(), (size, size),
                                  check_invariants=True).coalesce()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return coo.to_sparse_csr()


def stationary_distribution(kernel: SparseKernel, size: int, tolerance: float = 1e-15,
                            max_iterations: int = 200_000) -> torch.Tensor:
    """The stationary distribution pi = pi P of an irreducible (on its closed class) stochastic P: (n,) float64.

    Solved exactly (dense linear system) up to 2048 states, else by power iteration of the lazy chain
    (P + I) / 2 (same stationary law, converges without aperiodicity) to an L1 change below ``tolerance``.
    """
    if size <= 2048:
        transpose = kernel.push(torch.eye(size, dtype=torch.float64))  # P^T
        system = transpose - torch.eye(size, dtype=torch.float64)
        system[-1] = 1.0  # replace one equation by sum(pi) = 1
        rhs = torch.zeros(size, dtype=torch.float64)
        rhs[-1] = 1.0
        pi = torch.linalg.solve(system, rhs).clamp_min(0.0)
        return pi / pi.sum()
    pi = torch.full((size, 1), 1.0 / size, dtype=torch.float64)
    for _ in range(max_iterations):
        updated = 0.5 * (pi + kernel.push(pi))
        if (updated - pi).abs().sum() < tolerance:
            return (updated / updated.sum()).squeeze(1)
        pi = updated
    raise RuntimeError(f"stationary distribution: power iteration did not converge in {max_iterations} steps")
