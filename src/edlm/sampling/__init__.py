"""Masked-diffusion sampling: the step API (``base``), the loop (``loop``), the x0 proposal and importance sampling
(``proposal``, ``importance``), one file per sampler (``samplers/``, registered by name in ``registry.SAMPLERS``),
``SampleConfig`` (``config``) and ``generate``."""

from __future__ import annotations

import edlm.sampling.samplers  # noqa: F401 (each sampler registers itself)
from edlm.sampling.config import SampleConfig
from edlm.sampling.registry import SAMPLERS, SamplerSpec, register

__all__ = ["SAMPLERS", "SampleConfig", "SamplerSpec", "register"]
