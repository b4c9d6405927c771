"""The tiny problem the likelihood tests share: V = 2, L = 3, a known joint p* over V^L, its exact denoiser, two
wrong ones, and the (denoiser, energy, T, window, k) settings the exact and Monte-Carlo bounds are checked on.
Everything is float64; the building blocks (joints, conditional denoisers, energies) come from ``toys``.
"""

from __future__ import annotations

import torch
from toys import conditional_denoiser, exact_energy, fixed_denoiser, pair_energy, random_joint

from edlm.diffusion.schedule import LogLinearSchedule

SCHEDULE = LogLinearSchedule(eps=0.0)  # alpha(1) = 0: x_1 is all-[MASK], no prior term
V, L = 2, 3
P_STAR = random_joint(V, L, seed=0)


def exact_denoiser():
    return conditional_denoiser(P_STAR, V, L)


def wrong_denoiser():
    """Context-dependent but wrong: exact conditionals of another joint."""
    return conditional_denoiser(random_joint(V, L, seed=1), V, L)


def uniform_denoiser():
    return fixed_denoiser(torch.full((L, V), 1.0 / V, dtype=torch.float64))


SETTINGS = [  # (denoiser, energy, T, window, k)
    (exact_denoiser, lambda: exact_energy(P_STAR, V), 4, 1.0, 2),
    (exact_denoiser, lambda: exact_energy(P_STAR, V), 3, 0.5, 4),
    (uniform_denoiser, lambda: exact_energy(P_STAR, V), 2, 1.0, 4),
    (wrong_denoiser, lambda: pair_energy(1.0), 4, 0.6, 3),
    (wrong_denoiser, lambda: pair_energy(-2.0), 2, 1.0, 1),
]
