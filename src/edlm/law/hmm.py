"""A hidden Markov model whose hidden state persists: dependence over any distance (docs/method.md §5.2).

Construction (``make_hmm``): H hidden states ("topics"). A state stays with probability ``stay`` (0.95: about
20 tokens on average) and otherwise moves to one of ``moves`` others (its successor on a random cycle through
all states, plus ``moves - 1`` random ones; Dirichlet weights). The symbols are split into H disjoint private
sets of ``support`` symbols, one per state, and the shared rest. A state emits a shared symbol with probability
``shared_mass`` (from one distribution common to all states) and otherwise one of its own private symbols.

So a private symbol reveals the hidden state exactly and a shared one says nothing about it. A low-order model
that sees only shared symbols in its context has lost the topic; the law has not. Two consequences:

- the entropy rate is exact: the predictive law of x_i depends only on the state revealed by the last private
  symbol and on how many shared symbols followed it, so H = sum_k (1 - r) r^k sum_h pi(h) H((e_h T^{k+1}) E),
  r = shared_mass, a geometric series summed to machine precision (``entropy_rate``);
- a token is *forbidden* (``forbidden``) when a left-to-right reader finds p(x_i | x_<i) = 0, e.g. a private
  symbol of a state the hidden chain cannot have reached since the last private symbol. After a forbidden token
  the reader restarts from the stationary law given that token alone, so one bad token is counted once.
"""

from __future__ import annotations

import numpy as np
import torch

from edlm.law.base import Law, LawError
from edlm.law.chain import SparseKernel, stationary_distribution
from edlm.law.markov import _entropy, _random_cycle

SERIES_TOLERANCE = 1e-17  # the entropy series stops once r^k is below this
MAX_SERIES_TERMS = 1_000_000


class HiddenMarkovLaw(Law):
    """Hidden chain T (H, H), emissions E (H, V), stationary start."""

    kind = "hmm"
    order = 0

    def __init__(self, transition: torch.Tensor, emission: torch.Tensor, settings: dict | None = None):
        self.transition, self.emission = transition.double(), emission.double()
        self.num_states, self.vocab_size = self.emission.shape
        self.extra = dict(settings or {})
        H = self.num_states
        rows = torch.arange(H).repeat_interleave(H)
        kernel = SparseKernel(rows, torch.arange(H).repeat(H), self.transition.reshape(-1), H)
        self.stationary = stationary_distribution(kernel, H)
        self._smoothed: dict[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _rows(self, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start (H,), T_eps (H, H), E_eps (H, V)): every row mixed with epsilon * uniform (cached)."""
        if epsilon not in self._smoothed:
            H, V = self.num_states, self.vocab_size
            self._smoothed[epsilon] = ((1 - epsilon) * self.stationary + epsilon / H,
                                       (1 - epsilon) * self.transition + epsilon / H,
                                       (1 - epsilon) * self.emission + epsilon / V)
        return self._smoothed[epsilon]

    # --- the state space (chain.StateSpace) ----------------------------------------------------------------
    def initial(self, epsilon: float) -> torch.Tensor:
        return self._rows(epsilon)[0]

    def push(self, alpha: torch.Tensor, epsilon: float) -> torch.Tensor:
        return self._rows(epsilon)[1].T @ alpha

    def pull(self, beta: torch.Tensor, epsilon: float) -> torch.Tensor:
        return self._rows(epsilon)[1] @ beta

    def evidence(self, tokens: torch.Tensor, visible: torch.Tensor, epsilon: float) -> torch.Tensor:
        tokens = torch.where(visible, tokens, 0)  # a masked position may hold the mask id
        return torch.where(visible.unsqueeze(0), self._rows(epsilon)[2][:, tokens], 1.0)

    def token_marginals(self, gamma: torch.Tensor, epsilon: float) -> torch.Tensor:
        return gamma @ self._rows(epsilon)[2]

    # --- exact quantities ----------------------------------------------------------------------------------
    def _shared_mass(self) -> float:
        """r: the mass every state puts on the uninformative symbols; LawError without that structure."""
        E = self.emission
        uninformative = (E == E[:1]).all(0)  # (V,): the same probability in every state
        revealing = (E > 0).sum(0) == 1
        if not (uninformative | revealing).all():
            raise LawError("entropy rate: every symbol must be shared (same probability in every hidden state) or "
                           "private (emitted by one state); this HMM is not of that form")
        return float(E[0, uninformative].sum())

    def _prediction_entropies(self, steps: int) -> list[float]:
        """c_k = sum_h pi(h) H(e_h T^{k+1} E) for k < steps (the predictive entropy k + 1 steps after the last
        private symbol, averaged over the state it revealed)."""
        out, power = [], self.transition.clone()
        for _ in range(steps):
            out.append(float((self.stationary * _entropy(power @ self.emission)).sum()))
            power = power @ self.transition
        return out

    def entropy_rate(self) -> float:
        """sum_k (1 - r) r^k c_k (module docstring), summed until r^k < 1e-17: exact to float64 precision."""
        shared = self._shared_mass()
        terms = 1
        while shared ** terms >= SERIES_TOLERANCE and terms < MAX_SERIES_TERMS:
            terms += 1
        return sum((1 - shared) * shared ** k * c for k, c in enumerate(self._prediction_entropies(terms)))

    def row_entropy(self, length: int) -> float:
        """H(x_0 .. x_{L-1}) = sum_i H(x_i | x_<i), each term exact: with probability r^i no private symbol was
        seen yet (predictive law pi E), else the last one was k + 1 tokens back with probability (1 - r) r^k."""
        shared = self._shared_mass()
        c = self._prediction_entropies(max(length - 1, 0))
        blind = float(_entropy(self.stationary @ self.emission))
        total = 0.0
        for i in range(length):
            total += sum((1 - shared) * shared ** k * c[k] for k in range(i)) + shared ** i * blind
        return total

    def forbidden(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L) bool: p(x_i | x_<i) = 0 for a left-to-right reader of the unsmoothed law that restarts from
        the stationary law given x_i alone after each forbidden token (module docstring)."""
        x = x.cpu()
        N, L = x.shape
        out = torch.zeros(N, L, dtype=torch.bool)
        prior = self.stationary.unsqueeze(1)  # (H, 1)
        belief = prior.expand(-1, N)
        for i in range(L):
            predicted = belief if i == 0 else self.transition.T @ belief  # (H, N)
            likelihood = self.emission[:, x[:, i]]  # (H, N)
            joint = predicted * likelihood
            total = joint.sum(0)
            out[:, i] = total == 0
            restart = prior * likelihood
            restart_total = restart.sum(0)
            restart = torch.where(restart_total > 0, restart / restart_total.clamp_min(1e-300), prior)
            belief = torch.where(out[:, i], restart, joint / total.clamp_min(1e-300))
        return out

    def sampling_rows(self):
        H = self.num_states
        return self.stationary, torch.arange(H).expand(H, H), self.transition, self.emission

    def settings(self) -> dict:
        return {"vocab_size": self.vocab_size, "hidden": self.num_states, **self.extra}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"transition": self.transition, "emission": self.emission, "stationary": self.stationary}

    @classmethod
    def from_files(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> "HiddenMarkovLaw":
        extra = {k: v for k, v in settings.items() if k not in ("vocab_size", "hidden")}
        return cls(tensors["transition"], tensors["emission"], extra)


def make_hmm(vocab_size: int, hidden: int, support: int, seed: int, stay: float = 0.95, moves: int = 1,
             shared_mass: float = 0.5, concentration: float = 1.0) -> HiddenMarkovLaw:
    """Draw a persistent HMM from numpy's generator ``seed`` (see the module docstring)."""
    V, H, S = vocab_size, hidden, support
    if H < 2 or S < 1 or H * S >= V:
        raise LawError(f"{H} with support {S}: need hidden >= 2, support >= 1 and hidden * support < vocab ({V}) "
                       f"so that at least one symbol is shared", "hidden")
    if not 0 < stay < 1 or not 0 < shared_mass < 1 or concentration <= 0:
        raise LawError(f"{stay}, shared_mass {shared_mass}: both must lie in (0, 1); concentration > 0", "stay")
    if not 1 <= moves <= H - 1:
        raise LawError(f"moves {moves}: need 1 <= moves <= hidden - 1 ({H - 1})")
    rng = np.random.default_rng(seed)
    symbols = rng.permutation(V)
    cycle = _random_cycle(rng, H)
    transition = np.zeros((H, H))
    for h in range(H):
        others = np.array([g for g in range(H) if g not in (h, cycle[h])], dtype=np.int64)
        targets = [int(cycle[h]), *rng.choice(others, moves - 1, replace=False).tolist()]
        transition[h, h] = stay
        transition[h, targets] = (1 - stay) * rng.dirichlet(np.full(moves, concentration))
    emission = np.zeros((H, V))
    shared = symbols[H * S:]
    for h in range(H):
        emission[h, symbols[h * S:(h + 1) * S]] = (1 - shared_mass) * rng.dirichlet(np.full(S, concentration))
    emission[:, shared] = shared_mass * rng.dirichlet(np.full(len(shared), concentration))
    settings = {"support": S, "stay": stay, "moves": moves, "shared_mass": shared_mass,
                "concentration": concentration, "seed": seed}
    return HiddenMarkovLaw(torch.from_numpy(transition), torch.from_numpy(emission), settings)
