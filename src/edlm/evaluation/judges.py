"""Judges: models that score sample texts (NLL per text) and give features for MAUVE (docs/method.md §2).

A judge is any object with ``name`` and ``nll(texts) -> [(total_nll_nats, num_judge_tokens, num_characters)]``
(one triple per text); ``token_ids(texts)`` is optional (judges with their own tokenizer, for token entropy)
and ``features(texts) -> (n, H) float32`` is optional (MAUVE).

    run:DIR   an edlm AR checkpoint. The text is encoded with the run's own tokenizer (edlm's alphabet for a
              char run, else its gpt2 / bpe tokenizer), every token is scored, the first one behind the start
              token; texts longer than the judge's seq_len are scored in consecutive windows, each starting
              again from the start token.
    hf:DIR_OR_NAME  a Hugging Face causal LM + tokenizer from a local folder, or from a Hub repo id such as
              ``gpt2-large`` (the papers' judge) fetched into the Hugging Face cache by ``edlm.hub`` (JSON,
              safetensors and tokenizer text only; ``HF_HUB_OFFLINE=1`` uses a cached copy). The text is
              re-tokenised; as in the MDLM/EDLM protocol the BOS token (else EOS) is put in front, so every
              real token is scored; long texts go in windows of the model's maximum positions, each with BOS.

Features are the last hidden state mean-pooled over the scored positions (see each ``features``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from edlm.data import ALPHABET, MASK_ID
from edlm.errors import EdlmError
from edlm.hub import resolve_hf_folder

JUDGE_KINDS = ("run", "hf")


class GenerationEvalError(EdlmError, ValueError):
    """A bad samples file or judge; the message names the flag or file."""


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


class RunJudge:
    """An edlm AR model as judge. ``model``: causal Transformer over the tokenizer's ids + [MASK]; ``tokenizer``:
    the run's tokenizer (default: the character alphabet)."""

    def __init__(self, model: torch.nn.Module, seq_len: int, mask_id: int = MASK_ID, batch_size: int = 16,
                 name: str = "run", tokenizer=None):
        self.model, self.seq_len, self.mask_id = model, seq_len, mask_id
        self.batch_size, self.name = batch_size, name
        self.tokenizer = tokenizer if tokenizer is not None and tokenizer.name != "char" else None

    def encode(self, index: int, text: str) -> torch.Tensor:
        if self.tokenizer is not None:
            return torch.as_tensor(np.asarray(self.tokenizer.encode(text), dtype=np.int64))
        ids = [ALPHABET.find(char) for char in text]
        if -1 in ids:
            position = ids.index(-1)
            raise GenerationEvalError(f"sample {index}: character {text[position]!r} at position {position} is "
                                      f"not in the judge's alphabet {ALPHABET!r}")
        return torch.tensor(ids, dtype=torch.long)

    def _batches(self, texts: Sequence[str]):
        """Yield (text index per row, x0 (b, n) long on the model's device, real (b, n) bool on CPU)."""
        device = next(self.model.parameters()).device
        windows = []  # (text index, (n,) ids) with n <= seq_len
        for index, text in enumerate(texts):
            ids = self.encode(index, text)
            windows += [(index, ids[start:start + self.seq_len]) for start in range(0, len(ids), self.seq_len)]
        for rows, x0, real in padded_batches(windows, self.batch_size):
            yield rows, x0.to(device), real

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> list[tuple[float, int, int]]:
        from edlm.models.ar import ar_log_probs

        totals = [0.0] * len(texts)
        for rows, x0, real in self._batches(texts):
            log_probs = ar_log_probs(self.model, x0, self.mask_id)  # (b, n, V + 1)
            token_lp = log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (b, n)
            sums = (token_lp.double().cpu() * real).sum(-1)  # (b,)
            for row, index in enumerate(rows):
                totals[index] -= float(sums[row])
        if self.tokenizer is None:
            return [(totals[i], len(text), len(text)) for i, text in enumerate(texts)]
        return [(totals[i], len(self.tokenizer.encode(text)), len(text)) for i, text in enumerate(texts)]

    @torch.no_grad()
    def features(self, texts: Sequence[str]) -> np.ndarray:
        """(n, H) float32: the input of the output layer (last hidden state), mean over every scored position.

        Position i holds the state that predicts character i from the characters before it (the AR input is
        shifted behind the start token), so the last character of each window enters only through the
        scores, not the features. An empty text gets the zero vector.
        """
        from edlm.models.ar import ar_inputs

        captured: list[torch.Tensor] = []
        hook = self.model.output_layer.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0]))
        sums: dict[int, torch.Tensor] = {}
        counts = [0] * len(texts)
        try:
            for rows, x0, real in self._batches(texts):
                captured.clear()
                self.model(ar_inputs(x0, self.mask_id))
                hidden = captured[0].double().cpu() * real.unsqueeze(-1)  # (b, n, H)
                for row, index in enumerate(rows):
                    sums[index] = sums.get(index, 0) + hidden[row].sum(0)
                    counts[index] += int(real[row].sum())
        finally:
            hook.remove()
        width = self.model.output_layer.linear.in_features
        out = np.zeros((len(texts), width), dtype=np.float32)
        for index, total in sums.items():
            out[index] = (total / max(counts[index], 1)).numpy()
        return out


class HFJudge:
    """A Hugging Face causal LM as judge (e.g. GPT-2 Large, as in the papers).

    ``folder``: a local folder, or a Hub repo id resolved by ``edlm.hub.resolve_hf_folder``; the judge's name
    keeps what the user wrote (``hf:gpt2-large``).
    """

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 16):
        source, folder = folder, resolve_hf_folder(folder, "--judge hf:", GenerationEvalError)  # "no such folder" first
        try:
            import transformers
        except ImportError:
            raise GenerationEvalError(f"--judge hf:{source} needs the transformers package; "
                                      f"run `pip install transformers`") from None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            # safetensors only: a pickle-based pytorch_model.bin could run code when loaded
            self.model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                                           use_safetensors=True)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            message = f"--judge hf:{source}: cannot load a causal LM + tokenizer ({first})"
            raise GenerationEvalError(message) from None
        self.model.to(device).eval()
        self.device, self.batch_size, self.name = device, batch_size, f"hf:{source}"
        self.start_id = self.tokenizer.bos_token_id
        if self.start_id is None:
            self.start_id = self.tokenizer.eos_token_id
        config = self.model.config
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if limit is None:
            limit = self.tokenizer.model_max_length if self.tokenizer.model_max_length < 10**6 else 1024
        self.max_positions = int(limit)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]

    def _batches(self, texts: Sequence[str]):
        """Yield (text index per row, ids (b, n), attention (b, n) long on CPU); also returns scored counts.

        Each window is [BOS] + up to max_positions - 1 tokens; without BOS/EOS the first token of each
        window has no context and is not scored.
        """
        has_start = self.start_id is not None
        chunk = self.max_positions - 1 if has_start else self.max_positions
        windows = []  # (text index, ids fed to the model)
        for index, ids in enumerate(self.token_ids(texts)):
            for start in range(0, len(ids), chunk):
                piece = ids[start:start + chunk]
                windows.append((index, [self.start_id] + piece if has_start else piece))
        for rows, ids, real in padded_batches(windows, self.batch_size):
            yield rows, ids, real.long()  # the attention mask

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> list[tuple[float, int, int]]:
        totals, scored = [0.0] * len(texts), [0] * len(texts)
        for rows, ids, attention in self._batches(texts):
            logits = self.model(input_ids=ids.to(self.device), attention_mask=attention.to(self.device)).logits
            log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (b, n - 1, V)
            targets = ids[:, 1:].to(log_probs.device)
            token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (b, n - 1)
            sums = (token_lp.double().cpu() * attention[:, 1:]).sum(-1)  # (b,)
            for row, index in enumerate(rows):
                totals[index] -= float(sums[row])
                scored[index] += int(attention[row, 1:].sum())
        return [(totals[i], scored[i], len(text)) for i, text in enumerate(texts)]

    @torch.no_grad()
    def features(self, texts: Sequence[str]) -> np.ndarray:
        """(n, H) float32: the last hidden state, mean over every token position behind BOS (all positions
        without one); an empty text gets the zero vector."""
        skip = 1 if self.start_id is not None else 0
        sums: dict[int, torch.Tensor] = {}
        counts = [0] * len(texts)
        width = 0
        for rows, ids, attention in self._batches(texts):
            out = self.model(input_ids=ids.to(self.device), attention_mask=attention.to(self.device),
                             output_hidden_states=True)
            hidden = out.hidden_states[-1][:, skip:].double().cpu()  # (b, n - skip, H)
            weights = attention[:, skip:].double()  # (b, n - skip)
            width = hidden.shape[-1]
            for row, index in enumerate(rows):
                sums[index] = sums.get(index, 0) + (hidden[row] * weights[row, :, None]).sum(0)
                counts[index] += int(weights[row].sum())
        width = width or int(getattr(self.model.config, "hidden_size", 0) or self.model.config.n_embd)
        out = np.zeros((len(texts), width), dtype=np.float32)
        for index, total in sums.items():
            out[index] = (total / max(counts[index], 1)).numpy()
        return out


def make_judge(spec: str, device: str | torch.device = "cpu", batch_size: int = 16) -> Judge:
    """``run:DIR`` or ``hf:DIR_OR_NAME`` -> a judge on ``device``; GenerationEvalError naming the bad spec or
    folder."""
    kind, sep, folder_text = spec.partition(":")
    expected = ("expected run:DIR (an edlm AR model) or hf:DIR_OR_NAME (a Hugging Face causal LM: a local folder "
                "or a Hub name)")
    if not sep:
        raise GenerationEvalError(f"--judge {spec!r}: {expected}")
    if kind not in JUDGE_KINDS:
        raise GenerationEvalError(f"--judge {spec!r}: unknown judge kind {kind!r}; {expected}")
    if not folder_text:
        raise GenerationEvalError(f"--judge {spec!r}: no folder after '{kind}:'; {expected}")
    if kind == "hf":
        return HFJudge(folder_text, device, batch_size)
    folder = Path(folder_text)
    if not folder.is_dir():
        raise GenerationEvalError(f"--judge {spec}: no such folder {folder}")
    from edlm.checkpoint import load_model, load_run_tokenizer

    config, model = load_model(folder, device=device)
    if config.model.kind != "ar":
        raise GenerationEvalError(f"--judge {spec}: holds an {config.model.kind!r} model; the judge must be an "
                                  f"AR model (train one with `edlm train --model ar`)")
    tokenizer = load_run_tokenizer(folder, config)
    if tokenizer.name == "char" and config.model.vocab_size != len(ALPHABET):
        raise GenerationEvalError(f"--judge {spec}: vocab_size {config.model.vocab_size}, expected the "
                                  f"{len(ALPHABET)}-symbol character alphabet")
    return RunJudge(model, config.model.seq_len, config.model.mask_id, batch_size, name=f"run:{folder}",
                    tokenizer=tokenizer)


load_judge = make_judge  # older name, kept for callers of the first landing
