"""Generation protocols: which tokens generative perplexity scores and what entropy counts (docs/method.md §2.1).

Published numbers differ in these rules, silently; every edlm result names the protocol it followed.

- ``native``: edlm's own. Each document of a sample (pieces between '<|endoftext|>' markers) is scored behind the
  judge's start token, every token; gen-PPL = exp(sum NLL / sum tokens) pooled over samples; entropy = unigram
  entropy of each sample's characters, in bits, averaged over samples. Judge bits per character come from the same
  scores and are reported under every protocol.
- ``mdlm``: MDLM's ``compute_generative_perplexity`` (kuleshov-group/mdlm, diffusion.py). The judge retokenizes
  the whole sample text (each marker its EOS id), truncated to the sample length; rows are padded with the EOS to
  the longest row of the set and cut into windows of the judge's context; there is no BOS, so the first token of
  each window is context only; the scored targets are every non-EOS token plus the window's first EOS (a row
  with no EOS therefore also scores one EOS after its end when it is shorter than the longest); gen-PPL =
  exp(sum NLL / sum scored), pooled. MDLM reports no entropy; edlm adds ReMDM's.
- ``remdm``: ReMDM (kuleshov-group/remdm) computes gen-PPL with MDLM's code (as above) and entropy as the
  unigram entropy of each sample's own token ids (the sampler's tokenizer, not the judge's), in nats, averaged
  over samples (also Duo's definition); MAUVE by ReMDM's protocol (``mauve_score``).
- ``edlm``: the EDLM paper's table. The paper does not state its rules; its code base derives from MDLM's, so
  gen-PPL follows MDLM's rules, and its entropy column (about 6.9-7.9) is read as the sampler-token entropy in
  bits (ReMDM's 5.3-5.6 nats are 7.6-8.1 bits). Both are edlm's reading, not a published definition.

Deviations, stated: MDLM's loop runs ``num_samples // batch_size`` batches and so drops the remainder; edlm
scores every sample (the same numbers whenever the batch size divides the sample count). The padding rule
assumes the judge pads with its EOS, as MDLM sets for GPT-2. An ``always_start`` judge (an edlm AR run) keeps its
start token in front of every window as context, scoring the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from edlm.evaluation.diversity import unigram_entropy
from edlm.stats import LN2


@dataclass(frozen=True)
class Protocol:
    """One protocol: its rules in words (written into every result) and how its numbers are computed."""

    name: str
    follows: str
    gen_ppl: str
    entropy: str
    reference_scoring: bool  # gen-PPL by MDLM's rules (else edlm's own)
    entropy_of: Literal["characters", "the sampler's token ids"]
    entropy_unit: Literal["bits", "nats"]

    def rules(self) -> dict:
        return {"follows": self.follows, "gen_ppl": self.gen_ppl, "entropy": self.entropy}


_MDLM_GEN_PPL = ("judge retokenizes the whole sample (end-of-text markers -> its EOS), truncated to the sample "
                 "length, rows padded with EOS to the longest; no BOS (the first token of each context window is "
                 "context only); scored: non-EOS tokens plus each window's first EOS; exp(sum NLL / sum scored)")
_TOKEN_ENTROPY = "unigram entropy of each sample's own token ids (the sampler's tokenizer), averaged over samples"

PROTOCOLS = {
    "native": Protocol("native", "edlm", "each document (split at end-of-text) scored behind the judge's start "
                       "token, every token; exp(sum NLL / sum tokens) over all samples",
                       "unigram entropy of each sample's characters, bits, averaged over samples", False,
                       "characters", "bits"),
    "mdlm": Protocol("mdlm", "MDLM (Sahoo et al. 2024), compute_generative_perplexity in kuleshov-group/mdlm",
                     _MDLM_GEN_PPL, f"not part of MDLM's protocol; ReMDM's: {_TOKEN_ENTROPY}, nats", True,
                     "the sampler's token ids", "nats"),
    "remdm": Protocol("remdm", "ReMDM (Wang et al. 2025), kuleshov-group/remdm (gen-PPL by MDLM's code)",
                      _MDLM_GEN_PPL, f"{_TOKEN_ENTROPY}, nats (also Duo's)", True, "the sampler's token ids",
                      "nats"),
    "edlm": Protocol("edlm", "EDLM (Xu et al. 2025) table; rules not stated in the paper, edlm's reading",
                     f"assumed MDLM's (EDLM's code derives from MDLM's): {_MDLM_GEN_PPL}",
                     f"assumed: {_TOKEN_ENTROPY}, bits (matches the paper's 6.9-7.9)", True,
                     "the sampler's token ids", "bits"),
}


def window_weights(chunk: Sequence[int], eos_id: int | None) -> np.ndarray:
    """MDLM's weights of the targets chunk[1:] (len - 1,) bool: a non-EOS token, or the chunk's first EOS."""
    ids = np.asarray(chunk, dtype=np.int64)
    if eos_id is None:
        return np.ones(max(len(ids) - 1, 0), dtype=bool)
    is_eos = ids == eos_id
    first_eos = np.cumsum(is_eos) == 1  # True from the first EOS up to the second (as the reference's cumsum == 1)
    return (first_eos | ~is_eos)[1:]


def reference_scores(judge, texts: Sequence[str], rows: range, max_tokens: int | None
                     ) -> list[tuple[float, int]]:
    """MDLM's gen-PPL scoring (module docstring) of ``texts[rows]``: per sample (sum of scored NLL in nats,
    scored tokens). All ``texts`` are tokenized because the padding length is the longest row of the whole set.
    ``max_tokens``: the truncation length (MDLM: the model's sequence length); None: the judge's context."""
    limit = max_tokens or judge.context
    rows_ids = [judge.token_ids(text)[:limit] for text in texts]
    longest = max((len(ids) for ids in rows_ids), default=0)
    prefix = [judge.start_id] if judge.always_start else []
    windows, weights, owner = [], [], []
    for index in rows:
        ids = rows_ids[index]
        padded = ids + ([judge.eos_id] if judge.eos_id is not None and len(ids) < longest else [])
        for start in range(0, len(padded), judge.context):
            chunk = padded[start:start + judge.context]
            windows.append(prefix + chunk)
            weights.append(window_weights(chunk, judge.eos_id))
            owner.append(index)
    totals = {index: [0.0, 0] for index in rows}
    for index, token_lp, weight in zip(owner, judge.score_windows(windows), weights):
        token_lp = token_lp[len(prefix):]  # an always-start judge: its start token predicts nothing scored
        totals[index][0] -= float(token_lp[weight].sum())
        totals[index][1] += int(weight.sum())
    return [(totals[index][0], totals[index][1]) for index in rows]


def protocol_entropy(protocol: Protocol, texts: Sequence[str], token_ids: Sequence[Sequence[int]] | None,
                     sampler_tokenizer=None) -> tuple[list[float] | None, str]:
    """Per-sample token entropy by ``protocol`` (one whose ``entropy_of`` is the sampler's token ids) in its
    unit, and where the ids came from (or why there are none).

    Token ids: ``token_ids`` (the sampler's own), else each text re-encoded by ``sampler_tokenizer``
    (``encode_sample``: the same ids unless the sampler wrote a non-canonical tokenization), else unavailable.
    """
    if token_ids is not None:
        source = "the sampler's token ids"
    elif sampler_tokenizer is not None:
        try:
            token_ids = [sampler_tokenizer.encode_sample(text) for text in texts]
        except ValueError as error:
            return None, f"unavailable: the texts do not re-encode with the sampler's tokenizer ({error})"
        source = f"the texts re-encoded by the sampler's tokenizer ({sampler_tokenizer.name})"
    else:
        return None, "unavailable: needs the sampler's token ids or its tokenizer (the samples file names neither)"
    scale = 1.0 / LN2 if protocol.entropy_unit == "bits" else 1.0
    # unigram entropy in nats of each sample's own ids (0 for an empty sample), as ReMDM and Duo compute it
    return [unigram_entropy([int(i) for i in ids]) * scale for ids in token_ids], source
