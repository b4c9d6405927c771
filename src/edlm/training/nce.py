"""EDLM-NCE training: noise-contrastive estimation of the energy with the frozen MDLM as noise (docs/method.md §3.2).

Positives are data x0 with x_t ~ q(x_t | x0); negatives x~ ~ mu_theta(. | x_t), drawn in float64 with no
gradient into mu_theta. Per sequence, with n negatives,

    loss = softplus(E(x0, x_t)) + (1 / n) sum_j softplus(-E(x~_j, x_t))
         = -log sigmoid(-E+) - (1 / n) sum_j log sigmoid(E-_j),

i.e. logistic regression with logit -E ("data" when E < 0). softplus keeps it exact for large |E|.

Randomness: the negatives of a row are drawn from a generator seeded by a hash of that row's (x0, t, masking
uniforms) and the run seed. The batch itself is a function of (seed, step) (``training.batches``), so
resuming is exact and every shard (data-parallel rank, micro-batch) draws the same negatives as the
single-process run would for the same rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edlm.config import ConfigError, RunConfig
from edlm.device import autocast_for
from edlm.diffusion.posterior import draw_candidates
from edlm.diffusion.schedule import LogLinearSchedule, schedule_for
from edlm.diffusion.subs import corrupt, stratified_times, subs_log_probs
from edlm.models.energy_net import SHARED_PREFIXES
from edlm.training.batches import GlobalBatch

#: model sizes that must agree between the denoiser and the energy network initialised from it
MATCHING_FIELDS = ("vocab_size", "seq_len", "hidden", "n_layers", "n_heads", "cond_dim", "mlp_ratio")


def load_denoiser_for_nce(run_dir: str | Path, config: RunConfig, device) -> tuple[torch.nn.Module, dict]:
    """Load the frozen MDLM noise model (EMA weights) from ``run_dir`` for NCE training of ``config``.

    Returns (denoiser in eval mode with requires_grad False, state dict of the parts the energy network
    shares with it: ``vocab_embed``, ``sigma_map``, ``rotary_emb``, ``blocks``).
    """
    from edlm.checkpoint import load_model

    denoiser_config, denoiser = load_model(run_dir, device=device)
    if denoiser_config.model.kind != "mdlm":
        raise ConfigError(f"{run_dir}: holds a {denoiser_config.model.kind!r} model; NCE needs a "
                          f"trained 'mdlm' denoiser", "denoiser")
    for name in MATCHING_FIELDS:
        ours, theirs = getattr(config.model, name), getattr(denoiser_config.model, name)
        if ours != theirs:
            raise ConfigError(f"{run_dir}: the denoiser has model.{name}={theirs} but the energy "
                              f"network would have model.{name}={ours}; the energy network is initialised "
                              f"from the denoiser, so pass model.{name}={theirs} (or the denoiser's preset)",
                              "denoiser")
    denoiser.requires_grad_(False)
    denoiser.eval()
    init_state = {k: v.detach() for k, v in denoiser.state_dict().items() if k.startswith(SHARED_PREFIXES)}
    return denoiser, init_state


def nce_loss(energy_pos: torch.Tensor, energy_neg: torch.Tensor) -> torch.Tensor:
    """NCE loss per sequence: energy_pos (B,), energy_neg (B, n) -> (B,) float32 (module docstring)."""
    return F.softplus(energy_pos.float()) + F.softplus(-energy_neg.float()).mean(-1)


def nce_metrics(energy_pos: torch.Tensor, energy_neg: torch.Tensor) -> dict[str, float]:
    """Balanced classification accuracy (positives need E < 0, negatives E > 0) and mean energies."""
    pos_correct = (energy_pos < 0).double().mean()
    neg_correct = (energy_neg > 0).double().mean()
    return {"accuracy": float(0.5 * (pos_correct + neg_correct)), "energy_pos": float(energy_pos.double().mean()),
            "energy_neg": float(energy_neg.double().mean())}


def row_seeds(x0: torch.Tensor, t: torch.Tensor, uniforms: torch.Tensor, seed: int) -> list[int]:
    """One 63-bit seed per row from a hash of the row's content: x0, uniforms (B, L), t (B,) -> B ints."""
    x0_rows = x0.detach().cpu().numpy().astype(np.int64)
    u_rows = uniforms.detach().cpu().float().numpy()
    t_rows = t.detach().cpu().float().numpy()
    seeds = []
    for index in range(x0_rows.shape[0]):
        digest = hashlib.blake2b(digest_size=8, key=int(seed).to_bytes(8, "little", signed=True))
        for part in (x0_rows[index], u_rows[index], t_rows[index:index + 1]):
            digest.update(np.ascontiguousarray(part).tobytes())
        seeds.append(int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1))
    return seeds


def draw_negatives(log_probs: torch.Tensor, x_t: torch.Tensor, mask_id: int, num: int,
                   seeds: list[int]) -> torch.Tensor:
    """x~ ~ mu_theta(. | x_t), ``num`` per row, float64 inverse CDF; visible positions copied from x_t.

    Same draw as ``diffusion.posterior.draw_candidates`` but with one generator per row (seeded by ``seeds``), so a
    row's negatives do not depend on which other rows share its batch. log_probs (B, L, V + 1), x_t (B, L)
    -> (B, num, L) int64.
    """
    B, L = x_t.shape
    uniforms = torch.stack([torch.rand((num, L), generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                            for s in seeds]).to(x_t.device)  # (B, num, L)
    return draw_candidates(log_probs, x_t, mask_id, num, None, uniforms=uniforms)


def nce_energies(model, denoiser, batch: GlobalBatch, schedule: LogLinearSchedule, mask_id: int,
                 num_negatives: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies of the positives (B,) and of their negatives (B, n), from one forward call of ``model``."""
    x0 = batch.x0
    x_t = corrupt(x0, batch.t, schedule, mask_id, batch.uniforms)  # (B, L)
    with torch.no_grad():  # no gradient into mu_theta
        log_probs = subs_log_probs(denoiser(x_t, schedule.sigma(batch.t)), x_t, mask_id)  # (B, L, V + 1)
        negatives = draw_negatives(log_probs, x_t, mask_id, num_negatives,
                                   row_seeds(x0, batch.t, batch.uniforms, seed))  # (B, n, L)
    B, n, L = negatives.shape
    candidates = torch.cat([x0, negatives.reshape(B * n, L)])  # (B + B n, L)
    conditions = torch.cat([x_t, x_t.repeat_interleave(n, dim=0)])  # (B + B n, L)
    energies = model(candidates, conditions)  # (B + B n,); a DDP wrapper forwards both arguments
    return energies[:B], energies[B:].view(B, n)


def make_nce_objective(config: RunConfig, denoiser: torch.nn.Module, schedule: LogLinearSchedule):
    """Objective for ``training.loop``: (model, batch) -> (per-sequence NCE loss (B,), metrics)."""
    if denoiser is None:
        raise ConfigError(": the NCE energy needs the frozen MDLM denoiser's run folder", "denoiser")
    mask_id, negatives, seed = config.model.mask_id, config.train.negatives, config.train.seed

    def objective(model, batch: GlobalBatch):
        energy_pos, energy_neg = nce_energies(model, denoiser, batch, schedule, mask_id, negatives, seed)
        return nce_loss(energy_pos, energy_neg), nce_metrics(energy_pos.detach(), energy_neg.detach())

    return objective


@torch.no_grad()
def validate_nce(config: RunConfig, model, val_chunks: torch.Tensor, denoiser, info, seed: int = 0
                 ) -> dict[str, float]:
    """NCE loss and accuracy of ``model`` on val chunks (N, L), with fixed t, masks and negatives (``seed``).

    t is stratified per batch over the training window [1 - nce_window, 1]. Returns loss, accuracy,
    energy_pos, energy_neg (means over all chunks).
    """
    train = config.train
    schedule = schedule_for(config)
    generator = torch.Generator().manual_seed(seed)
    low = 1.0 - train.nce_window if train.nce_window < 1 else None
    losses, positives, negatives = [], [], []
    for start in range(0, val_chunks.shape[0], train.batch_size):
        x0 = val_chunks[start:start + train.batch_size]
        t = stratified_times(x0.shape[0], generator, train.eps_t)
        if low is not None:  # same mapping as training.batches.global_batch
            t = low + (1.0 - low) * (t - train.eps_t) / (1.0 - train.eps_t)
        uniforms = torch.rand(x0.shape, generator=generator)
        batch = GlobalBatch(x0, t, uniforms).to(info.device)
        with autocast_for(info.device, train.precision):
            energy_pos, energy_neg = nce_energies(model, denoiser, batch, schedule, config.model.mask_id,
                                                  train.negatives, seed)
        losses.append(nce_loss(energy_pos, energy_neg).double().cpu())
        positives.append(energy_pos.double().cpu())
        negatives.append(energy_neg.double().cpu())
    energy_pos, energy_neg = torch.cat(positives), torch.cat(negatives)
    return {"loss": float(torch.cat(losses).mean()), **nce_metrics(energy_pos, energy_neg)}
