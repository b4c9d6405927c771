"""The DiT-style transformer used for the denoiser, the AR model and the energy network.

Mirrors the MDLM/EDLM backbone (docs/method.md §1) with the same parameter names so released weights can be
mapped in: bias-free pre-norm LayerNorm, adaLN-Zero modulation from a (sigma) embedding, rotary position
embeddings on q and k, GELU(tanh) MLP of width 4H, untied input/output embeddings, zero-initialised output
layer. Attention runs through ``F.scaled_dot_product_attention``; ``causal=True`` turns it into the AR model.

The network knows nothing about diffusion: tokens (B, L) in, raw logits (B, L, V + 1) out.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from edlm.config import ModelConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # one (k, v) pair per layer, each (B, nh, T, hs)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half form, base 10000); cos/sin (T, hs) computed on the fly."""

    def __init__(self, head_dim: int, base: float = 10_000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim),
                             persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (T, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, hs)
        return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hs); cos, sin (T, hs)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of sigma followed by a 2-layer MLP (cond_dim)."""

    def __init__(self, cond_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=sigma.device) / half)
        args = sigma.float()[:, None] * freqs[None]  # (B, half)
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class DiTBlock(nn.Module):
    def __init__(self, config: ModelConfig, causal: bool):
        super().__init__()
        hidden = config.hidden
        self.n_heads = config.n_heads
        self.causal = causal
        self.dropout = config.dropout
        self.norm1 = nn.LayerNorm(hidden, bias=False)
        self.attn_qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.attn_out = nn.Linear(hidden, hidden, bias=False)
        self.norm2 = nn.LayerNorm(hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(hidden, config.mlp_ratio * hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.mlp_ratio * hidden, hidden))
        self.adaLN_modulation = nn.Linear(config.cond_dim, 6 * hidden)
        nn.init.zeros_(self.adaLN_modulation.weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, c: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, T, H), c (B, cond_dim); ``cache`` holds keys/values of earlier positions (AR decoding only).

        Returns the new x and the (k, v) pair covering all positions seen so far.
        """
        B, T, H = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c)[:, None].chunk(6, dim=2)  # each (B, 1, H)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        q, k, v = self.attn_qkv(h).view(B, T, 3, self.n_heads, H // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # (B, nh, T, hs)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        # With a cache, T new queries attend to all past keys: causal masking is only needed among new ones.
        is_causal = self.causal and T > 1
        if is_causal and k.shape[2] != T:
            past = k.shape[2] - T
            allowed = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        else:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal,
                                                  dropout_p=self.dropout if self.training else 0.0)
        attn = attn.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        x = x + gate_msa * F.dropout(self.attn_out(attn), self.dropout, self.training)
        x = x + gate_mlp * F.dropout(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)), self.dropout,
                                     self.training)
        return x, (k, v)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_dim: int, cond_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, bias=False)
        self.linear = nn.Linear(hidden, out_dim)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden)
        for layer in (self.linear, self.adaLN_modulation):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class Embedding(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab, hidden))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding[tokens]


class Transformer(nn.Module):
    """Backbone shared by the denoiser (bidirectional) and the AR model (``causal=True``).

    ``forward(tokens (B, L) int64, sigma (B,) or None) -> logits (B, L, V + 1)`` in the autocast dtype.
    With time conditioning off the conditioning input is the constant sigma = 0, as in MDLM.
    """

    def __init__(self, config: ModelConfig, causal: bool = False):
        super().__init__()
        self.config = config
        self.causal = causal
        self.vocab_embed = Embedding(config.vocab_size + 1, config.hidden)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = Rotary(config.hidden // config.n_heads)
        self.blocks = nn.ModuleList(DiTBlock(config, causal) for _ in range(config.n_layers))
        self.output_layer = FinalLayer(config.hidden, config.vocab_size + 1, config.cond_dim)

    def condition(self, batch: int, sigma: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        if sigma is None or not self.config.time_conditioning:
            sigma = torch.zeros(batch, device=device)
        return F.silu(self.sigma_map(sigma))  # (B, cond_dim)

    def hidden_states(self, x: torch.Tensor, c: torch.Tensor, start_pos: int = 0,
                      kv_cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Run the blocks on embedded input x (B, T, H). Returns (hidden (B, T, H), new kv pairs)."""
        positions = torch.arange(start_pos, start_pos + x.shape[1], device=x.device)
        cos, sin = self.rotary_emb(positions)
        new_cache: KVCache = []
        for index, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, c, None if kv_cache is None else kv_cache[index])
            new_cache.append(kv)
        return x, new_cache

    def forward(self, tokens: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        c = self.condition(tokens.shape[0], sigma, tokens.device)
        x, _ = self.hidden_states(self.vocab_embed(tokens), c)
        return self.output_layer(x, c)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
