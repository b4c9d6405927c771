"""EDLM-NCE energy network E(x0, x_t) (docs/method.md §3.2).

A bidirectional transformer initialised from the pretrained denoiser. Per position the embeddings of x_t and of
the candidate x0 are concatenated and projected back to H (``input_proj``), the denoiser's blocks run on that,
then a bias-free LayerNorm, a mean over positions and a small MLP give one scalar per sequence.
Low energy = more likely under p(x0 | x_t) ∝ mu_theta(x0 | x_t) exp(-E(x0, x_t)).

Parameter names shared with ``Transformer`` (so a denoiser state dict loads with ``strict=False``):
``vocab_embed``, ``sigma_map``, ``rotary_emb`` (no stored weights) and ``blocks``. The denoiser's
``output_layer`` is not used. New parts: ``input_proj``, ``norm_final``, ``head``.

Initialisation: ``input_proj`` = [I | 0] (zero bias), so before training the hidden states are exactly the
denoiser's hidden states on x_t. The initial energy is therefore a function of x_t alone, the same for every
candidate x0, so importance sampling with the untrained network reduces to MDLM (softmax(-E) is uniform over
candidates). The head keeps PyTorch's default (random) init on purpose: with a zero last layer as well, every
gradient would vanish at [I | 0] (the x0 half only receives gradient through the head, and E+ = E- for a
shared x_t), and Adam would amplify round-off noise into the first updates.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from edlm.config import ModelConfig
from edlm.models.transformer import (
    DiTBlock,
    Embedding,
    Rotary,
    TimestepEmbedder,
    Transformer,
)

#: state-dict prefixes copied from the denoiser (everything else is new or the unused output layer)
SHARED_PREFIXES = ("vocab_embed.", "sigma_map.", "rotary_emb.", "blocks.")


def sigma_from_mask_fraction(x_t: torch.Tensor, mask_id: int, max_fraction: float = 0.999) -> torch.Tensor:
    """Noise level read off x_t: sigma_hat = -log(1 - fraction masked), the log-linear schedule's sigma at the
    t whose expected mask fraction matches (eps ignored). x_t (B, L) -> (B,) float32.

    Used when time conditioning is on and no sigma is given: the energy protocol sees x_t but not t, so
    training and sampling both condition on this function of x_t (it is an estimate of sigma(t), not sigma(t)).
    """
    fraction = (x_t == mask_id).float().mean(-1).clamp(max=max_fraction)
    return -torch.log1p(-fraction)


class EnergyNetwork(nn.Module):
    """``forward(x0 (B, L) int64, x_t (B, L) int64, sigma (B,) or None) -> energies (B,) float32``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden
        # shared with the denoiser (same names, same shapes)
        self.vocab_embed = Embedding(config.vocab_size + 1, hidden)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = Rotary(hidden // config.n_heads)
        self.blocks = nn.ModuleList(DiTBlock(config, causal=False) for _ in range(config.n_layers))
        # energy-only parts
        self.input_proj = nn.Linear(2 * hidden, hidden)
        self.norm_final = nn.LayerNorm(hidden, bias=False)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.input_proj.weight.zero_()
            self.input_proj.weight[:, :hidden].copy_(torch.eye(hidden))  # [I | 0]: starts as the denoiser on x_t
            self.input_proj.bias.zero_()

    # The conditioning and the block stack are the denoiser's own code path (identical hidden states).
    condition = Transformer.condition
    _run_blocks = Transformer.hidden_states

    def hidden_states(self, x0: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Hidden states after the blocks, before the final norm: (B, L, H)."""
        if sigma is None and self.config.time_conditioning:
            sigma = sigma_from_mask_fraction(x_t, self.config.mask_id)
        c = self.condition(x_t.shape[0], sigma, x_t.device)  # (B, cond_dim)
        x = torch.cat([self.vocab_embed(x_t), self.vocab_embed(x0)], dim=-1)  # (B, L, 2H)
        hidden, _ = self._run_blocks(self.input_proj(x), c)  # (B, L, H)
        return hidden

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.norm_final(self.hidden_states(x0, x_t, sigma)).mean(dim=1)  # (B, H)
        return self.head(pooled).squeeze(-1).float()  # (B,)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
