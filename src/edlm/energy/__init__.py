"""Energies by name: ``zero``, ``ar:RUN_DIR`` (modes coar/full), ``hf:DIR_OR_NAME`` (a local folder or a Hub
name; modes coar/full), ``nce:RUN_DIR``."""

from __future__ import annotations

from edlm.energy.base import Energy, EnergyError, ZeroEnergy, candidate_log_mu

ENERGY_KINDS = ("zero", "ar", "hf", "nce")


def make_energy(spec: str, denoiser_config, mode: str = "coar", device="cpu", precision: str = "fp32",
                tokenizer=None):
    """Build an energy from ``zero`` | ``ar:RUN_DIR`` | ``hf:DIR_OR_NAME`` | ``nce:RUN_DIR`` for a denoiser with
    ``denoiser_config`` (a ``ModelConfig``). ``tokenizer`` (optional, the denoiser's) lets ``hf:`` compare
    tokenizers beyond the vocabulary size. Raises ``EnergyError`` naming ``--energy``."""
    kind, _, path = spec.partition(":")
    if kind not in ENERGY_KINDS:
        raise EnergyError(f"--energy {spec!r}: unknown energy {kind!r} (valid: zero, ar:RUN_DIR, hf:DIR_OR_NAME, "
                          f"nce:RUN_DIR)")
    if kind == "zero":
        return ZeroEnergy()
    if not path:
        raise EnergyError(f"--energy {spec!r}: expected {kind}:{'DIR_OR_NAME' if kind == 'hf' else 'RUN_DIR'}")
    if kind == "hf":
        from edlm.energy.hf import make_hf_energy

        return make_hf_energy(path, denoiser_config, mode, device, precision, tokenizer)
    from edlm.checkpoint import load_model
    from edlm.energy.ar import check_compatible

    config, model = load_model(path, device=device)
    if config.model.kind != kind:
        raise EnergyError(f"--energy {spec!r}: {path} holds a {config.model.kind!r} model, not {kind!r}")
    check_compatible(config.model, denoiser_config, path)
    if tokenizer is not None:  # the run's tokenizer must be the denoiser's (name, vocabulary, fingerprint)
        from edlm.checkpoint import load_run_tokenizer
        from edlm.data.tokenizers import check_same_tokenizer

        check_same_tokenizer(tokenizer.to_meta(), load_run_tokenizer(path, config).to_meta(), "the denoiser",
                             f"--energy {spec}")
    if kind == "ar":
        from edlm.energy.ar import AREnergy

        return AREnergy(model, denoiser_config.mask_id, mode, precision=precision)
    from edlm.energy.nce import NCEEnergy

    return NCEEnergy(model, precision=precision)


__all__ = ["Energy", "EnergyError", "ZeroEnergy", "candidate_log_mu", "make_energy", "ENERGY_KINDS"]
