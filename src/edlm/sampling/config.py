"""``SampleConfig``: every knob of ``edlm sample``, assembled from the common knobs below and the options of each
registered sampler (``registry``), and the CLI flags generated from both.

One default per knob, written once: a common knob in its field here, a sampler's knob in its options dataclass.
The flag is the field name with '_' -> '-', its help the field's ``metadata["help"]``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from edlm.config import ConfigError, raise_first_error
from edlm.flags import add_config_flags, config_from_args
from edlm.sampling.registry import SAMPLERS, option_names, owner_of


def _sampler_help() -> str:
    own = [spec.name for spec in SAMPLERS.values() if spec.own_clock]
    return (" | ".join(f"{spec.name} ({spec.summary})" for spec in SAMPLERS.values())
            + (f"; {', '.join(own)} choose their own number of network calls" if own else ""))


@dataclass(frozen=True)
class SampleConfig:
    """Common knobs; ``options`` maps a sampler name to its options (missing: that sampler's defaults)."""

    num: int = field(default=4, metadata={"help": "number of sequences to draw"})
    steps: int = field(default=256, metadata={
        "help": "reverse steps T (network calls at most T, fewer with the cache). first-hitting and threshold "
                "choose their own number of calls (at most L) and ignore it; semi-ar splits it over the blocks "
                "it generates. The record's steps_run says what ran"})
    length: int | None = field(default=None, metadata={
        "help": "sequence length (default: the model's seq_len)"})
    sampler: str = field(default="cached", metadata={"help": "the sampler (see the list of samplers)"})
    seed: int = field(default=0, metadata={
        "help": "random seed; sample i depends only on (seed, i // batch-size), so batches can be sharded"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the x0 draws (> 0)"})
    top_p: float = field(default=1.0, metadata={
        "help": "nucleus filter of the x0 draws, in (0, 1]: keeps the tokens whose cumulative probability is "
                "<= top-p, and the most likely one (ReMDM's rule)"})
    prompt: str | None = field(default=None, metadata={
        "help": "fixed prefix (char models: normalised to the alphabet; subword models: encoded by the tokenizer)"})
    infill: str | None = field(default=None, metadata={
        "help": "char models: template with '_' for each blank character, every other character stays at its "
                "position; subword models: text with [blank:N] for N tokens to fill"})
    energy: str | None = field(default=None, metadata={
        "help": "importance-sampling energy: zero | ar:RUN_DIR (an edlm AR run) | hf:DIR_OR_NAME (a Hugging Face "
                "causal LM sharing the tokenizer: a local folder or a Hub name) | nce:RUN_DIR (a trained energy "
                "network) | law:DIR (a known law's exact log-probability); default none: plain MDLM"})
    energy_mode: Literal["coar", "full"] = field(default="coar", metadata={
        "help": "AR energy: coar (score masked positions only, the paper's) or full"})
    k: int = field(default=2, metadata={
        "help": "importance-sampling candidates per step (the paper's setting: 2); 1 = plain MDLM"})
    window: float = field(default=0.2, metadata={
        "help": "importance sampling runs for t >= 1 - window (the paper's setting: 0.2); 0 = never"})
    energy_temp: float = field(default=1.0, metadata={"help": "resampling temperature: softmax(-E / energy-temp)"})
    is_target: Literal["row", "reveal", "reveal-cond", "reveal-exact"] = field(default="reveal", metadata={
        "help": "what the importance weights look at: reveal (candidates differ only on the positions the step "
                "reveals, the other masked positions take --fills shared draws: at one fill the paper's cost, and "
                "measured better than row on a known law and on Shakespeare, README), row (the paper's: every "
                "masked position of whole candidates), reveal-cond (fills drawn for each candidate from the "
                "denoiser given it: one more denoiser call on k rows), reveal-exact (the exact marginal of the "
                "revealed tokens: a law: energy only). Steps whose reveal set depends on x0 always weigh whole rows"})
    fills: int = field(default=1, metadata={
        "help": "--is-target reveal / reveal-cond: draws M of the masked positions a step does not reveal (energy "
                "rows per step: k x M per row that reveals something; more fills helped little, README)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per network call"})
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={
        "help": "network precision (sampling itself is always float64)"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the MDLM denoiser (AR sampling ignores it): fewer kernel launches per step on a "
                "GPU, where a small model's step is launch-bound; the first call pays the compile, and the cached "
                "sampler's changing row counts one more (on a CPU compiling takes minutes)"})
    static_shapes: bool = field(default=False, metadata={
        "help": "capture-friendly sampling loop: one host read per step and a few fixed batch shapes for the "
                "denoiser (the cache recomputes the changed rows padded to 1, 2, 3, 4, 6, 8, 12, ... rows); the same "
                "samples as the default loop (bit for bit on CPU fp32)"})
    cuda_graphs: bool = field(default=False, metadata={
        "help": "replay the denoiser from one CUDA graph per batch shape (implies --static-shapes; CUDA only): "
                "far fewer kernel launches per step for small models; random draws and the energy stay outside the "
                "graphs, so the random stream is the default loop's"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"flag": False})

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Range checks, the Literal fields' choices and the sampler's name and options, once, at the boundary (run
        on construction); ConfigError names the flag."""
        raise_first_error(self, [
            (self.sampler in SAMPLERS, "sampler", f"{self.sampler!r}: not available (valid: {', '.join(SAMPLERS)})"),
            (self.num >= 1, "num", "must be >= 1"),
            (self.steps >= 1, "steps", "must be >= 1"),
            (self.length is None or self.length >= 1, "length", "must be >= 1"),
            (self.temperature > 0, "temperature", "must be > 0"),
            (0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]"),
            (self.k >= 1, "k", "must be >= 1"),
            (0.0 <= self.window <= 1.0, "window", "must be in [0, 1]"),
            (self.energy_temp > 0, "energy_temp", "must be > 0"),
            (self.fills >= 1, "fills", "must be >= 1"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
        ])
        for name, options in self.options.items():
            if name not in SAMPLERS or not isinstance(options, SAMPLERS[name].options):
                raise ConfigError(f"options for {name!r}: expected a {name} options object "
                                  f"({', '.join(SAMPLERS)} are registered)")

    def options_for(self, name: str | None = None):
        """The options of sampler ``name`` (default: the chosen sampler): as given, else its defaults."""
        name = name or self.sampler
        return self.options.get(name) or SAMPLERS[name].options()

    @classmethod
    def of(cls, **knobs) -> "SampleConfig":
        """Build from flat knobs, common or a sampler's: ``SampleConfig.of(sampler="remdm", eta=0.1, steps=64)``."""
        common = {k: v for k, v in knobs.items() if k in common_field_names()}
        per_sampler: dict[str, dict[str, Any]] = {}
        for name, value in knobs.items():
            if name in common:
                continue
            spec = owner_of(name)
            if spec is None:
                raise ConfigError(f"unknown sampling knob {name!r}")
            per_sampler.setdefault(spec.name, {})[name] = value
        options = {name: SAMPLERS[name].options(**values) for name, values in per_sampler.items()}
        return cls(**common, options={**common.pop("options", {}), **options})

    def knobs(self) -> dict[str, Any]:
        """Every knob as a flat dict: the common ones and the chosen sampler's options (what a record stores)."""
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**flat, **dataclasses.asdict(self.options_for())}


def common_field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(SampleConfig)}


def add_sample_flags(parser: argparse.ArgumentParser) -> None:
    """``SampleConfig``'s flags, then one group of flags per registered sampler (its options)."""
    add_config_flags(parser, SampleConfig)
    sampler = next(a for a in parser._actions if a.dest == "sampler")
    sampler.choices, sampler.help = list(SAMPLERS), _sampler_help()
    for spec in SAMPLERS.values():
        clash = set(option_names(spec)) & common_field_names()
        if clash:
            raise ValueError(f"sampler {spec.name!r}: option {sorted(clash)[0]!r} clashes with a SampleConfig field")
        if dataclasses.fields(spec.options):
            group = parser.add_argument_group(f"{spec.name} options ({spec.summary})")
            add_config_flags(group, spec.options)


def sample_config_from_args(args: argparse.Namespace) -> SampleConfig:
    """The ``SampleConfig`` of parsed flags (every sampler's options, so that semi-ar's inner sampler gets its own)."""
    sample = config_from_args(SampleConfig, args)
    options = {name: config_from_args(spec.options, args) for name, spec in SAMPLERS.items()
               if dataclasses.fields(spec.options)}
    return dataclasses.replace(sample, options=options)
