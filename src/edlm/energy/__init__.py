"""Energies by name: ``zero``, ``ar:RUN_DIR`` (modes coar/full), ``nce:RUN_DIR``."""

from __future__ import annotations

from edlm.energy.base import Energy, ZeroEnergy, candidate_log_mu
from edlm.errors import EdlmError

ENERGY_KINDS = ("zero", "ar", "nce")


class EnergySpecError(EdlmError, ValueError):
    """A bad ``--energy`` value; the message names it."""


def make_energy(spec: str, denoiser_config, mode: str = "coar", device="cpu", precision: str = "fp32"):
    """Build an energy from ``zero`` | ``ar:RUN_DIR`` | ``nce:RUN_DIR`` for a denoiser with ``denoiser_config``."""
    kind, _, path = spec.partition(":")
    if kind not in ENERGY_KINDS:
        raise EnergySpecError(f"--energy {spec!r}: unknown energy {kind!r} (valid: zero, ar:RUN_DIR, nce:RUN_DIR)")
    if kind == "zero":
        return ZeroEnergy()
    if not path:
        raise EnergySpecError(f"--energy {spec!r}: expected {kind}:RUN_DIR")
    from edlm.energy.ar import check_compatible
    from edlm.checkpoint import load_model

    config, model = load_model(path, device=device)
    if config.model.kind != kind:
        raise EnergySpecError(f"--energy {spec!r}: {path} holds a {config.model.kind!r} model, not {kind!r}")
    check_compatible(config.model, denoiser_config, path)
    if kind == "ar":
        from edlm.energy.ar import AREnergy

        return AREnergy(model, denoiser_config.mask_id, mode, precision=precision)
    from edlm.energy.nce import NCEEnergy

    return NCEEnergy(model, precision=precision)


__all__ = ["Energy", "ZeroEnergy", "candidate_log_mu", "make_energy", "ENERGY_KINDS"]
