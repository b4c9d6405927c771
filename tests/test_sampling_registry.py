"""Samplers by name (``sampling/registry.py``) and ``SampleConfig`` (``sampling/config.py``): the registry, the
config and the ``--sampler`` choices agree; a sampler written from the registry's docstring alone runs through the
CLI; every knob is documented and checked; ``generate`` runs every registered sampler."""

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch
from toys import MASK, save_random_run, tiny_denoiser_run

from edlm.cli import build_parser, main
from edlm.config import ConfigError
from edlm.data import ALPHABET
from edlm.energy.base import ZeroEnergy
from edlm.sampling import SAMPLERS, SampleConfig, SamplerSpec, register
from edlm.sampling.base import GridStep, Plan
from edlm.sampling.generate import build_template, generate
from edlm.sampling.registry import unregister


def sample_parser():
    parser = build_parser()
    return next(action for action in parser._actions if action.dest == "command").choices["sample"]


def test_registry_config_and_flags_agree():
    sampler_flag = next(a for a in sample_parser()._actions if a.dest == "sampler")
    assert list(sampler_flag.choices) == list(SAMPLERS)
    assert {"ancestral", "cached", "first-hitting", "confidence", "remdm", "semi-ar", "threshold"} <= set(SAMPLERS)
    flags = {a.dest for a in sample_parser()._actions}
    for spec in SAMPLERS.values():
        assert spec.name in sampler_flag.help
        assert {f.name for f in dataclasses.fields(spec.options)} <= flags  # every option has its flag
        assert isinstance(SampleConfig(sampler=spec.name).options_for(), spec.options)
    with pytest.raises(ConfigError, match="^sampler 'nope': not available"):
        SampleConfig(sampler="nope")


def test_sample_config_documents_and_checks_every_knob():
    common = dataclasses.fields(SampleConfig)
    assert all(f.metadata.get("help") for f in common if f.name != "options")
    assert {f.name: f.default for f in common if f.name in ("steps", "k", "window", "is_target")} == \
        {"steps": 256, "k": 2, "window": 0.2, "is_target": "reveal"}  # reveal: measured better (README)
    for spec in SAMPLERS.values():
        assert all(f.metadata.get("help") for f in dataclasses.fields(spec.options)), spec.name
    SampleConfig().validate()
    for knobs, flag in (({"window": 1.5}, "--window"), ({"top_p": 0.0}, "--top-p"), ({"k": 0}, "--k"),
                        ({"fills": 0}, "--fills"), ({"is_target": "all"}, "--is-target"),
                        ({"order_temp": -1.0}, "--order-temp"), ({"eta": 1.5}, "--eta"),
                        ({"remask_on": 0.01}, "--remask-off and remask_on"), ({"block": 0}, "--block"),
                        ({"threshold": 1.1}, "--threshold"), ({"remask_alpha_on": 1.0}, "--remask-alpha-on"),
                        ({"inner": "semi-ar"}, "--inner"), ({"inner": "cached"}, "--inner")):
        with pytest.raises(ConfigError) as caught:  # the library names the field; the command line its flag
            SampleConfig.of(**knobs)
        assert caught.value.flag_message().startswith(flag), (knobs, caught.value.flag_message())
        assert str(caught.value).startswith(flag[2:].replace("-", "_")), (knobs, str(caught.value))
    with pytest.raises(ConfigError, match="unknown sampling knob 'wobble'"):
        SampleConfig.of(wobble=1)


def test_knobs_of_a_config_name_the_chosen_samplers_options():
    sample = SampleConfig.of(sampler="remdm", eta=0.1, steps=64)
    assert sample.options_for().eta == 0.1 and sample.steps == 64
    assert sample.knobs()["eta"] == 0.1 and "order" not in sample.knobs()


# ------------------------------------------------------------------ a new sampler, from the docstring alone

@dataclass(frozen=True)
class WiggleOptions:
    wiggle: float = field(default=0.5, metadata={"help": "how much to wiggle, in [0, 1]"})

    def __post_init__(self):
        if not 0.0 <= self.wiggle <= 1.0:
            raise ConfigError("--wiggle must be in [0, 1]")


@dataclass
class WiggleStep(GridStep):
    """Reveals each masked position with probability ``wiggle`` (whatever the clock), so call counts are random."""

    mask_id: int
    wiggle: float

    def plan(self, log_probs, x_t, t, s, generator):
        uniforms = torch.rand(x_t.shape, generator=generator, dtype=torch.float64, device=x_t.device)
        return Plan((x_t == self.mask_id) & (uniforms < self.wiggle))


@pytest.fixture
def wiggle():
    register(SamplerSpec("wiggle", "reveals like ancestral, wiggling", WiggleOptions,
                         build=lambda schedule, mask_id, options, sample: WiggleStep(mask_id, options.wiggle)))
    yield
    unregister("wiggle")


def test_a_sampler_written_from_the_registry_docstring_runs_through_the_cli(wiggle, tmp_path, capsys):
    run = save_random_run(tmp_path / "run", "mdlm", seed=0)
    assert main(["sample", "--run", str(run), "--sampler", "wiggle", "--wiggle", "1.0", "--num", "2", "--steps",
                 "8", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["nfe"] == 1 and record["steps_run"] == 1  # wiggle = 1 reveals everything at once
    assert len(record["samples"]) == 2 and all(len(text) == 32 for text in record["samples"])
    assert main(["sample", "--run", str(run), "--sampler", "wiggle", "--wiggle", "2"]) == 2
    assert "--wiggle must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already"):
        register(SamplerSpec("wiggle", "again", WiggleOptions, build=None))
    register(SamplerSpec("steps-sampler", "a knob named like a common one", SampleConfigLike, build=None))
    try:
        with pytest.raises(ValueError, match="'steps-sampler': option 'steps' clashes"):
            build_parser()
    finally:
        unregister("steps-sampler")


@dataclass(frozen=True)
class SampleConfigLike:
    steps: int = field(default=1, metadata={"help": "clashes with SampleConfig.steps"})


# ------------------------------------------------------------------ generate (the CLI's path)

@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_generate_runs_every_registered_sampler_with_prompt_infill_and_energy(sampler):
    config, model = tiny_denoiser_run()
    for prompt, infill, energy in (("to be ", None, None), (None, "ab _ cd", ZeroEnergy())):
        sample = SampleConfig(num=3, steps=6, batch_size=2, sampler=sampler, prompt=prompt, infill=infill)
        texts, result = generate(model, config, sample, energy)
        plain, _ = generate(model, config, sample)
        assert texts == plain  # the zero energy changes nothing
        template = build_template(1, 8, prompt, infill)[0][0].tolist()
        for text in texts:
            assert len(text) == 8
            assert all(text[i] == ALPHABET[tok] for i, tok in enumerate(template) if tok != MASK)


@pytest.mark.parametrize("inner", ["ancestral", "first-hitting", "confidence", "remdm", "threshold"])
def test_generate_semi_ar_with_every_inner_sampler(inner):
    config, model = tiny_denoiser_run()
    for prompt, infill in (("to be ", None), (None, "ab _ cd")):
        sample = SampleConfig.of(num=3, steps=6, batch_size=2, sampler="semi-ar", inner=inner, block=3, prompt=prompt,
                                 infill=infill, remask="rescale", eta=0.5)
        texts, _ = generate(model, config, sample, ZeroEnergy())
        assert texts == generate(model, config, sample)[0]
        template = build_template(1, 8, prompt, infill)[0][0].tolist()
        for text in texts:
            assert len(text) == 8 and all(text[i] == ALPHABET[tok] for i, tok in enumerate(template) if tok != MASK)
