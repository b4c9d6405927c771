"""MDLM's own sampling loop in plain torch, the reference of ``edlm bench vs-mdlm`` (a cost comparison only: it is
not one of edlm's samplers, and its samples are not compared with edlm's).

Written for this benchmark from the description of kuleshov-group/mdlm's ``Diffusion._sample`` with
``sampler=ddpm_cache`` (log-linear schedule, no time conditioning); no code of that repository is copied. Per run:
x = all [MASK]; the grid t_i = linspace(1, eps, T + 1) with dt = (1 - eps) / T; per step t -> s = t - dt

    p_x0 = exp(SUBS log-probs of the network at x)     only when the cache is empty
    q_xs = p_x0 * (t - s), q_xs[..., mask] = s          (the log-linear move chance is t itself)
    x_s  = argmax(q_xs / (1e-10 - log(u + 1e-10)))      ``_sample_categorical``, u ~ U(0, 1); visible x copied
    the cache is emptied unless torch.allclose(x_s, x)  one host read per step; whenever any row changed, the
                                                         whole batch is recomputed at the next step

and at the end one more network call whose argmax replaces x (MDLM's ``noise_removal``). Its SUBS is MDLM's: the
[MASK] logit += -1e6, log-softmax, then the visible positions set to one-hot by boolean-mask indexing (host reads:
the mask's size). The network is edlm's DiT (``models.transformer``), whose layout mirrors MDLM's; MDLM's DiT calls
flash-attn's kernels, for which PyTorch's ``scaled_dot_product_attention`` stands in here (it picks a flash kernel
on a GPU). bf16 autocast around the network as in MDLM.

Gumbel precision: ``float64`` (the default) draws u and divides in float64, as ReMDM's code does after
low-precision Gumbel noise was shown to lower the sampling temperature; ``float32`` keeps p_x0 and the noise in
float32, MDLM's original precision. edlm draws every x0 by a float64 inverse CDF, so ``float64`` is the like-for-like
comparison.
"""

from __future__ import annotations

from typing import Callable

import torch

from edlm.device import autocast_for

NEG_INFINITY = -1_000_000.0  # MDLM's neg_infinity


def mdlm_subs(logits: torch.Tensor, x: torch.Tensor, mask_id: int) -> torch.Tensor:
    """MDLM's SUBS parameterisation: logits (B, L, V + 1) -> log-probs (B, L, V + 1) float32."""
    logits = logits.float()
    logits[:, :, mask_id] += NEG_INFINITY
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = x != mask_id  # (B, L) boolean-mask indexing below: host reads, as in MDLM
    logits[unmasked] = NEG_INFINITY
    logits[unmasked, x[unmasked]] = 0.0
    return logits


def sample_categorical(probs: torch.Tensor, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """MDLM's ``_sample_categorical``: argmax of probs / (1e-10 - log(u + 1e-10)) in ``dtype``; (B, L, V) -> (B, L)."""
    probs = probs.to(dtype)
    uniforms = torch.rand(probs.shape, generator=generator, dtype=dtype, device=probs.device)
    return (probs / (1e-10 - (uniforms + 1e-10).log())).argmax(dim=-1)


@torch.no_grad()
def mdlm_sample(network: torch.nn.Module, batch: int, length: int, mask_id: int, steps: int,
                generator: torch.Generator, precision: str = "bf16", gumbel: str = "float64", eps: float = 1e-5,
                progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, int]:
    """One run of MDLM's cached ancestral loop (module docstring) -> (tokens (batch, length) int64, network calls).
    ``progress(i)`` after step i."""
    device = next(network.parameters()).device
    dtype = {"float64": torch.float64, "float32": torch.float32}[gumbel]

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast_for(device, precision):
            logits = network(x)
        return mdlm_subs(logits, x, mask_id)

    x = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    timesteps = torch.linspace(1.0, eps, steps + 1, device=device)
    dt = (1.0 - eps) / steps
    p_x0, calls = None, 0
    for index in range(steps):
        t = timesteps[index] * torch.ones(batch, 1, device=device)  # (B, 1)
        move_t, move_s = t[:, :, None], (t - dt)[:, :, None]  # (B, 1, 1)
        if p_x0 is None:
            p_x0, calls = forward(x).exp().to(dtype), calls + 1
        q_xs = p_x0 * (move_t - move_s).to(dtype)
        q_xs[:, :, mask_id] = move_s[:, :, 0].to(dtype)
        drawn = sample_categorical(q_xs, generator, dtype)
        copy = (x != mask_id).to(x.dtype)
        x_next = copy * x + (1 - copy) * drawn
        if not torch.allclose(x_next, x):  # one host read per step
            p_x0 = None
        x = x_next
        if progress is not None:
            progress(index)
    return forward(x).argmax(dim=-1), calls + 1
