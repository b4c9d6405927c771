"""Autoregressive sampling from the causal AR model, with a key/value cache (the baseline of docs/method.md §4).

Sequence convention (``models.ar.ar_inputs``): the network input is ``[start, x0_0, ..., x0_{L-2}]``
with the [MASK] id as start token, and the logits at input position i predict x0_i. So:

    prefill   input [start, prompt_0 .. prompt_{P-1}]      (B, P + 1) -> logits of x0_P, keys/values cached
    decode    input [x0_{i-1}] at position i, past reused  (B, 1)     -> logits of x0_i, for i = P + 1 .. L - 1

``L - P`` forward calls per batch. Every draw is a float64 inverse-CDF draw (``diffusion.categorical``) from
one float64 uniform per row and generated position; the uniforms for all ``num`` sequences are drawn up front
as ``(num, L - P)`` from a CPU ``torch.Generator`` seeded with ``seed``, so sample i sees the same uniforms
whatever the batch size or device. The [MASK] logit is -inf before the softmax: the model never emits it.

``sample_ar_uncached`` is the reference: a full forward pass over the whole prefix at every position
(through ``ar_log_probs``, the training objective's own function), consuming the same uniforms.
"""

from __future__ import annotations

import time

import torch

from edlm.data.tokenizers import get_tokenizer
from edlm.device import autocast_for
from edlm.diffusion.categorical import inverse_cdf, sampling_probs
from edlm.errors import EdlmError
from edlm.models.ar import ar_log_probs
from edlm.sampling.generate import decode_sample


class ARPromptError(EdlmError, ValueError):
    """A prompt or length the AR sampler cannot use; the message names the flag."""


def next_tokens(log_probs: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0,
                top_p: float = 1.0) -> torch.Tensor:
    """One categorical draw per row.

    Args: log_probs (B, V + 1) float with -inf at the mask id; uniforms (B,) float64 in [0, 1).
    ``temperature == 0`` is greedy (argmax; the uniforms are still consumed by the caller).
    Returns: (B,) int64.
    """
    if temperature == 0.0:
        return log_probs.argmax(-1)
    probs = sampling_probs(log_probs, temperature, top_p)  # (B, V + 1) float64
    return inverse_cdf(probs[:, None, :], uniforms.to(probs.device)[:, None, None])[:, 0, 0]  # (B,)


def _masked_log_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Raw logits (B, V + 1) -> float32 log-probs with the mask id at -inf (as ``ar_log_probs``)."""
    logits = logits.float()
    logits[..., mask_id] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def sample_ar_cached(model, prefix: torch.Tensor, length: int, uniforms: torch.Tensor, mask_id: int,
                     temperature: float = 1.0, top_p: float = 1.0, precision: str = "fp32"
                     ) -> tuple[torch.Tensor, int]:
    """KV-cached decoding.

    Args:
        model: a causal ``Transformer`` (``hidden_states`` returns per-layer (k, v) pairs).
        prefix: (B, P) int64 prompt tokens on the model's device, 0 <= P <= length.
        uniforms: (B, length - P) float64, one per generated position.
    Returns: tokens (B, length) int64 (prefix kept) and the number of forward calls.
    """
    B, P = prefix.shape
    device = prefix.device
    tokens = torch.cat([prefix, torch.full((B, length - P), mask_id, dtype=torch.long, device=device)], dim=1)
    if P == length:
        return tokens, 0
    c = model.condition(B, None, device)  # time conditioning off: the constant sigma = 0 embedding
    inputs = torch.cat([torch.full((B, 1), mask_id, dtype=torch.long, device=device), prefix], dim=1)  # (B, P+1)
    with autocast_for(device, precision):
        hidden, cache = model.hidden_states(model.vocab_embed(inputs), c)  # (B, P + 1, H)
        logits = model.output_layer(hidden[:, -1:], c)[:, 0]  # (B, V + 1)
    nfe = 1
    for position in range(P, length):
        tokens[:, position] = next_tokens(_masked_log_probs(logits, mask_id), uniforms[:, position - P],
                                          temperature, top_p)
        if position + 1 == length:
            break
        # input position (position + 1) holds x0_position; it attends to every cached key before it
        with autocast_for(device, precision):
            hidden, cache = model.hidden_states(model.vocab_embed(tokens[:, position:position + 1]), c,
                                                start_pos=position + 1, kv_cache=cache)  # (B, 1, H)
            logits = model.output_layer(hidden, c)[:, 0]  # (B, V + 1)
        nfe += 1
    return tokens, nfe


@torch.no_grad()
def sample_ar_uncached(model, prefix: torch.Tensor, length: int, uniforms: torch.Tensor, mask_id: int,
                       temperature: float = 1.0, top_p: float = 1.0, precision: str = "fp32"
                       ) -> tuple[torch.Tensor, int]:
    """Reference sampler: a full causal forward pass over ``x0_<i`` for each position i. Same contract as
    ``sample_ar_cached`` and the same uniforms, so under fp32 both give the same tokens."""
    B, P = prefix.shape
    device = prefix.device
    tokens = torch.cat([prefix, torch.full((B, length - P), mask_id, dtype=torch.long, device=device)], dim=1)
    nfe = 0
    for position in range(P, length):
        with autocast_for(device, precision):
            # ar_log_probs shifts right behind the start token: its last row depends on tokens[:, :position] only
            log_probs = ar_log_probs(model, tokens[:, :position + 1], mask_id)[:, -1]  # (B, V + 1)
        nfe += 1
        tokens[:, position] = next_tokens(log_probs, uniforms[:, position - P], temperature, top_p)
    return tokens, nfe


def encode_prompt(prompt: str | None, length: int, tokenizer=None) -> tuple[torch.Tensor, str]:
    """A prompt -> ((P,) int64 ids, their text) through the tokenizer's own prompt rule (``prompt_ids``; default:
    the char alphabet, which normalises as the corpus and keeps a trailing space); checks it fits ``length``."""
    tokenizer = tokenizer or get_tokenizer("char")
    ids, _ = tokenizer.prompt_ids(prompt or "")
    if len(ids) > length:
        raise ARPromptError(f"is {len(ids)} {tokenizer.name} tokens, longer than the length {length}", "prompt")
    return torch.tensor(ids, dtype=torch.long), tokenizer.decode(ids) if ids else ""


def generate_ar(model, config, num: int, length: int, seed: int, temperature: float = 1.0, top_p: float = 1.0,
                prompt: str | None = None, batch_size: int = 16, cached: bool = True, precision: str = "fp32",
                rows: range | None = None, tokenizer=None) -> tuple[list[str], dict]:
    """Sample ``num`` texts of ``length`` tokens (the prompt is their prefix); ``tokenizer`` (default: the char
    alphabet) encodes the prompt and decodes the samples (whole rows, see ``decode_sample``).

    The uniforms of all ``num`` samples are drawn from ``seed`` up front, so ``rows`` (default: all; a
    ``parallel.shard`` of whole batches) samples just those texts, equal to the same rows of a full run.

    Returns (texts, stats) with stats ``nfe`` (forward calls, all batches), ``nfe_per_sequence``, ``seconds``,
    ``prompt`` (normalised) and ``cached``.
    """
    if length > config.model.seq_len:
        raise ARPromptError(f"{length}: longer than the AR model's sequence length {config.model.seq_len}",
                            "length")
    device = next(model.parameters()).device
    mask_id = config.model.mask_id
    prefix, prompt_text = encode_prompt(prompt, length, tokenizer)
    generator = torch.Generator().manual_seed(seed)
    uniforms = torch.rand((num, length - len(prefix)), generator=generator, dtype=torch.float64)  # (N, G)
    sampler = sample_ar_cached if cached else sample_ar_uncached
    started = time.perf_counter()
    texts, token_ids, nfe = [], [], 0
    rows = range(num) if rows is None else rows
    for start in range(rows.start, rows.stop, batch_size):
        count = min(batch_size, rows.stop - start)
        batch_prefix = prefix.to(device).unsqueeze(0).expand(count, -1)  # (b, P)
        tokens, calls = sampler(model, batch_prefix, length, uniforms[start:start + count].to(device), mask_id,
                                temperature, top_p, precision)
        nfe += calls
        tokens = tokens.cpu()
        texts.extend(decode_sample(row, tokenizer) for row in tokens)
        token_ids.extend(tokens.tolist())
    seconds = time.perf_counter() - started
    stats = {"nfe": nfe, "nfe_per_sequence": length - len(prefix), "seconds": seconds,
             "prompt": prompt_text, "cached": cached, "token_ids": token_ids}
    return texts, stats
