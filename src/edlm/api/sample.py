"""Sampling through the public API: a sampler configuration by name, and samples with their costs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch

from edlm.api.model import ApiError, Model, load_energy
from edlm.sampling.config import SampleConfig


def sampler_config(sampler: str = "cached", **knobs) -> SampleConfig:
    """The ``SampleConfig`` of sampler ``sampler`` (``edlm.sampling.SAMPLERS``: ``cached``, ``ancestral``,
    ``remdm``, ...) with ``knobs``: common ones (``num``, ``steps``, ``seed``, ``temperature``, ``k``, ``window``,
    ...) and the sampler's own options (``eta`` for remdm, ...), each default as ``edlm sample`` has it.
    ConfigError for an unknown knob or a value out of range."""
    return SampleConfig.of(sampler=sampler, **knobs)


@dataclass(frozen=True)
class Samples:
    """What ``sample`` drew: ``texts`` (N strings, whole rows decoded), ``tokens`` (N, L) int64 CPU tensor,
    ``costs`` (``nfe`` batched network calls, ``nfe_per_sequence``, ``steps_run``, ``energy_calls``,
    ``energy_rows``, ``seconds`` of compute), ``notes`` (e.g. how the prompt was normalised), ``details`` (AR:
    the normalised ``prompt`` and ``cached``), and where they came from (``config``: the sampler, with the energy's
    spec when one was named; ``source``, ``model_kind``, ``tokenizer``: the model's)."""

    texts: list[str]
    tokens: torch.Tensor
    costs: dict[str, float]
    config: SampleConfig
    source: str
    model_kind: str
    tokenizer: str
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    def record(self) -> dict:
        """The samples as ``edlm sample --out`` writes them (``edlm.evaluation.samples_file``), without timings:
        texts, token ids, run, model, length, tokenizer and the settings."""
        return {"samples": list(self.texts), "run": self.source, "model": self.model_kind, "length": self.length,
                "tokenizer": self.tokenizer, "token_ids": self.tokens.tolist(),
                "settings": self.config.knobs()}


def sample(model: Model, config: SampleConfig | None = None, energy=None, *, rows: range | None = None,
           progress: Callable[[int], None] | None = None, **knobs) -> Samples:
    """Draw ``config.num`` samples (``config``: a ``SampleConfig``, e.g. ``sampler_config``; or the knobs
    themselves: ``sample(model, steps=64, num=8)``) from an MDLM run, a known law (its exact denoiser through the
    same loop) or an AR run.

    ``energy``: an energy object (``load_energy``) or a spec (``ar:RUN_DIR``, ...); None: ``config.energy``
    (built at ``config.energy_mode`` and ``config.precision``), else plain sampling. ``rows``: the samples to
    draw, a contiguous block of whole batches of ``config.batch_size`` (``edlm.parallel.shard``; default all):
    every batch is seeded from (seed, batch index) only, so blocks drawn apart equal the same rows of one call.
    ``progress(1)`` after every step of every batch (diffusion only). Prints nothing.
    """
    if config is not None and knobs:
        raise ApiError(f"pass a SampleConfig or knobs, not both (got {', '.join(knobs)})", "config")
    config = config if config is not None else SampleConfig.of(**knobs)
    length = config.length or model.seq_len
    if length > model.seq_len:
        raise ApiError(f"{length}: longer than the model's sequence length {model.seq_len}", "length")
    config = dataclasses.replace(config, length=length)
    from edlm.data.tokenizers import build_template

    _, notes = build_template(1, length, config.prompt, config.infill, model.tokenizer, model.config.model.mask_id)
    if isinstance(energy, str):  # a spec: as if given in the config
        config, energy = dataclasses.replace(config, energy=energy), None
    elif energy is not None:  # an object: the config names no other energy
        config = dataclasses.replace(config, energy=None)
    if model.kind == "ar":
        if energy is not None or config.energy or config.infill:
            raise ApiError(f"{model.source} holds an AR model; energies and infill need a diffusion model", "run")
        texts, tokens, costs, details = _sample_ar(model, config, rows)
    elif model.kind in ("mdlm", "law"):
        if energy is None and config.energy:
            energy = load_energy(config.energy, model, config.energy_mode, config.precision)
        texts, tokens, costs = _sample_diffusion(model, config, energy, rows, progress)
        details = {}
    else:
        raise ApiError(f"{model.source}: cannot sample from an {model.kind!r} model; use it as the energy "
                       f"nce:{model.source} of a denoiser", "run")
    return Samples(texts, tokens, costs, config, model.source, model.kind, model.tokenizer.name, notes, details)


def _sample_diffusion(model: Model, config: SampleConfig, energy, rows: range | None,
                      progress: Callable[[int], None] | None) -> tuple[list[str], torch.Tensor, dict]:
    from edlm.parallel import batches_of
    from edlm.sampling.generate import generate

    denoiser = model.denoiser(config.precision, config.compile, config.cuda_graphs)
    batches = None if rows is None else batches_of(rows, config.batch_size)
    texts, result = generate(model.network, model.config, config, energy, progress=progress, batches=batches,
                             tokenizer=model.tokenizer, denoiser=denoiser, device=model.device)
    return texts, result.tokens.cpu(), {**result.costs(), "seconds": result.seconds}


def _sample_ar(model: Model, config: SampleConfig, rows: range | None) -> tuple[list[str], torch.Tensor, dict, dict]:
    from edlm.sampling.ar import generate_ar

    texts, stats = generate_ar(model.network, model.config, config.num, config.length, config.seed,
                               config.temperature, config.top_p, config.prompt, config.batch_size, rows=rows,
                               precision=config.precision, tokenizer=model.tokenizer)
    tokens = torch.tensor(stats["token_ids"], dtype=torch.long).view(len(texts), config.length)  # (N, L)
    costs = {"nfe": stats["nfe"], "nfe_per_sequence": stats["nfe_per_sequence"],
             "steps_run": stats["nfe_per_sequence"], "energy_calls": 0, "energy_rows": 0,
             "seconds": stats["seconds"]}
    return texts, tokens, costs, {"prompt": stats["prompt"], "cached": stats["cached"]}
