"""CUDA graphs over the sampling loop's denoiser (``SampleConfig.cuda_graphs``, ``edlm sample --cuda-graphs``).

A small model's sampling step on a GPU is launch-bound: hundreds of kernels of a few microseconds each, every one
launched from Python. A CUDA graph records the kernels of one denoiser call once and replays them with a single
launch. A graph replays fixed shapes at fixed addresses, so the loop runs in static mode
(``loop.MaskedDiffusionSampler(static=True)``), where the denoiser only ever sees a handful of batch shapes, and
``ShapeGraphs`` captures one graph per shape on first use and replays it afterwards.

What is captured: the denoiser function, i.e. the network under its autocast and the SUBS log-probs. What is not:

- every random draw (x0, the step's reveals, importance sampling's candidates and choice). They use the sampler's
  own ``torch.Generator``; a captured draw from a custom generator replays the seed and offset it was captured
  with unless the generator's state is registered with the graph, and getting that wrong repeats the same "random"
  numbers at every step. Left outside, the random stream is exactly the eager loop's.
- the energy: it sees data-dependent batch sizes (the rows whose x0 is redrawn) and stays eager.
- the step's own arithmetic (plan/apply, the float64 draw): eager kernels, launched between the replays.

Memory: each graph keeps its own memory pool (its input buffers, intermediates and output), so one graph never
overwrites another's output. A call returns the graph's static output buffer, valid until the next call of the
same shape (``ShapeGraphs.reuses_output``): the loop consumes it, or copies it into a cache of its own, before that
(reveal-cond's conditioned call inside a step may have the whole batch's shape).
"""

from __future__ import annotations

from typing import Callable

import torch

from edlm.errors import EdlmError

Replay = Callable[..., torch.Tensor]


class GraphError(EdlmError, ValueError):
    """CUDA graphs asked for where they cannot run (subject ``cuda_graphs``)."""


def capture_cuda_graph(function: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...],
                       warmup: int = 2) -> Replay:
    """Capture ``function(*inputs)`` (CUDA tensors, no host read inside) as one CUDA graph; returns
    ``replay(*new_inputs)``, which copies the new inputs (same shapes and dtypes) into the graph's input buffers,
    replays it and returns its output buffer. ``warmup`` eager calls on a side stream come first (lazy
    initialisation, e.g. cuBLAS workspaces, must not happen during capture)."""
    device = inputs[0].device
    if device.type != "cuda":
        raise GraphError(f"needs a CUDA device; the denoiser runs on {device}", "cuda_graphs")
    static_inputs = tuple(value.clone() for value in inputs)
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            function(*static_inputs)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = function(*static_inputs)

    def replay(*values: torch.Tensor) -> torch.Tensor:
        for buffer, value in zip(static_inputs, values):
            buffer.copy_(value)
        graph.replay()
        return static_output

    replay.graph = graph  # kept alive with the replay function
    return replay


class ShapeGraphs:
    """A denoiser function (``sampling.base.DenoiserFn``) replayed from one captured graph per input shape.

    ``capture(function, inputs) -> replay`` defaults to ``capture_cuda_graph`` (looked up at each capture, so a test
    can stand a recording stub in its place). ``captured``: the input shapes captured so far, in order.
    """

    reuses_output = True  # a call returns the graph's output buffer, overwritten by the next call of that shape

    def __init__(self, denoiser: Callable[..., torch.Tensor], capture: Callable[..., Replay] | None = None):
        self.denoiser, self.capture = denoiser, capture
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", False))
        self.replays: dict[tuple, Replay] = {}
        self.captured: list[tuple[tuple[int, ...], ...]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        inputs = (x_t, t) if self.time_conditioned else (x_t,)
        key = tuple((tuple(value.shape), value.dtype, str(value.device)) for value in inputs)
        replay = self.replays.get(key)
        if replay is None:
            capture = self.capture or capture_cuda_graph
            replay = self.replays[key] = capture(self.denoiser, inputs)
            self.captured.append(tuple(tuple(value.shape) for value in inputs))
        return replay(*inputs)
