"""``sampling/generate.py``: batches seeded by index (shards reproduce one run), the compile lever, prompts and
infill templates, the record of what ran."""

from toys import MASK, tiny_denoiser_run

from edlm.sampling import SampleConfig
from edlm.sampling.generate import build_template, generate


def test_batches_are_seeded_by_index_so_shards_reproduce_one_run():
    config, model = tiny_denoiser_run()
    sample = SampleConfig(num=6, steps=8, batch_size=2, seed=5)
    full, result = generate(model, config, sample)
    shard, _ = generate(model, config, sample, batches=range(2, 3))
    assert shard == full[4:6]
    first, _ = generate(model, config, sample, batches=range(0, 1))
    assert first == full[0:2] and full[0:2] != full[4:6]
    assert 1 <= result.iterations <= 8 and result.nfe >= result.iterations


def test_compile_wraps_the_denoiser_once_and_changes_nothing_else(monkeypatch):
    """--compile hands the network to torch.compile (replaced here by a recording identity: compiling on a CPU
    takes minutes); with the identity the samples equal the uncompiled ones bit for bit."""
    from edlm.sampling import generate as generate_module

    config, model = tiny_denoiser_run()
    compiled = []
    monkeypatch.setattr(generate_module.torch, "compile", lambda network: compiled.append(network) or network)
    plain, _ = generate_module.generate(model, config, SampleConfig(num=3, steps=8, seed=5))
    assert compiled == []
    again, _ = generate_module.generate(model, config, SampleConfig(num=3, steps=8, seed=5, compile=True))
    assert compiled == [model] and again == plain


def test_prompt_keeps_its_trailing_space_and_infill_its_positions():
    """Defect 9: "to be or not " lost its trailing space; "the cat _ on" became "the cat_on"."""
    from edlm.data import ALPHABET

    template, notes = build_template(1, 20, prompt="to be or not ")
    assert notes == [] and template[0, 12] == ALPHABET.index(" ") and template[0, 13] == MASK
    template, notes = build_template(1, 20, infill="the cat _ on")
    assert notes == []
    expected = [MASK if c == "_" else ALPHABET.index(c) for c in "the cat _ on"] + [MASK] * 8
    assert template[0].tolist() == expected
    template, notes = build_template(1, 20, infill="The Cat, _ on")  # normalised piece by piece
    assert [ALPHABET[i] if i != MASK else "_" for i in template[0, :11].tolist()] == list("the cat _ o")
    assert notes


def test_first_hitting_and_threshold_record_the_steps_they_ran():
    """Issue: `--steps 32` was recorded while first-hitting made 64 calls; the result says what ran."""
    config, model = tiny_denoiser_run()
    _, result = generate(model, config, SampleConfig(num=2, steps=3, sampler="first-hitting", seed=0))
    assert result.iterations == result.nfe == 8 and result.costs()["steps_run"] == 8  # one call per position
    _, result = generate(model, config, SampleConfig(num=2, steps=3, sampler="threshold", seed=0))
    assert result.iterations == result.nfe >= 1 and result.costs()["steps_run"] == result.iterations
