"""High-level generation used by the CLI and the benchmarks: templates, denoiser wrapper, one call."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from edlm.errors import EdlmError
from edlm.data import ALPHABET, MASK_ID, decode, normalise
from edlm.diffusion.schedule import make_schedule
from edlm.diffusion.subs import subs_log_probs
from edlm.device import autocast_for
from edlm.sampling.importance import ImportanceProposal
from edlm.sampling.mdlm import FactorizedProposal, MaskedDiffusionSampler, SampleResult

INFILL_BLANK = "_"


class PromptError(EdlmError, ValueError):
    """A prompt or infill template that cannot be used; the message names the flag."""


def make_denoiser_fn(model: torch.nn.Module, mask_id: int, precision: str = "fp32"):
    """Wrap a denoiser network as x_t (B, L) -> SUBS log-probs (B, L, V + 1) float32."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def denoise(x_t: torch.Tensor) -> torch.Tensor:
        with autocast_for(device, precision):
            logits = model(x_t.to(device))
        return subs_log_probs(logits, x_t.to(device), mask_id)

    return denoise


def build_template(num: int, length: int, prompt: str | None = None, infill: str | None = None
                   ) -> tuple[torch.Tensor, list[str]]:
    """x_T (num, length): [MASK] everywhere except prompt/infill characters, which stay fixed.

    ``prompt`` is a prefix; ``infill`` is a template where ``_`` marks the blanks (characters after the
    template's end are blanks too). Characters outside the 27-symbol alphabet are normalised the same way as
    the corpus (lowercase, digits spelled out, others -> space); the returned notes say when that happened.
    """
    notes: list[str] = []
    template = torch.full((length,), MASK_ID, dtype=torch.long)
    for flag, text in (("--prompt", prompt), ("--infill", infill)):
        if text is None:
            continue
        if flag == "--prompt":
            fixed = normalise(text) if text.strip() else ""
            if fixed != text:
                notes.append(f"{flag}: normalised to {fixed!r} (the model knows only a-z and space)")
            positions = list(enumerate(fixed))
        else:
            pieces = [normalise(part) if part.strip() else part.replace("\n", " ") for part in
                      text.split(INFILL_BLANK)]
            joined = INFILL_BLANK.join(pieces)
            if joined != text:
                notes.append(f"{flag}: normalised to {joined!r}")
            positions = [(i, c) for i, c in enumerate(joined) if c != INFILL_BLANK]
            fixed = joined
        if len(fixed) > length:
            raise PromptError(f"{flag} is {len(fixed)} characters after normalisation, longer than the "
                              f"sequence length {length}")
        for index, char in positions:
            if char not in ALPHABET:
                raise PromptError(f"{flag}: character {char!r} at position {index} is not in the vocabulary")
            template[index] = ALPHABET.index(char)
    return template.unsqueeze(0).repeat(num, 1), notes


@dataclass
class GenerationSpec:
    num: int = 4
    steps: int = 256
    length: int | None = None
    sampler: str = "cached"
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    prompt: str | None = None
    infill: str | None = None
    num_candidates: int = 2
    window: float = 0.2
    energy_temperature: float = 1.0
    batch_size: int = 16
    precision: str = "fp32"


def generate(model, config, spec: GenerationSpec, energy=None, progress: bool = False
             ) -> tuple[list[str], SampleResult]:
    """Sample ``spec.num`` sequences (in batches of ``spec.batch_size``); returns texts and merged stats."""
    device = next(model.parameters()).device
    length = spec.length or config.model.seq_len
    mask_id = config.model.mask_id
    schedule = make_schedule(eps=config.train.schedule_eps)
    denoiser = make_denoiser_fn(model, mask_id, spec.precision)
    base = FactorizedProposal(mask_id, spec.temperature, spec.top_p)
    proposal = base if energy is None else ImportanceProposal(base, energy, spec.num_candidates, spec.window,
                                                             spec.energy_temperature)
    sampler = MaskedDiffusionSampler(denoiser, schedule, mask_id, spec.steps, proposal,
                                     cached=spec.sampler == "cached")
    template, _ = build_template(spec.num, length, spec.prompt, spec.infill)
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    texts, results = [], []
    bar = tqdm(total=spec.steps * ((spec.num + spec.batch_size - 1) // spec.batch_size), desc="sample",
               disable=not progress, leave=False)
    for start in range(0, spec.num, spec.batch_size):
        result = sampler.sample(template[start:start + spec.batch_size].to(device), generator,
                                progress=lambda _: bar.update(1))
        results.append(result)
        texts.extend(decode(row) for row in result.tokens.cpu())
    bar.close()
    tokens = torch.cat([r.tokens for r in results])
    merged = SampleResult(tokens, sum(r.nfe for r in results),
                          sum(r.nfe_rows * r.tokens.shape[0] for r in results) / tokens.shape[0],
                          sum(r.seconds for r in results), dict(proposal.stats()))
    return texts, merged
