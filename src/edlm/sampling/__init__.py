"""Masked-diffusion samplers by name: ``SAMPLERS[name](schedule, mask_id, proposal, sample) -> Step``.

A new sampler is one file with a step (``base.Step``) and one line here. ``ancestral`` and ``cached`` share the
ancestral step; the loop runs ``ancestral`` without and every other sampler with the per-row cache.
"""

from __future__ import annotations

from edlm.sampling.confidence import ConfidenceStep
from edlm.sampling.first_hitting import FirstHittingStep
from edlm.sampling.mdlm import AncestralStep
from edlm.sampling.remdm import RemaskingStep
from edlm.sampling.semi_ar import SemiAutoregressiveStep
from edlm.sampling.threshold import ThresholdStep


def _ancestral(schedule, mask_id, proposal, sample):
    return AncestralStep(schedule, mask_id, proposal)


SAMPLERS = {
    "ancestral": _ancestral,
    "cached": _ancestral,
    "first-hitting": lambda schedule, mask_id, proposal, sample: FirstHittingStep(schedule, mask_id, proposal),
    "confidence": lambda schedule, mask_id, proposal, sample: ConfidenceStep(schedule, mask_id, proposal,
                                                                             sample.order, sample.order_temp),
    "remdm": lambda schedule, mask_id, proposal, sample: RemaskingStep(
        schedule, mask_id, proposal, sample.remask, sample.eta, sample.remask_on, sample.remask_off,
        sample.remask_alpha_on),
    "semi-ar": lambda schedule, mask_id, proposal, sample: SemiAutoregressiveStep.around(
        SAMPLERS[sample.inner], schedule, mask_id, proposal, sample.block, sample),
    "threshold": lambda schedule, mask_id, proposal, sample: ThresholdStep(mask_id, proposal, sample.threshold),
}

__all__ = ["SAMPLERS"]
