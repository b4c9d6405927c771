"""Schedule identities, SUBS invariants and the NELBO estimator against closed forms."""

import math

import pytest
import torch

from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import (
    corrupt,
    masked_token_nll,
    nelbo_terms,
    stratified_times,
    subs_log_probs,
)


@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.1])
def test_loglinear_weight_is_one_over_t(eps):
    schedule = LogLinearSchedule(eps)
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    assert torch.allclose(schedule.weight(t), 1.0 / t, rtol=1e-12)


def test_alpha_boundaries_and_monotone():
    schedule = LogLinearSchedule(1e-3)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha = schedule.alpha(t)
    assert alpha[0] == 1.0 and abs(float(alpha[-1]) - 1e-3) < 1e-15
    assert (alpha[1:] < alpha[:-1]).all()
    assert torch.allclose(schedule.sigma(t), -torch.log(alpha))


def test_reveal_probability_composes():
    """Revealing t->u then u->s equals t->s: 1 - (1-r1)(1-r2) = r."""
    schedule = LogLinearSchedule(1e-3)
    t, u, s = (torch.tensor(x, dtype=torch.float64) for x in (0.9, 0.5, 0.2))
    r1, r2, r = schedule.reveal_probability(t, u), schedule.reveal_probability(u, s), \
        schedule.reveal_probability(t, s)
    assert torch.allclose(1 - (1 - r1) * (1 - r2), r)


def test_subs_mask_has_zero_probability_and_visible_is_one_hot():
    torch.manual_seed(0)
    V, mask_id = 5, 5
    logits = torch.randn(3, 7, V + 1) * 4
    x_t = torch.randint(0, V + 1, (3, 7))
    log_probs = subs_log_probs(logits, x_t, mask_id)
    probs = log_probs.exp()
    assert (probs[..., mask_id] == 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(3, 7))
    visible = x_t != mask_id
    one_hot = torch.nn.functional.one_hot(x_t, V + 1).float()
    assert torch.equal(probs[visible], one_hot[visible])
    # visible positions contribute exactly zero to the loss
    x0 = torch.where(visible, x_t, torch.randint(0, V, x_t.shape))
    contributions = -log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    assert (contributions[visible] == 0).all()


def test_stratified_times_cover_the_interval():
    generator = torch.Generator().manual_seed(0)
    t = stratified_times(8, generator, eps_t=1e-3)
    u = ((t - 1e-3) / (1 - 1e-3)).double().sort().values
    gaps = u[1:] - u[:-1]
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / 8), atol=1e-6)


def test_corrupt_masks_with_the_schedule_probability():
    schedule = LogLinearSchedule(0.0)
    x0 = torch.zeros(4000, 16, dtype=torch.long)
    t = torch.full((4000,), 0.3)
    x_t = corrupt(x0, t, schedule, 9, torch.rand(4000, 16, generator=torch.Generator().manual_seed(1)))
    assert abs(float((x_t == 9).float().mean()) - 0.3) < 0.01


def _exact_nelbo(log_probs_fn, x0, V, mask_id, eps):
    """Exact (1/(1-eps_t)) int_{eps_t}^1 w(t) E_M[-log mu(x0_M | x_t)] dt / L for schedule eps = 0,
    by enumerating masks and integrating t^{m-1} (1-t)^{L-m} numerically on a fine grid."""
    L = x0.shape[0]
    grid = torch.linspace(eps, 1.0, 200_001, dtype=torch.float64)
    total = 0.0
    for pattern in range(1 << L):
        masked = torch.tensor([(pattern >> i) & 1 for i in range(L)], dtype=torch.bool)
        m = int(masked.sum())
        if m == 0:
            continue
        x_t = torch.where(masked, torch.full_like(x0, mask_id), x0)
        nll = float(masked_token_nll(log_probs_fn(x_t[None]), x0[None], x_t[None], mask_id))
        integrand = grid ** (m - 1) * (1 - grid) ** (L - m)
        total += nll * float(torch.trapezoid(integrand, grid))
    return total / (1 - eps) / L


def test_nelbo_monte_carlo_matches_enumeration():
    torch.manual_seed(0)
    V, L, mask_id, eps_t = 3, 3, 3, 1e-3
    table = torch.randn(V + 2, L, V + 1)

    def log_probs_fn(x_t):  # a hand-set denoiser: logits depend on the number of masks
        logits = table[(x_t == mask_id).sum(-1)]  # (B, L, V + 1)
        return subs_log_probs(logits, x_t, mask_id)

    x0 = torch.tensor([0, 2, 1])
    exact = _exact_nelbo(log_probs_fn, x0, V, mask_id, eps_t)
    schedule = LogLinearSchedule(0.0)
    n = 200_000
    generator = torch.Generator().manual_seed(0)
    t = stratified_times(n, generator, eps_t)
    x0s = x0.repeat(n, 1)
    x_t = corrupt(x0s, t, schedule, mask_id, torch.rand(n, L, generator=generator))
    terms = nelbo_terms(log_probs_fn(x_t), x0s, x_t, t, schedule, mask_id).double()
    stderr = float(terms.std() / math.sqrt(n))
    assert abs(float(terms.mean()) - exact) < 4 * stderr + 1e-4


def test_nelbo_of_exact_conditional_denoiser_is_the_true_nll():
    """For mu_i(x_i | x_visible) = p*(x_i | x_visible), the continuous-time NELBO equals -log p*(x0) / L."""
    torch.manual_seed(1)
    V, L, mask_id = 2, 3, 2
    joint = torch.rand((V,) * L, dtype=torch.float64)
    joint /= joint.sum()
    sequences = torch.cartesian_prod(*[torch.arange(V)] * L)  # (V^L, L)

    def log_probs_fn(x_t):
        out = torch.full((x_t.shape[0], L, V + 1), float("-inf"), dtype=torch.float64)
        for row, state in enumerate(x_t):
            consistent = ((sequences == state) | (state == mask_id)).all(-1)
            weights = joint.flatten()[consistent]
            for i in range(L):
                for v in range(V):
                    mass = weights[sequences[consistent][:, i] == v].sum() / weights.sum()
                    out[row, i, v] = math.log(mass) if mass > 0 else float("-inf")
        return out

    for x0 in sequences:
        exact = _exact_nelbo(log_probs_fn, x0, V, mask_id, 0.0)
        true_nll = -math.log(float(joint[tuple(x0.tolist())])) / L
        assert abs(exact - true_nll) < 1e-6


# ---------------------------------------------------------------- categorical draws (diffusion/categorical.py)


def test_inverse_cdf_matches_probabilities_in_float64():
    from edlm.diffusion.categorical import inverse_cdf

    probs = torch.tensor([[[0.5, 0.0, 0.3, 0.2]]], dtype=torch.float64)
    uniforms = torch.rand(1, 1, 200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = inverse_cdf(probs, uniforms).flatten()
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert freq[1] == 0
    assert torch.allclose(freq, probs.flatten(), atol=5e-3)


def test_temperature_and_remdms_nucleus():
    """top-p keeps the tokens whose cumulative probability is <= p, plus the most likely one (ReMDM's nucleus,
    used for every ReMDM OWT number at p = 0.9); edlm used to keep the token that crosses p as well."""
    from edlm.diffusion.categorical import sampling_probs

    log_probs = torch.log(torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64))
    assert torch.allclose(sampling_probs(log_probs, top_p=0.9), torch.tensor([0.6, 0.25, 0, 0],
                                                                           dtype=torch.float64) / 0.85)
    assert torch.allclose(sampling_probs(log_probs, top_p=0.8), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert torch.allclose(sampling_probs(log_probs, top_p=0.5), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert torch.allclose(sampling_probs(log_probs, top_p=1.0), log_probs.exp())
    cold = sampling_probs(log_probs, temperature=0.01)
    assert cold[0] > 0.999
    tempered = sampling_probs(log_probs, temperature=2.0)
    expected = torch.softmax(log_probs / 2, -1)
    assert torch.allclose(tempered, expected)
