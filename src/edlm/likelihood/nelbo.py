"""Likelihood evaluation over a whole split: MDLM NELBO (upper bound) and exact AR NLL.

Both report nats per token, perplexity per token and bits per character (= nats per token / characters per
token / ln 2), with a standard error over sequences (the sequences are the independent units; several t draws
per sequence reduce variance).
"""

from __future__ import annotations

import math

import torch

from edlm.device import autocast_for
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.subs import corrupt, nelbo_terms, stratified_times, subs_log_probs
from edlm.models.ar import ar_loss
from edlm.parallel import batch_seed
from edlm.progress import progress as show_progress


def summarize(per_sequence: torch.Tensor, seq_len: int, chars_per_token: float = 1.0) -> dict[str, float]:
    """per_sequence (N,) nats per token -> summary dict with the standard error of the mean.

    nll_nats and ppl are per token; bpc is bits per character of the decoded text, total nats / characters /
    ln 2 = nats per token / ``chars_per_token`` / ln 2 (1.0 for character models: bpc = nats / ln 2).
    """
    values = per_sequence.double().cpu()
    n = values.numel()
    mean = float(values.mean())
    stderr = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    per_char = chars_per_token * math.log(2)
    return {"nll_nats": mean, "bpc": mean / per_char, "ppl": math.exp(mean),
            "stderr_nats": stderr, "stderr_bpc": stderr / per_char, "tokens": n * seq_len,
            "sequences": n, "chars_per_token": chars_per_token}


@torch.no_grad()
def mdlm_nelbo_per_sequence(model, chunks: torch.Tensor, schedule: LogLinearSchedule, mask_id: int,
                            t_samples: int = 1, batch_size: int = 32, seed: int = 0, eps_t: float = 1e-3,
                            precision: str = "fp32", progress: bool = False,
                            first_batch: int = 0) -> torch.Tensor:
    """Continuous-time NELBO of every chunk (N, L) -> (N,) nats/token, averaged over ``t_samples`` draws.

    t is stratified across each evaluation batch. Batch b (rows b * batch_size ...) draws its ``t_samples``
    (t, corruption) pairs from a generator seeded by ``batch_seed(seed, first_batch + b)``: its figures depend
    on (seed, batch index) only, so ``chunks`` may be a shard of whole batches starting at batch
    ``first_batch`` (``edlm.parallel.shard``) and its rows equal those of a one-process run.
    """
    device = next(model.parameters()).device
    total = torch.zeros(chunks.shape[0], dtype=torch.float64)
    for index, start in enumerate(show_progress(range(0, chunks.shape[0], batch_size), "mdlm nelbo", progress)):
        generator = torch.Generator().manual_seed(batch_seed(seed, first_batch + index))
        for _ in range(t_samples):
            x0 = chunks[start:start + batch_size]
            t = stratified_times(x0.shape[0], generator, eps_t)
            uniforms = torch.rand(x0.shape, generator=generator)
            x0, t, uniforms = x0.to(device), t.to(device), uniforms.to(device)
            x_t = corrupt(x0, t, schedule, mask_id, uniforms)
            with autocast_for(device, precision):
                logits = model(x_t, schedule.sigma(t))
            terms = nelbo_terms(subs_log_probs(logits, x_t, mask_id), x0, x_t, t, schedule, mask_id)
            total[start:start + x0.shape[0]] += terms.double().cpu()
    return total / t_samples


@torch.no_grad()
def ar_nll_per_sequence(model, chunks: torch.Tensor, mask_id: int, batch_size: int = 32,
                        precision: str = "fp32", progress: bool = False) -> torch.Tensor:
    """Exact AR NLL of every chunk (N, L) -> (N,) nats/token."""
    device = next(model.parameters()).device
    out = []
    for start in show_progress(range(0, chunks.shape[0], batch_size), "ar nll", progress):
        x0 = chunks[start:start + batch_size].to(device)
        with autocast_for(device, precision):
            out.append(ar_loss(model, x0, mask_id).double().cpu())
    return torch.cat(out)
