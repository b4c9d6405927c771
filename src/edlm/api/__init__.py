"""edlm from Python: load a model, sample with or without an energy, score the samples, evaluate likelihood.

    from edlm import api

    model = api.load("runs/mdlm")                   # a run folder (MDLM, AR, NCE; an imported MDLM-OWT) or "law:DIR"
    config = api.sampler_config("remdm", steps=64, eta=0.02, num=8)
    samples = api.sample(model, config, energy="ar:runs/ar")   # texts, tokens (N, L), costs
    quality = api.score(samples, judge="run:runs/ar")          # dict: gen-PPL, entropy, ... with 95% intervals
    report = api.likelihood(model, "data/shakespeare")         # dict: the MDLM NELBO (or the EDLM bound)

Every function returns plain dataclasses, tensors and dicts and prints nothing; errors are ``edlm.errors.EdlmError``
subclasses whose ``subject`` names the bad argument. The ``edlm`` command is a thin layer over exactly these
functions (it adds argument handling, processes and printing). docs/python.md has the guide.
"""

from edlm.api.likelihood import LikelihoodJob, likelihood, prepare_likelihood
from edlm.api.model import ApiError, Model, load, load_energy
from edlm.api.sample import Samples, sample, sampler_config
from edlm.api.score import judge_scores, load_judge, score

__all__ = ["ApiError", "LikelihoodJob", "Model", "Samples", "judge_scores", "likelihood", "load", "load_energy",
           "load_judge", "prepare_likelihood", "sample", "sampler_config", "score"]
