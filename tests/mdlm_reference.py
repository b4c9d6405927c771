"""An independent restatement of MDLM's DiT (kuleshov-group/mdlm, models/dit.py) in plain torch, for interop tests.

Written from MDLM's published model code, not from edlm's transformer (nothing here imports it): the module names
and the order in which parameters are registered are MDLM's, so ``state_dict()`` has the released names (under
``backbone.`` in a checkpoint) and ``parameters()`` has the order of the Lightning EMA's ``shadow_params``.
Where MDLM calls flash-attn (rotary on the packed qkv, varlen attention) this file uses the plain-torch forms
MDLM itself ships for the non-flash path: ``qkv * cos + rotate_half(qkv) * sin`` with cos = 1, sin = 0 on the v
slot, and softmax(q k^T / sqrt(d)) v without a mask. Float32 throughout (MDLM runs the blocks under bf16
autocast; the tests compare exact arithmetic).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Rotary(nn.Module):
    def __init__(self, dim, base=10_000):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, x, seq_dim=1):
        t = torch.arange(x.shape[seq_dim], device=x.device).type_as(self.inv_freq)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq.clone())
        emb = torch.cat((freqs, freqs), dim=-1)
        # dims: batch, seq_len, qkv, head, dim; the v slot is left unrotated
        cos = emb.cos()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
        sin = emb.sin()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
        cos[:, :, 2, :, :].fill_(1.0)
        sin[:, :, 2, :, :].fill_(0.0)
        return cos, sin


def apply_rotary_pos_emb(qkv, cos, sin):
    return (qkv * cos) + (rotate_half(qkv) * sin)


class LayerNorm(nn.Module):
    """MDLM's LayerNorm: a weight, no bias, statistics in float32."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones([dim]))
        self.dim = dim

    def forward(self, x):
        return F.layer_norm(x.float(), [self.dim]) * self.weight[None, None, :]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size, bias=True), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size, bias=True))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class EmbeddingLayer(nn.Module):
    def __init__(self, dim, vocab_dim):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty((vocab_dim, dim)))
        torch.nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, x):
        return self.embedding[x]


class DDiTBlock(nn.Module):
    def __init__(self, dim, n_heads, cond_dim, mlp_ratio=4, dropout=0.1):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim, bias=True), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim, bias=True))
        self.dropout2 = nn.Dropout(dropout)
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim, bias=True)

    def forward(self, x, rotary_cos_sin, c):
        batch_size, seq_len = x.shape[0], x.shape[1]
        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
         gate_mlp) = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        x_skip = x
        x = modulate(self.norm1(x), shift_msa, scale_msa)
        qkv = self.attn_qkv(x)
        qkv = qkv.view(batch_size, seq_len, 3, self.n_heads, -1)  # 'b s (three h d) -> b s three h d'
        cos, sin = rotary_cos_sin
        qkv = apply_rotary_pos_emb(qkv, cos.to(qkv.dtype), sin.to(qkv.dtype))
        q, k, v = qkv.unbind(dim=2)  # each (b, s, h, d)
        scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(q.shape[-1])
        attended = torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v)
        x = attended.reshape(batch_size, seq_len, -1)  # 'b s h d -> b s (h d)'
        x = x_skip + gate_msa * self.attn_out(x)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class DDitFinalLayer(nn.Module):
    def __init__(self, hidden_size, out_channels, cond_dim):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size, bias=True)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DIT(nn.Module):
    """MDLM's backbone: ``forward(indices (B, L), sigma (B,)) -> logits (B, L, vocab_size)``; sigma is zero when
    the model is not time-conditioned (MDLM's ``_process_sigma``)."""

    def __init__(self, hidden_size, cond_dim, n_heads, n_blocks, vocab_size, dropout=0.1):
        super().__init__()
        self.vocab_embed = EmbeddingLayer(hidden_size, vocab_size)
        self.sigma_map = TimestepEmbedder(cond_dim)
        self.rotary_emb = Rotary(hidden_size // n_heads)
        self.blocks = nn.ModuleList([DDiTBlock(hidden_size, n_heads, cond_dim, dropout=dropout)
                                     for _ in range(n_blocks)])
        self.output_layer = DDitFinalLayer(hidden_size, vocab_size, cond_dim)

    def forward(self, indices, sigma):
        x = self.vocab_embed(indices)
        c = F.silu(self.sigma_map(sigma))
        rotary_cos_sin = self.rotary_emb(x)
        for block in self.blocks:
            x = block(x, rotary_cos_sin, c)
        return self.output_layer(x, c)


def random_dit(seed: int, hidden=16, cond=8, heads=2, blocks=2, vocab=28) -> DIT:
    """A DIT with every parameter random (MDLM zero-initialises adaLN and the output layer; random here so that
    every weight shows in the logits)."""
    torch.manual_seed(seed)
    model = DIT(hidden, cond, heads, blocks, vocab).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_((1.0 if "norm" in name else 0.0) + 0.4 * torch.randn_like(parameter))
    return model
