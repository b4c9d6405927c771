"""What judges are: causal language models that score sample texts and give features for MAUVE (docs/method.md §2).

A judge has a ``name`` and ``nll(texts) -> [(total_nll_nats, judge_tokens, characters)]``, edlm's own scoring:
each document of a text (the pieces between '<|endoftext|>' markers, ``data.tokenizers.split_at_eos``) is encoded
by the judge's tokenizer and scored behind the judge's start token, every token, in windows of at most
``context`` tokens (each from the start token again); characters are the documents' characters. That is all a
judge must offer; the two kinds below (``judge_models``) are ``ModelJudge``s, which also give what the published
protocols need (``edlm.evaluation.protocols``): ``token_ids`` (a whole sample, each marker the judge's EOS id),
``score_windows`` (log-probabilities of given id windows) and ``features`` (MAUVE).

    run:DIR   an edlm AR checkpoint and the run's own tokenizer; its start token is the [MASK] id.
    hf:DIR_OR_NAME  a Hugging Face causal LM + tokenizer, a local folder or a Hub repo id such as ``gpt2-large``
              (the papers' judge) fetched by ``edlm.hub``; its start token is BOS (else EOS).

``judges.make_judge`` picks the kind from ``judges.JUDGES``.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from edlm.data.tokenizers.base import EOS_TEXT, split_at_eos
from edlm.errors import EdlmError


class GenerationEvalError(EdlmError, ValueError):
    """A bad samples file, judge or reference; ``subject`` says which input (``samples``, ``judge``,
    ``reference``, ``law``: ``EdlmError``), so that the command line can name its flag; the message names the
    value."""


class Judge(Protocol):
    name: str

    def nll(self, texts: Sequence[str]) -> list[tuple[float, int, int]]: ...


def padded_batches(windows: list[tuple[int, Sequence[int]]], batch_size: int):
    """Group (text index, ids) windows into right-padded batches.

    Yields (text index per row, ids (b, n) int64, real (b, n) bool), n the longest window of the batch; padding
    is id 0 after a window's end, which a causal model never attends to from a real position.
    """
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        width = max(len(ids) for _, ids in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        real = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, (_, window) in enumerate(batch):
            ids[row, :len(window)] = torch.as_tensor(window, dtype=torch.long)
            real[row, :len(window)] = True
        yield [index for index, _ in batch], ids, real


class ModelJudge:
    """Scoring shared by the judges that are causal LMs. A subclass sets ``name``, ``batch_size``, ``context``
    (longest input), ``start_id`` (prepended by edlm's scoring; None: the first token of a window is context
    only), ``eos_id`` (None: no end-of-text token), ``always_start`` (the model only ever saw inputs that begin
    with its start token, so the published no-BOS rules keep it as context), and implements ``encode(text)``
    (plain text -> ids) and ``outputs(inputs, real, targets, hidden)``."""

    name: str
    batch_size: int
    context: int
    start_id: int | None
    eos_id: int | None
    always_start: bool = False

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def outputs(self, inputs: torch.Tensor, real: torch.Tensor, targets: torch.Tensor | None, hidden: bool
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """inputs, real (b, n) on the CPU -> (log p(targets_i | inputs_<=i) (b, n) float64, or None without
        targets; last hidden state (b, n, H) float64, or None unless ``hidden``), both on the CPU."""
        raise NotImplementedError

    def token_ids(self, text: str) -> list[int]:
        """A whole sample -> the judge's ids; each '<|endoftext|>' marker becomes the judge's EOS id."""
        if self.eos_id is None:
            return self.encode(text)
        ids: list[int] = []
        for index, piece in enumerate(text.split(EOS_TEXT)):
            ids += ([self.eos_id] if index else []) + (self.encode(piece) if piece else [])
        return ids

    def score_windows(self, windows: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per window of ids, (len - 1,) float64: log p(window_i | window_<i) for i >= 1 (teacher forcing)."""
        scored = [(index, list(window)) for index, window in enumerate(windows) if len(window) > 1]
        out = [np.zeros(0) for _ in windows]
        for rows, ids, real in padded_batches(scored, self.batch_size):
            token_lp, _ = self.outputs(ids[:, :-1], real[:, :-1], ids[:, 1:], hidden=False)
            for row, index in enumerate(rows):
                out[index] = token_lp[row, :len(windows[index]) - 1].numpy()
        return out

    def _document_windows(self, ids: list[int]) -> list[list[int]]:
        """edlm's windows of one document: [start] + up to ``context`` ids each (the model reads all but the
        last id of a window, so every id is scored); without a start token the first id of each is context."""
        if self.start_id is None:
            return [ids[i:i + self.context] for i in range(0, len(ids), self.context)]
        return [[self.start_id] + ids[i:i + self.context] for i in range(0, len(ids), self.context)]

    def nll(self, texts: Sequence[str]) -> list[tuple[float, int, int]]:
        windows, owner, characters = [], [], []
        for index, text in enumerate(texts):
            documents = split_at_eos(text)
            characters.append(sum(len(document) for document in documents))
            for document in documents:
                pieces = self._document_windows(self.encode_checked(index, document))
                windows += pieces
                owner += [index] * len(pieces)
        totals, counts = [0.0] * len(texts), [0] * len(texts)
        for index, token_lp in zip(owner, self.score_windows(windows)):
            totals[index] -= float(token_lp.sum())
            counts[index] += len(token_lp)
        return [(totals[i], counts[i], characters[i]) for i in range(len(texts))]

    def encode_checked(self, index: int, text: str) -> list[int]:
        """``encode`` with the sample's index in the error (a subclass may refuse text it cannot hold)."""
        return self.encode(text)

    @torch.no_grad()
    def features(self, texts: Sequence[str], pooling: str = "last", max_tokens: int | None = None) -> np.ndarray:
        """(n, H) float32 features of whole samples (``token_ids``), each cut to its first ``max_tokens`` ids
        (None: ``context``): the last hidden state at the last token (``pooling="last"``, MAUVE's and ReMDM's;
        an ``always_start`` judge reads its start token first), or its mean over the tokens behind the start
        token (``"mean"``). An empty text gets the zero vector."""
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling {pooling!r}: expected 'last' or 'mean'")
        prefix = [self.start_id] if self.start_id is not None and (pooling == "mean" or self.always_start) else []
        limit = min(max_tokens or self.context, self.context - len(prefix))
        windows = [(index, prefix + ids[:limit]) for index, ids in
                   ((index, self.token_ids(text)) for index, text in enumerate(texts)) if ids]
        out: np.ndarray | None = None
        for rows, ids, real in padded_batches(windows, self.batch_size):
            _, hidden = self.outputs(ids, real, None, hidden=True)  # (b, n, H)
            out = np.zeros((len(texts), hidden.shape[-1]), dtype=np.float32) if out is None else out
            for row, index in enumerate(rows):
                length = int(real[row].sum())
                states = hidden[row, len(prefix):length] if pooling == "mean" else hidden[row, length - 1:length]
                out[index] = states.mean(0).numpy()
        return out if out is not None else np.zeros((len(texts), self.hidden_size()), dtype=np.float32)

    def hidden_size(self) -> int:
        raise NotImplementedError
