"""Samplers by name. A sampler is one file in ``sampling/samplers/`` that defines its step, a frozen options
dataclass (its knobs: defaults and help text, the CLI flags are generated from it) and registers itself:

    @dataclass(frozen=True)
    class WiggleOptions:
        wiggle: float = field(default=0.5, metadata={"help": "how much to wiggle, in [0, 1]"})

        def __post_init__(self):
            if not 0.0 <= self.wiggle <= 1.0:
                raise ConfigError("must be in [0, 1]", "wiggle")  # the command line says --wiggle

    register(SamplerSpec("wiggle", "reveals like ancestral, wiggling", WiggleOptions,
                         build=lambda schedule, mask_id, options, sample: WiggleStep(schedule, mask_id, options)))

``build(schedule, mask_id, options, sample)`` returns the step (``base.Step``); ``sample`` is the whole
``SampleConfig`` (semi-ar reads its inner sampler's options from it). Every module of ``sampling/samplers/`` is
imported by that package, so a new file there is all it takes; a sampler defined elsewhere (a test, a user's
module) calls ``register`` itself before the CLI parses its flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

SAMPLERS: dict[str, "SamplerSpec"] = {}


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    summary: str  # one line for the help of --sampler
    options: type  # frozen dataclass of the sampler's knobs (may have no fields)
    build: Callable[..., Any]  # (schedule, mask_id, options, sample) -> Step
    cached: bool = True  # run with the per-row cache (``ancestral`` is the uncached reference)
    own_clock: bool = False  # chooses its own number of network calls: --steps does not apply


def register(spec: SamplerSpec, replace: bool = False) -> SamplerSpec:
    """Add ``spec`` to ``SAMPLERS``. Its option names become flags: they must not collide with another sampler's
    (nor with ``SampleConfig``'s own fields: ``config.add_sample_flags`` checks that). ``replace`` re-registers a
    name (tests)."""
    if spec.name in SAMPLERS and not replace:
        raise ValueError(f"sampler {spec.name!r} is already registered")
    taken = {name: other.name for other in SAMPLERS.values() if other.name != spec.name
             for name in option_names(other)}
    for name in option_names(spec):
        if name in taken:
            raise ValueError(f"sampler {spec.name!r}: option {name!r} is already sampler {taken[name]!r}'s")
    SAMPLERS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    SAMPLERS.pop(name, None)


def option_names(spec: SamplerSpec) -> list[str]:
    return [f.name for f in dataclasses.fields(spec.options)]


def owner_of(option: str) -> SamplerSpec | None:
    """The registered sampler whose options include ``option``."""
    return next((spec for spec in SAMPLERS.values() if option in option_names(spec)), None)
