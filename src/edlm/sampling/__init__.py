"""Masked-diffusion samplers by name: ``SAMPLERS[name](schedule, mask_id, proposal, sample) -> Step``.

A new sampler is one file with a step (``base.Step``) and one line here. ``ancestral`` and ``cached`` share the
ancestral step; the loop runs ``ancestral`` without and every other sampler with the per-row cache.
"""

from __future__ import annotations

from edlm.sampling.confidence import ConfidenceStep
from edlm.sampling.first_hitting import FirstHittingStep
from edlm.sampling.mdlm import AncestralStep


def _ancestral(schedule, mask_id, proposal, sample):
    return AncestralStep(schedule, mask_id, proposal)


SAMPLERS = {
    "ancestral": _ancestral,
    "cached": _ancestral,
    "first-hitting": lambda schedule, mask_id, proposal, sample: FirstHittingStep(schedule, mask_id, proposal),
    "confidence": lambda schedule, mask_id, proposal, sample: ConfidenceStep(schedule, mask_id, proposal,
                                                                             sample.order, sample.order_temp),
}

__all__ = ["SAMPLERS"]
