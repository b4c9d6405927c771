"""A model as the public API sees it: a run folder (MDLM, AR, NCE; an imported MDLM-OWT is a run folder) or a
known law (``law:DIR``), with its config, network, tokenizer and device; and the energies built for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch

from edlm.config import ModelConfig, RunConfig
from edlm.errors import EdlmError

LAW_PREFIX = "law:"
ModelKind = Literal["mdlm", "ar", "nce", "law"]


class ApiError(EdlmError, ValueError):
    """A model, sampler or input the public API cannot use together; ``subject`` names the input."""


@dataclass(frozen=True)
class Model:
    """A loaded model (``load``).

    ``kind``: ``mdlm`` (a denoiser), ``ar`` (an autoregressive model: samples, energy, judge), ``nce`` (an energy
    network: use it as an energy) or ``law`` (a known law: its exact posterior is the denoiser). ``config``: the
    run's ``RunConfig`` (a law's: kind ``mdlm``, its vocabulary, row length and tokenizer). ``network``: the
    ``torch.nn.Module`` in eval mode on ``device`` (None for a law). ``source``: what was loaded (``RUN_DIR`` or
    ``law:DIR``). ``law``: the ``edlm.law.Law`` of a law, else None.
    """

    kind: ModelKind
    config: RunConfig
    network: torch.nn.Module | None
    tokenizer: object  # edlm.data.tokenizers.Tokenizer
    device: torch.device
    source: str
    law: object | None = None  # edlm.law.Law

    @property
    def seq_len(self) -> int:
        return self.config.model.seq_len

    @property
    def law_folder(self) -> Path | None:
        """The law folder of a ``law:DIR`` model, else None."""
        return Path(self.source[len(LAW_PREFIX):]) if self.kind == "law" else None

    def denoiser(self, precision: str = "fp32", compile: bool = False, cuda_graphs: bool = False) -> Callable:
        """The denoiser function (``sampling.base.DenoiserFn``): x_t (B, L) int64 [, t (B,)] -> SUBS log-probs
        (B, L, V + 1) float. An MDLM network under ``precision`` (``torch.compile``d, replayed from CUDA graphs
        if asked); a law's exact posterior (float64, any precision: it is not a network, so it cannot be
        compiled or captured). ApiError for an AR or NCE model, which is no denoiser."""
        if self.kind == "law":
            if compile or cuda_graphs:
                raise ApiError(f"{self.source}: a law's exact denoiser is not a network; it cannot be compiled or "
                               f"captured in CUDA graphs", "run")
            return self.law.denoiser(0.0)  # on x_t's device
        if self.kind != "mdlm":
            raise ApiError(f"{self.source} holds an {self.kind!r} model, not a denoiser", "run")
        from edlm.sampling.config import SampleConfig
        from edlm.sampling.generate import model_denoiser

        sample = SampleConfig(precision=precision, compile=compile, cuda_graphs=cuda_graphs)
        return model_denoiser(self.network, self.config, sample)[0]


def load(run: str | Path, device: str | torch.device | None = None, weights: Literal["ema", "model"] = "ema"
         ) -> Model:
    """A run folder (``edlm train`` or ``edlm import-mdlm``; the newest valid checkpoint, EMA weights by default)
    or a known law (``"law:DIR"``, ``edlm law make``) as a ``Model`` on ``device`` (None: CUDA when present, else
    the CPU). A law computes on the CPU and returns its posteriors on ``device``. Raises ``EdlmError`` subclasses
    naming the folder or file."""
    from edlm.device import resolve_device

    device = resolve_device(None if device is None else str(device), flag="device")
    source = str(run)
    if source.startswith(LAW_PREFIX):
        return _load_law(source, device)
    from edlm.checkpoint import load_model, load_run_tokenizer

    config, network = load_model(source, weights, device)
    return Model(config.model.kind, config, network, load_run_tokenizer(Path(source), config), device, source)


def _load_law(source: str, device: torch.device) -> Model:
    from edlm.data.tokenizers import get_tokenizer
    from edlm.law import LawError, open_law_run

    folder = source[len(LAW_PREFIX):]
    if not folder:
        raise ApiError(f"{source!r}: expected law:DIR (a folder made by `edlm law make`)", "run")
    try:
        law_run = open_law_run(folder)
    except LawError as error:
        raise ApiError(f"{source}: {error}", "run") from None
    model_config = ModelConfig(kind="mdlm", vocab_size=law_run.vocab_size, seq_len=law_run.seq_len,
                               tokenizer=law_run.tokenizer)
    return Model("law", RunConfig(model=model_config, preset="law"), None, get_tokenizer(law_run.tokenizer), device,
                 source, law_run.law)


def load_energy(spec: str, model: Model, mode: Literal["coar", "full"] = "coar", precision: str = "fp32"):
    """The energy ``spec`` names (``zero``, ``ar:RUN_DIR``, ``hf:DIR_OR_NAME``, ``nce:RUN_DIR``, ``law:DIR``; see
    ``edlm.energy.ENERGIES``) for ``model``'s denoiser, on its device at ``precision``, checked against its
    vocabulary, length and tokenizer. ``mode``: AR and law energies score the masked positions (``coar``) or the
    whole row (``full``). Raises ``edlm.energy.EnergyError``."""
    from edlm.energy import make_energy

    return make_energy(spec, model.config.model, mode, model.device, precision, model.tokenizer)
