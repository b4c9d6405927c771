"""Likelihood through the public API: ``edlm eval``'s report of a model (with or without an energy) on a
prepared data folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from edlm.api.model import ApiError, Model, load_energy
from edlm.config import LikelihoodConfig


@dataclass(frozen=True)
class LikelihoodJob:
    """A likelihood evaluation, ready to run: the model, the settings, the evaluated ``sequences`` (N, L) int64
    (CPU; the first ``max_sequences`` rows of the split), the energy (None: the model's own NELBO or NLL) and the
    split's characters per token (for bits per character)."""

    model: Model
    config: LikelihoodConfig
    sequences: torch.Tensor
    energy: object | None
    chars_per_token: float

    def per_sequence(self, rows: range | None = None, progress: bool = False) -> dict[str, torch.Tensor]:
        """The figures of ``sequences[rows]`` (default: all): {name: (n,) float64 CPU tensor}, nats per token.
        ``rows`` may be any block of whole batches of ``config.batch_size`` (``edlm.parallel.shard``): every
        batch's draws depend on (seed, its position) only, so blocks computed apart join into one computation."""
        from edlm.likelihood.report import likelihood_rows

        rows = range(self.sequences.shape[0]) if rows is None else rows
        return likelihood_rows(self.config, self.model.config, self.model.network,
                               self.sequences[rows.start:rows.stop], self.energy, rows.start, progress)

    def report(self, parts: list[dict[str, torch.Tensor]]) -> dict:
        """The report (``edlm.likelihood.report.likelihood_summary``: a JSON-able dict) from ``per_sequence`` of
        consecutive blocks covering every row, in order."""
        from edlm.likelihood.report import join_rows, likelihood_summary

        return dict(likelihood_summary(self.config, self.model.config, join_rows(parts), self.sequences.shape[1],
                                       self.chars_per_token, self.energy), run=self.model.source)


def prepare_likelihood(model: Model, data: str | Path, config: LikelihoodConfig | None = None, energy=None,
                       **knobs) -> LikelihoodJob:
    """Check and load what ``likelihood`` needs: the split's rows (``config.split``), the run's tokenizer against
    the data's, the energy (an object; a spec such as ``ar:RUN_DIR``; or None: ``config.energy`` if set; a spec is
    built at ``config.energy_mode`` and ``config.precision``) and that the model has the figure asked for. ``config``: a ``LikelihoodConfig``, or its
    fields as ``knobs``. Raises ``EdlmError`` subclasses (DataError with subject ``data``, EnergyError, ...)."""
    from edlm.data import DataError, eval_chunks, load_meta, load_split
    from edlm.data.splits import chars_per_token
    from edlm.data.tokenizers import check_same_tokenizer
    from edlm.likelihood.report import check_evaluable

    if config is not None and knobs:
        raise ApiError(f"pass a LikelihoodConfig or knobs, not both (got {', '.join(knobs)})", "config")
    config = config if config is not None else LikelihoodConfig(**knobs)
    if model.kind == "law":
        raise ApiError(f"{model.source}: a known law's likelihood is exact (edlm.law: log_prob, entropy_rate); "
                       f"evaluate a trained model", "run")
    try:
        sequences = eval_chunks(load_split(data, config.split), model.seq_len)
    except DataError as error:
        raise DataError(f"{data}, {config.split} split: {error}", "data") from None
    sequences = sequences[: config.max_sequences]  # None: all
    check_same_tokenizer({"name": model.config.model.tokenizer, "vocab_size": model.config.model.vocab_size},
                         load_meta(data)["tokenizer"], f"the run {model.source}", f"the data {data}")
    if isinstance(energy, str):  # a spec: as if given in the config (the report's settings name it)
        config, energy = dataclasses.replace(config, energy=energy), None
    if energy is None and config.energy:
        energy = load_energy(config.energy, model, config.energy_mode, config.precision)
    check_evaluable(model.config, energy)
    return LikelihoodJob(model, config, sequences, energy, chars_per_token(data, config.split))


def likelihood(model: Model, data: str | Path, config: LikelihoodConfig | None = None, energy=None, *,
               progress: bool = False, **knobs) -> dict:
    """``edlm eval`` in this process: the likelihood report of ``model`` on ``data`` (a prepared data folder) as
    one JSON-able dict (``edlm.likelihood.report``: ``mdlm_nelbo_upper_bound``, ``ar_exact_nll``, or with an
    energy ``edlm_likelihood`` with the EDLM bound of the sampler it names and every estimator). ``config`` /
    ``knobs`` / ``energy`` as in ``prepare_likelihood``; ``progress``: a progress bar on stderr."""
    job = prepare_likelihood(model, data, config, energy, **knobs)
    return job.report([job.per_sequence(progress=progress)])
