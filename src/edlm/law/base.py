"""What every known law offers (docs/method.md §5), built on its state-space form (``edlm.law.chain``).

A law subclasses ``Law`` and supplies the ``StateSpace`` members, ``sampling_rows`` (how to draw), its
``entropy_rate``, ``row_entropy`` and ``forbidden``. Everything else -- the exact denoiser, log-probabilities of
rows and of subsets, n-gram laws and sampling -- is shared here and is exact (float64).

Smoothing ``epsilon``: every categorical row of the law (start, transition, emission) is replaced by
(1 - epsilon) row + epsilon * uniform, so that no sequence has probability zero. ``epsilon = 0`` is the law.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

import numpy as np
import torch

from edlm.errors import EdlmError
from edlm.law.chain import StateSpace, forward_log_normalisers, posterior_marginals

FALLBACK_EPSILON = 1e-6  # the denoiser's smoothing for a row whose visible tokens the law forbids
MAX_DENSE_NGRAMS = 1 << 22


class LawError(EdlmError, ValueError):
    """Bad law settings or a law file that cannot be used; the message names the flag or file."""


class Law(StateSpace):
    """Shared exact computations; subclasses set ``kind``, ``order``, ``vocab_size``, ``num_states``."""

    kind: str
    order: int  # Markov order (the HMM reports 0: no finite order)

    # --- supplied by the subclass: the chain.StateSpace members, and ----------------------------------------
    def sampling_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(start (n,), next_states (n, K) int64, next_probs (n, K), emission (n, V) or None when the
        token is the state's symbol ``self.symbols``): the unsmoothed law as a sampler needs it."""
        raise NotImplementedError

    def entropy_rate(self) -> float:
        raise NotImplementedError

    def row_entropy(self, length: int) -> float:
        raise NotImplementedError

    def forbidden(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def settings(self) -> dict:
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        """``char`` for the 27-symbol alphabet (id i = letter i of "abc...z "), else ``sym:V``."""
        return "char" if self.vocab_size == 27 else f"sym:{self.vocab_size}"

    def posterior_log_probs(self, x_t: torch.Tensor, mask_id: int, epsilon: float = 0.0) -> torch.Tensor:
        """The perfect MDLM denoiser: SUBS log-probs (B, L, V + 1) float64 for x_t (B, L) int64.

        A masked position holds log p(x_i = v | every visible token); a visible one is one-hot (0 / -inf); the
        mask column is -inf. A row whose visible tokens the (epsilon-smoothed) law forbids is computed under
        smoothing ``max(epsilon, FALLBACK_EPSILON)`` instead, so every row is a distribution.
        """
        x_t = x_t.cpu()
        visible = x_t != mask_id
        marginals, log_evidence = posterior_marginals(self, x_t, visible, epsilon)  # (B, L, V), (B,)
        impossible = torch.isneginf(log_evidence)
        if impossible.any():
            again, _ = posterior_marginals(self, x_t[impossible], visible[impossible],
                                           max(epsilon, FALLBACK_EPSILON))
            marginals[impossible] = again
        rows, cols = visible.nonzero(as_tuple=True)
        marginals[rows, cols] = 0.0  # a visible position is one-hot (an HMM's marginal there is not)
        marginals[rows, cols, x_t[rows, cols]] = 1.0
        mask_column = torch.full((*x_t.shape, 1), -math.inf, dtype=torch.float64)
        return torch.cat([marginals.log_(), mask_column], -1)  # (B, L, V + 1)

    def denoiser(self, epsilon: float = 0.0, device: torch.device | str | None = None) -> Callable:
        """``posterior_log_probs`` as an edlm denoiser function: x_t (B, L) [, t ignored] -> (B, L, V + 1)
        float64 on x_t's device (or ``device``). Not time-conditioned: the exact posterior ignores t."""
        mask_id = self.vocab_size

        @torch.no_grad()
        def denoise(x_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
            return self.posterior_log_probs(x_t, mask_id, epsilon).to(device or x_t.device)

        denoise.time_conditioned = False
        return denoise

    def token_log_probs(self, x: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
        """log p(x_i | x_<i) for full rows x (N, L) int64 -> (N, L) float64 (-inf where impossible)."""
        x = x.cpu()
        return forward_log_normalisers(self, x, torch.ones_like(x, dtype=torch.bool), epsilon)

    def log_prob(self, x: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
        """log p(x) of full rows x (N, L) int64 from the stationary start -> (N,) float64."""
        return self.token_log_probs(x, epsilon).sum(-1)

    def subset_log_prob(self, x: torch.Tensor, visible: torch.Tensor, subset: torch.Tensor,
                        epsilon: float = 0.0) -> torch.Tensor:
        """log p(x_subset | x_visible), every other position summed over: (N,) float64.

        x (N, L) int64; visible and subset (N, L) bool, disjoint. One batched forward pass over 2N rows:
        log p(x_{subset + visible}) - log p(x_visible). With ``epsilon`` = 0 the result is -inf where the subset
        is impossible given the visible tokens, and nan where the visible tokens alone are impossible.
        """
        x, visible, subset = x.cpu(), visible.cpu(), subset.cpu()
        observed = torch.cat([visible | subset, visible])  # (2N, L)
        totals = forward_log_normalisers(self, x.repeat(2, 1), observed, epsilon).sum(-1)  # (2N,)
        joint, marginal = totals.chunk(2)
        return joint - marginal

    def ngram_log_prob(self, grams: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
        """The stationary n-gram law at given n-grams: grams (M, n) int64 -> (M,) float64 log-probabilities.

        The law starts stationary, so the first n tokens of a row follow the law of any n consecutive tokens.
        """
        return self.log_prob(grams, epsilon)

    def ngram_probs(self, n: int) -> torch.Tensor:
        """The stationary n-gram law as a dense tensor of shape (V,) * n, float64 (V^n at most 2^22)."""
        if self.vocab_size ** n > MAX_DENSE_NGRAMS:
            raise LawError(f"ngram_probs({n}): {self.vocab_size}^{n} entries is too many; use ngram_log_prob")
        grids = torch.meshgrid(*[torch.arange(self.vocab_size)] * n, indexing="ij")
        grams = torch.stack([g.reshape(-1) for g in grids], -1)  # (V^n, n)
        return self.ngram_log_prob(grams).exp().view(*[self.vocab_size] * n)

    def sample(self, num: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` rows of ``length`` tokens from the stationary start: (num, length) int64."""
        start, next_states, next_probs, emission = self.sampling_rows()
        uniforms = torch.rand(num, 2 * length, dtype=torch.float64, generator=generator)  # (num, 2L)
        cumulative = next_probs.cumsum(-1)  # (n, K)
        state = _inverse_cdf(start.cumsum(0).expand(num, -1), uniforms[:, 0])  # (num,)
        states = [state]
        for i in range(1, length):
            slot = _inverse_cdf(cumulative[state], uniforms[:, i])
            state = next_states[state, slot]
            states.append(state)
        states = torch.stack(states, 1)  # (num, L)
        if emission is None:
            return self.symbols[states]
        return _inverse_cdf(emission.cumsum(-1)[states.reshape(-1)], uniforms[:, length:].reshape(-1)).view(num,
                                                                                                           length)

    def stream(self, tokens: int, seed: int) -> np.ndarray:
        """One stationary run of ``tokens`` tokens (a corpus): (tokens,) int64, from numpy's generator ``seed``.

        A plain Python loop (about a microsecond per token): a single run has no row boundaries, so every
        window of it is a row of the law.
        """
        start, next_states, next_probs, emission = self.sampling_rows()
        rng = np.random.default_rng(seed)
        cumulative = [row.tolist() for row in next_probs.cumsum(-1)]
        successors = [row.tolist() for row in next_states]
        emit = None if emission is None else [row.tolist() for row in emission.cumsum(-1)]
        symbols = None if emission is not None else self.symbols.tolist()
        out = np.empty(tokens, dtype=np.int64)
        state = _pick(start.cumsum(0).tolist(), rng.random())
        block = 1 << 16
        for begin in range(0, tokens, block):
            count = min(block, tokens - begin)
            draws = rng.random((count, 2)).tolist()
            for offset, (move, token) in enumerate(draws):
                if begin + offset:
                    state = successors[state][_pick(cumulative[state], move)]
                out[begin + offset] = symbols[state] if emit is None else _pick(emit[state], token)
        return out


def _inverse_cdf(cumulative: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index of the first entry of each row of ``cumulative`` (R, K) above ``uniforms`` (R,) -> (R,) int64."""
    index = (cumulative <= uniforms.unsqueeze(-1) * cumulative[:, -1:]).sum(-1)  # first entry above
    return index.clamp_max(cumulative.shape[-1] - 1)


def _pick(cumulative: list[float], uniform: float) -> int:
    return min(bisect.bisect_right(cumulative, uniform * cumulative[-1]), len(cumulative) - 1)
