"""High-level generation used by the CLI and the benchmarks: sampler, one call.

Templates and decoding belong to the tokenizers (``edlm.data.tokenizers``); the names are re-exported here.
"""

from __future__ import annotations

from typing import Callable

import torch

from edlm.config import RunConfig
from edlm.data.tokenizers import build_template, decode_sample  # prompts, infill and decoding: the tokenizers'

from edlm.diffusion.schedule import schedule_for
from edlm.models.denoiser import make_denoiser_fn
from edlm.parallel import batch_seed
from edlm.sampling.base import SampleResult
from edlm.sampling.config import SampleConfig
from edlm.sampling.graphs import ShapeGraphs
from edlm.sampling.importance import ImportanceSampler
from edlm.sampling.loop import MaskedDiffusionSampler
from edlm.sampling.proposal import FactorizedProposal
from edlm.sampling.registry import SAMPLERS


def build_sampler(denoiser, schedule, mask_id: int, sample: SampleConfig, energy=None) -> MaskedDiffusionSampler:
    """The sampler ``sample`` asks for around a denoiser function (``sampling.base.DenoiserFn``): the registry's
    step, the factorised proposal, EDLM importance sampling when ``energy`` is given. ``ancestral`` is the uncached
    reference; every other sampler runs with the per-row cache (where valid)."""
    spec = SAMPLERS[sample.sampler]
    step = spec.build(schedule, mask_id, sample.options_for(), sample)
    proposal = FactorizedProposal(mask_id, sample.temperature, sample.top_p)
    importance = None
    if energy is not None:
        importance = ImportanceSampler(energy, sample.k, sample.window, sample.energy_temp, sample.is_target,
                                       sample.fills)
    return MaskedDiffusionSampler(denoiser, schedule, mask_id, sample.steps, step, proposal, importance,
                                  cached=spec.cached, static=sample.static_shapes or sample.cuda_graphs)


def model_denoiser(model, config: RunConfig, sample: SampleConfig):
    """(denoiser function, schedule) of an MDLM network under ``sample``'s precision (compiled if asked, replayed
    from CUDA graphs if asked: ``sampling.graphs``)."""
    schedule = schedule_for(config)
    network = torch.compile(model) if sample.compile else model
    denoiser = make_denoiser_fn(network, config.model.mask_id, sample.precision, schedule)
    return (ShapeGraphs(denoiser) if sample.cuda_graphs else denoiser), schedule


def generate(model, config: RunConfig, sample: SampleConfig, energy=None,
             progress: Callable[[int], None] | None = None, batches: range | None = None, tokenizer=None,
             denoiser=None, device: torch.device | str | None = None) -> tuple[list[str], SampleResult]:
    """Sample ``sample.num`` sequences in batches of ``sample.batch_size``; returns texts and the summed costs.

    Batch b (samples b * batch_size ...) uses a generator seeded by ``batch_seed(sample.seed, b)``, so
    ``batches`` (default: all) can split the work across processes: the union of the shards equals one run.
    ``progress(1)`` is called after every step of every batch. ``tokenizer`` (default: the char alphabet)
    encodes the prompt / infill and decodes the samples (see ``decode_sample``). ``denoiser``: a denoiser function
    to use instead of ``model`` (e.g. a known law's exact posterior; ``model`` may then be None), and ``device``
    where the loop then runs (default: the denoiser's ``device`` attribute, else the CPU).
    """
    if denoiser is None:
        denoiser, schedule = model_denoiser(model, config, sample)
        device = next(model.parameters()).device
    else:
        schedule = schedule_for(config)
        device = torch.device(device if device is not None else getattr(denoiser, "device", "cpu"))
    length = sample.length or config.model.seq_len
    sampler = build_sampler(denoiser, schedule, config.model.mask_id, sample, energy)
    template, _ = build_template(sample.num, length, sample.prompt, sample.infill, tokenizer, config.model.mask_id)
    texts, results = [], []
    batches = batches if batches is not None else range((sample.num + sample.batch_size - 1) // sample.batch_size)
    for batch_index in batches:
        start = batch_index * sample.batch_size
        generator = torch.Generator(device=device).manual_seed(batch_seed(sample.seed, batch_index))
        result = sampler.sample(template[start:start + sample.batch_size].to(device), generator,
                                progress=None if progress is None else (lambda _: progress(1)))
        results.append(result)
        texts.extend(decode_sample(row, tokenizer) for row in result.tokens.cpu())
    return texts, merge_results(results, template[:0])


def merge_results(results: list[SampleResult], empty: torch.Tensor) -> SampleResult:
    """Batches' results as one: tokens concatenated, costs summed (``nfe_rows`` row-weighted, ``iterations`` the
    largest batch's)."""
    if not results:  # an empty shard (more processes than batches)
        return SampleResult(empty, 0, 0.0, 0.0)
    tokens = torch.cat([r.tokens for r in results])
    return SampleResult(tokens, sum(r.nfe for r in results),
                        sum(r.nfe_rows * r.tokens.shape[0] for r in results) / tokens.shape[0],
                        sum(r.seconds for r in results), max(r.iterations for r in results),
                        sum(r.energy_calls for r in results), sum(r.energy_rows for r in results))


def merge_sample_stats(parts: list[tuple[int, dict]]) -> dict:
    """Stats of the processes that sampled consecutive shards, as one run's: ``parts`` holds (rows, stats) per
    process in rank order. Counts (``nfe``, energy calls, ``seconds``) are summed -- the work done, so they
    equal a one-process run's (seconds: compute time, not wall clock); ``nfe_per_sequence`` is the row-weighted
    mean, ``steps_run`` the largest; other values (the prompt, flags: the same everywhere) are rank 0's. One process: ``stats`` unchanged."""
    if len(parts) == 1:
        return dict(parts[0][1])
    rows = sum(n for n, _ in parts)
    merged: dict = {}
    for n, stats in parts:
        for key, value in stats.items():
            if key == "nfe_per_sequence":
                merged[key] = merged.get(key, 0.0) + (value * n / rows if rows else 0.0)
            elif key == "steps_run":  # the processes ran side by side: the longest one's
                merged[key] = max(merged.get(key, 0), value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    return merged
