"""The capture-friendly sampling loop (``MaskedDiffusionSampler(static=True)``, ``--static-shapes``,
``--cuda-graphs``): the same samples as the eager loop bit for bit on CPU fp32 for every registered sampler, with
and without importance sampling; one host read per step; a few fixed batch shapes; the CUDA-graph plumbing (a
recording stub in place of the capture)."""

import pytest
import torch
from toys import MASK, SCHEDULE, OracleDenoiser, importance, make_step, pair_energy, tiny_denoiser_run

from edlm.bench.common import HostSyncCounter
from edlm.energy.base import FunctionEnergy
from edlm.sampling import SAMPLERS, SampleConfig
from edlm.sampling.generate import build_sampler, generate, model_denoiser
from edlm.sampling.graphs import GraphError, ShapeGraphs
from edlm.sampling.loop import MaskedDiffusionSampler, bucket_size
from edlm.sampling.proposal import FactorizedProposal

KNOBS = {"remdm": {"remask": "cap", "eta": 0.5}, "semi-ar": {"block": 5, "inner": "ancestral"},
         "confidence": {"order": "max-prob"}, "threshold": {"threshold": 0.5}}
VARIANTS = sorted(SAMPLERS) + ["semi-ar/threshold", "confidence/entropy", "remdm/conf"]
EXTRA = {"semi-ar/threshold": ("semi-ar", {"block": 5, "inner": "threshold"}),
         "confidence/entropy": ("confidence", {"order": "entropy"}),
         "remdm/conf": ("remdm", {"remask": "conf", "eta": 0.5})}


def variant(label: str) -> tuple[str, dict]:
    return EXTRA.get(label, (label, KNOBS.get(label, {})))


def run(label, static, is_target=None, B=7, L=20, steps=24, seed=5):
    name, knobs = variant(label)
    weighting = None if is_target is None else importance(pair_energy(0.7), 3, window=0.6, target=is_target, fills=2)
    sampler = MaskedDiffusionSampler(OracleDenoiser(L), SCHEDULE, MASK, steps, make_step(name, **knobs),
                                     FactorizedProposal(MASK), weighting, cached=SAMPLERS[name].cached, static=static)
    x_init = torch.full((B, L), MASK)
    x_init[:, :3] = torch.tensor([20, 8, 5])  # a prompt
    return sampler.sample(x_init, torch.Generator().manual_seed(seed))


def test_bucket_sizes_are_few_and_pad_by_at_most_half():
    B = 64
    sizes = {bucket_size(n, B) for n in range(B + 1)}
    assert sizes == {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}
    for n in range(1, B + 1):
        assert n <= bucket_size(n, B) <= min(B, max(2, int(1.5 * n)))
    assert bucket_size(5, 5) == 5 and bucket_size(3, 2) == 2  # never more rows than the batch


@pytest.mark.parametrize("is_target", [None, "row", "reveal", "reveal-cond"])
@pytest.mark.parametrize("label", VARIANTS)
def test_static_loop_gives_the_eager_loops_samples_bit_for_bit(label, is_target):
    """Same tokens and network calls; the static loop evaluates padding rows too (nfe_rows >= eager's).
    ("reveal-cond" keeps its list of rows that reveal something: its fills' random stream depends on it.)"""
    eager, static = run(label, False, is_target), run(label, True, is_target)
    assert torch.equal(eager.tokens, static.tokens)
    assert not (static.tokens == MASK).any()
    assert eager.iterations == static.iterations
    assert eager.nfe == static.nfe
    assert static.nfe_rows >= eager.nfe_rows
    assert (static.energy_calls > 0) == (is_target is not None) and static.energy_calls >= eager.energy_calls


@pytest.mark.parametrize("sampler", ["ancestral", "cached", "remdm", "semi-ar"])
def test_static_loop_on_a_network_equals_the_eager_loop(sampler):
    """A real (tiny DiT) network on CPU fp32: a row recomputed in a batch of another shape gives the same floats."""
    config, model = tiny_denoiser_run()
    knobs = dict(num=10, steps=12, sampler=sampler, seed=2, batch_size=10, prompt="to ")
    eager, _ = generate(model, config, SampleConfig(**knobs))
    static, _ = generate(model, config, SampleConfig(**knobs, static_shapes=True))
    assert eager == static


def per_step_reads(sample: SampleConfig, energy=None) -> tuple[list[int], dict]:
    """Host reads between consecutive steps (``progress`` marks the end of each step) of one generate call."""
    config, model = tiny_denoiser_run()
    marks = []
    with HostSyncCounter() as syncs:
        generate(model, config, sample, energy, progress=lambda _: marks.append(syncs.total))
    return [after - before for before, after in zip(marks, marks[1:])], dict(syncs.counts)


@pytest.mark.parametrize("is_target", [None, "row", "reveal"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_static_loop_reads_the_host_once_per_step(sampler, is_target):
    """Eager: 1 read per step without the cache, 2 with it (+ 1 for reveal-set IS's list of rows). Static: 1,
    a device-to-host copy of [status, changed rows], whatever the sampler and the importance target (a partial
    window: the proposal time rides in the same read)."""
    energy = None if is_target is None else FunctionEnergy(
        lambda c, x, lp: -(c[..., 1:] == c[..., :-1]).double().sum(-1))
    knobs = dict(num=4, steps=10, length=8, sampler=sampler, seed=0, batch_size=4, k=2, window=0.5,
                 is_target=is_target or "row")
    reads, counts = per_step_reads(SampleConfig(**knobs, static_shapes=True), energy)
    assert len(reads) >= 3 and set(reads) == {1}, (reads, counts)
    assert "aten._to_copy (to the host)" in counts
    eager, _ = per_step_reads(SampleConfig(**knobs), energy)
    aimed = is_target == "reveal" and make_step(sampler).plans_before_x0  # else the weights fall back to rows
    assert max(eager) == 1 + SAMPLERS[sampler].cached + aimed, eager


def test_the_counter_sees_a_copy_to_the_host():
    x = torch.arange(3.0)
    with HostSyncCounter() as syncs:
        x.to("cpu", copy=True)  # a CPU stand-in for a device-to-host transfer
        x.double()  # a dtype change is not a transfer
        x.tolist()  # reads memory directly: no op dispatched on the CPU (on CUDA, the copy above is the read)
    assert dict(syncs.counts) == {"aten._to_copy (to the host)": 1}


def recording_capture(shapes: list):
    """A stand-in for ``capture_cuda_graph``: records each captured input shape, replays by calling the function."""

    def capture(function, inputs):
        shapes.append(tuple(tuple(value.shape) for value in inputs))
        return lambda *values: function(*values)

    return capture


@pytest.mark.parametrize("sampler, few_shapes", [("cached", range(2, 9)), ("first-hitting", [1])])
def test_cuda_graphs_capture_each_bucket_shape_once_and_change_nothing(sampler, few_shapes, monkeypatch):
    """cached: T = 40 > L = 8, so rows often do not change and several bucket shapes appear; first-hitting reveals
    one token in every row at every call, so the whole batch is the only shape."""
    import edlm.sampling.graphs as graphs

    shapes = []
    monkeypatch.setattr(graphs, "capture_cuda_graph", recording_capture(shapes))
    config, model = tiny_denoiser_run()
    knobs = dict(num=16, steps=40, sampler=sampler, seed=1, batch_size=16)
    eager, _ = generate(model, config, SampleConfig(**knobs))
    graphed, result = generate(model, config, SampleConfig(**knobs, cuda_graphs=True))
    assert graphed == eager
    assert len(shapes) == len(set(shapes)) and len(shapes) in few_shapes, shapes  # each shape captured once
    allowed = {bucket_size(n, 16) for n in range(1, 17)}  # 8 sizes: 1, 2, 3, 4, 6, 8, 12, 16
    assert {shape[0][0] for shape in shapes} <= allowed and all(shape[0][1] == 8 for shape in shapes)
    assert result.nfe > len(shapes)  # replays after the captures


def test_cuda_graphs_imply_the_static_loop_and_refuse_a_cpu():
    config, model = tiny_denoiser_run()
    sample = SampleConfig(cuda_graphs=True, steps=4, num=2, batch_size=2)
    denoiser, schedule = model_denoiser(model, config, sample)
    assert isinstance(denoiser, ShapeGraphs)
    assert build_sampler(denoiser, schedule, config.model.mask_id, sample).static
    with pytest.raises(GraphError, match="cuda_graphs needs a CUDA device"):
        generate(model, config, sample)


def test_time_conditioned_denoisers_are_captured_with_their_time():
    shapes = []
    seen = []

    def denoiser(x_t, t):
        seen.append(t.clone())
        return OracleDenoiser(x_t.shape[1])(x_t)

    denoiser.time_conditioned = True
    graphed = ShapeGraphs(denoiser, capture=recording_capture(shapes))
    x_t = torch.full((3, 5), MASK)
    graphed(x_t, torch.full((3,), 0.5, dtype=torch.float64))
    graphed(x_t, torch.full((3,), 0.25, dtype=torch.float64))
    assert shapes == [((3, 5), (3,))] and graphed.time_conditioned
    assert float(seen[-1][0]) == 0.25


def buffer_capture(function, inputs):
    """A stand-in for ``capture_cuda_graph`` that, like a real graph, returns one output buffer per shape, which
    the next call of that shape overwrites."""
    output = function(*inputs).clone()

    def replay(*values):
        output.copy_(function(*values))
        return output

    return replay


@pytest.mark.parametrize("is_target", ["row", "reveal", "reveal-cond"])
def test_graph_output_buffers_never_become_the_loops_cache(is_target):
    """reveal-cond calls the denoiser on n x k conditioned rows inside a step: with B = 6 and k = 3 that is the
    full batch's shape whenever two rows reveal something, and its replay must not overwrite the cached log-probs
    of the batch (it did: the samples differed from the eager loop's for most seeds)."""
    def run(denoiser, seed):
        weighting = importance(pair_energy(0.7), 3, window=1.0, target=is_target, fills=2)
        sampler = MaskedDiffusionSampler(denoiser, SCHEDULE, MASK, 12, make_step("cached"), FactorizedProposal(MASK),
                                         weighting, cached=True, static=True)
        return sampler.sample(torch.full((6, 12), MASK), torch.Generator().manual_seed(seed)).tokens

    for seed in range(8):
        eager = run(OracleDenoiser(12), seed)
        assert torch.equal(run(ShapeGraphs(OracleDenoiser(12), capture=buffer_capture), seed), eager), seed
