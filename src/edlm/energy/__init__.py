"""Energies by name: ``zero``, ``ar:RUN_DIR`` (modes coar/full), ``hf:DIR_OR_NAME`` (a local folder or a Hub
name; modes coar/full), ``nce:RUN_DIR``, ``law:DIR`` (a known law, ``edlm law make``; modes full/coar).
``ENERGIES`` maps each kind to its builder."""

from __future__ import annotations

from typing import Callable

from edlm.energy.base import Energy, EnergyAbilities, EnergyError, FunctionEnergy, ZeroEnergy, candidate_log_mu


def _zero(path, denoiser_config, mode, device, precision, tokenizer):
    return ZeroEnergy()


def _hf(path, denoiser_config, mode, device, precision, tokenizer):
    from edlm.energy.hf import make_hf_energy

    return make_hf_energy(path, denoiser_config, mode, device, precision, tokenizer)


def _law(path, denoiser_config, mode, device, precision, tokenizer):
    from edlm.energy.law import make_law_energy

    return make_law_energy(path, denoiser_config, mode, device, precision, tokenizer)


def _run(kind: str):
    """Builder of an energy stored as an edlm run folder of model kind ``kind`` (ar, nce)."""

    def build(path, denoiser_config, mode, device, precision, tokenizer):
        from edlm.checkpoint import load_model
        from edlm.energy.ar import check_compatible

        config, model = load_model(path, device=device)
        if config.model.kind != kind:
            raise EnergyError(f"{kind}:{path}: {path} holds a {config.model.kind!r} model, not {kind!r}", "energy")
        check_compatible(config.model, denoiser_config, path)
        if tokenizer is not None:  # the run's tokenizer must be the denoiser's (name, vocabulary, fingerprint)
            from edlm.checkpoint import load_run_tokenizer
            from edlm.data.tokenizers import check_same_tokenizer

            check_same_tokenizer(tokenizer.to_meta(), load_run_tokenizer(path, config).to_meta(), "the denoiser",
                                 f"the energy {kind}:{path}")
        if kind == "ar":
            from edlm.energy.ar import AREnergy

            return AREnergy(model, denoiser_config.mask_id, mode, precision=precision)
        from edlm.energy.nce import NCEEnergy

        return NCEEnergy(model, precision=precision)

    return build


#: kind -> (what follows the colon, builder(path, denoiser_config, mode, device, precision, tokenizer))
ENERGIES: dict[str, tuple[str, Callable]] = {
    "zero": ("", _zero),
    "ar": ("RUN_DIR", _run("ar")),
    "hf": ("DIR_OR_NAME", _hf),
    "nce": ("RUN_DIR", _run("nce")),
    "law": ("DIR", _law),
}
ENERGY_KINDS = tuple(ENERGIES)


def make_energy(spec: str, denoiser_config, mode: str = "coar", device="cpu", precision: str = "fp32",
                tokenizer=None):
    """Build an energy from ``KIND[:PATH]`` (see ``ENERGIES``) for a denoiser with ``denoiser_config`` (a
    ``ModelConfig``). ``tokenizer`` (optional, the denoiser's) lets the builders compare tokenizers beyond the
    vocabulary size. Raises ``EnergyError`` (subject ``energy``)."""
    kind, _, path = spec.partition(":")
    if kind not in ENERGIES:
        valid = ", ".join(f"{name}:{arg}" if arg else name for name, (arg, _) in ENERGIES.items())
        raise EnergyError(f"{spec!r}: unknown energy {kind!r} (valid: {valid})", "energy")
    argument, build = ENERGIES[kind]
    if argument and not path:
        raise EnergyError(f"{spec!r}: expected {kind}:{argument}", "energy")
    return build(path, denoiser_config, mode, device, precision, tokenizer)


__all__ = ["Energy", "EnergyAbilities", "EnergyError", "FunctionEnergy", "ZeroEnergy", "candidate_log_mu",
           "make_energy", "ENERGIES", "ENERGY_KINDS"]
