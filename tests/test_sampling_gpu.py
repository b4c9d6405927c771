"""Every registered sampler on a CUDA device (fp32 and bf16): prompt/infill positions kept, nothing left masked,
shards reproduce one run; and cached vs ancestral agree in law where they need not agree bit for bit."""

import pytest
import torch
from toys import tiny_denoiser_run

from edlm.sampling import SampleConfig
from edlm.data import ALPHABET
from edlm.sampling import SAMPLERS
from edlm.sampling.generate import build_template, generate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_on_cuda_keeps_fixed_positions(sampler, precision):
    config, model = tiny_denoiser_run()
    model = model.cuda()
    for prompt, infill in (("to be ", None), (None, "ab _ cd")):
        sample = SampleConfig(num=6, steps=8, batch_size=4, sampler=sampler, prompt=prompt, infill=infill,
                              precision=precision)
        texts, result = generate(model, config, sample)
        template = build_template(1, 8, prompt, infill)[0][0]
        for text in texts:
            assert len(text) == 8 and all(c in ALPHABET for c in text)
            for index, token in enumerate(template.tolist()):
                if token != config.model.mask_id:
                    assert text[index] == ALPHABET[token]
        shard, _ = generate(model, config, sample, batches=range(1, 2))
        assert shard == texts[4:6]


def test_cached_and_ancestral_agree_in_law_on_cuda_bf16():
    """Per-position token frequencies of 4000 samples each (different seeds): within 5 standard errors."""
    config, model = tiny_denoiser_run()
    model = model.cuda()
    counts = []
    for sampler, seed in (("ancestral", 1), ("cached", 2)):
        sample = SampleConfig(num=4000, steps=16, batch_size=4000, sampler=sampler, seed=seed, precision="bf16")
        _, result = generate(model, config, sample)
        counts.append(torch.nn.functional.one_hot(result.tokens.cpu(), 28).double().mean(0))  # (L, V + 1)
    p = (counts[0] + counts[1]) / 2
    stderr = (2 * p * (1 - p) / 4000).sqrt().clamp(min=1e-3)
    assert ((counts[0] - counts[1]).abs() / stderr).max() < 5


def table_denoiser(p_star: torch.Tensor, V: int, L: int, device: str):
    """The toy's exact conditional denoiser as a lookup table on the device, indexed by x_t: no host data inside a
    call, so it can be captured in a CUDA graph."""
    import itertools

    from toys import conditional_denoiser

    states = torch.tensor(list(itertools.product(range(V + 1), repeat=L)))  # ((V + 1)^L, L), base V + 1
    table = conditional_denoiser(p_star, V, L)(states).to(device)  # ((V + 1)^L, L, V + 1)
    powers = ((V + 1) ** torch.arange(L - 1, -1, -1)).to(device)  # (L,)
    return lambda x_t: table[(x_t * powers).sum(-1)]


@pytest.mark.parametrize("graphs", [False, True])
def test_static_loop_with_cuda_graphs_samples_the_exact_law(graphs):
    """Chi-square against the exact T-step law (enumeration), as on the CPU for cached vs ancestral: the static loop
    (and its captured denoiser) on CUDA, where it need not equal the eager loop bit for bit."""
    from toys import SCHEDULE, conditional_denoiser, make_step, random_joint, sequence_index

    from edlm.likelihood.estimators import make_step_plan
    from edlm.likelihood.exact import exact_sampler_distribution
    from edlm.sampling.graphs import ShapeGraphs
    from edlm.sampling.loop import MaskedDiffusionSampler

    V, L, T, draws = 3, 2, 3, 40_000
    p_star = random_joint(V, L, seed=6)
    exact = exact_sampler_distribution(V, L, conditional_denoiser(p_star, V, L), None,
                                       make_step_plan(SCHEDULE, T, t_min=0.0))
    denoiser = table_denoiser(p_star, V, L, "cuda")
    sampler = MaskedDiffusionSampler(ShapeGraphs(denoiser) if graphs else denoiser, SCHEDULE, V, T,
                                     make_step("ancestral", mask_id=V), cached=True, t_min=0.0, static=True)
    tokens = sampler.sample(torch.full((draws, L), V, device="cuda"),
                            torch.Generator(device="cuda").manual_seed(13)).tokens.cpu()
    empirical = torch.bincount(sequence_index(tokens, V), minlength=V ** L).double() / draws
    chi_square = float(((empirical - exact) ** 2 / exact).sum() * draws)
    assert chi_square < 26.1, chi_square  # the 0.999 quantile of chi-square with V^L - 1 = 8 df


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_captured_denoiser_replays_the_eager_network_on_new_inputs(precision):
    from edlm.models.denoiser import make_denoiser_fn
    from edlm.sampling.graphs import ShapeGraphs

    config, model = tiny_denoiser_run()
    eager = make_denoiser_fn(model.cuda(), config.model.mask_id, precision)
    graphed = ShapeGraphs(eager)
    generator = torch.Generator(device="cuda").manual_seed(0)
    for rows in (4, 3, 4, 3, 1):
        x_t = torch.randint(0, config.model.mask_id + 1, (rows, 8), device="cuda", generator=generator)
        torch.testing.assert_close(graphed(x_t), eager(x_t))
    assert graphed.captured == [((4, 8),), ((3, 8),), ((1, 8),)]


def test_generate_with_cuda_graphs_on_cuda():
    config, model = tiny_denoiser_run()
    model = model.cuda()
    sample = SampleConfig(num=6, steps=16, batch_size=4, sampler="cached", prompt="to ", cuda_graphs=True,
                          precision="bf16")
    texts, result = generate(model, config, sample)
    assert len(texts) == 6 and all(text.startswith("to ") and len(text) == 8 for text in texts)
    shard, _ = generate(model, config, sample, batches=range(1, 2))
    assert shard == texts[4:6]
