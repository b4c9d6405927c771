"""Generation quality of sample texts: judge perplexity, judge bits per character, entropy, distinct-n.

A judge is any object with ``name`` and ``nll(texts) -> [(total_nll_nats, num_judge_tokens, num_characters)]``
(one triple per text); ``token_ids(texts)`` is optional (judges with their own tokenizer, for token entropy).

    run:DIR   an edlm AR checkpoint. Character level: the text is encoded with edlm's alphabet, every character
              is scored, the first one behind the start token; texts longer than the judge's seq_len are scored
              in consecutive windows, each starting again from the start token.
    hf:DIR    a Hugging Face causal LM + tokenizer from a local folder (``local_files_only``). The text is
              re-tokenised; as in the MDLM/EDLM protocol the BOS token (else EOS) is put in front, so every
              real token is scored; long texts go in windows of the model's maximum positions, each with BOS.

Per-token generative perplexity depends on how the judge splits text (notes, section 2), so the judge's NLL
per character (bpc) and the samples' entropy are always reported beside it. A judge must never be the energy
model that produced the samples: ``eval_gen_command`` warns when it is.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from edlm.errors import EdlmError
from edlm.data import ALPHABET, MASK_ID

LN2 = math.log(2.0)
JUDGE_KINDS = ("run", "hf")


class GenerationEvalError(EdlmError, ValueError):
    """A bad samples file or judge; the message names the flag or file."""


class Judge(Protocol):
    name: str

    def nll(self, texts: Sequence[str]) -> list[tuple[float, int, int]]: ...


# ----------------------------------------------------------------------------------------------------------
# judges


class RunJudge:
    """An edlm AR model (character level) as judge. ``model``: causal Transformer over ALPHABET + [MASK]."""

    def __init__(self, model: torch.nn.Module, seq_len: int, mask_id: int = MASK_ID, batch_size: int = 16,
                 name: str = "run"):
        self.model, self.seq_len, self.mask_id = model, seq_len, mask_id
        self.batch_size, self.name = batch_size, name

    def encode(self, index: int, text: str) -> torch.Tensor:
        ids = [ALPHABET.find(char) for char in text]
        if -1 in ids:
            position = ids.index(-1)
            raise GenerationEvalError(f"sample {index}: character {text[position]!r} at position {position} is "
                                      f"not in the judge's alphabet {ALPHABET!r}")
        return torch.tensor(ids, dtype=torch.long)

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> list[tuple[float, int, int]]:
        from edlm.models.ar import ar_log_probs

        device = next(self.model.parameters()).device
        windows = []  # (text index, (n,) ids) with n <= seq_len
        for index, text in enumerate(texts):
            ids = self.encode(index, text)
            windows += [(index, ids[start:start + self.seq_len]) for start in range(0, len(ids), self.seq_len)]
        totals = [0.0] * len(texts)
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            width = max(len(ids) for _, ids in batch)
            # causal model: padding after a window's end cannot change the scores of its real positions
            x0 = torch.zeros(len(batch), width, dtype=torch.long)
            real = torch.zeros(len(batch), width, dtype=torch.bool)
            for row, (_, ids) in enumerate(batch):
                x0[row, :len(ids)], real[row, :len(ids)] = ids, True
            x0 = x0.to(device)
            log_probs = ar_log_probs(self.model, x0, self.mask_id)  # (b, n, V + 1)
            token_lp = log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (b, n)
            sums = (token_lp.double().cpu() * real).sum(-1)  # (b,)
            for row, (index, _) in enumerate(batch):
                totals[index] -= float(sums[row])
        return [(totals[i], len(text), len(text)) for i, text in enumerate(texts)]


class HFJudge:
    """A local Hugging Face causal LM as judge (e.g. GPT-2 Large, as in the papers)."""

    def __init__(self, folder: Path, device: str | torch.device = "cpu", batch_size: int = 16):
        try:
            import transformers
        except ImportError:
            raise GenerationEvalError(f"--judge hf:{folder} needs the transformers package; "
                                      f"run `pip install transformers`") from None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            # safetensors only: a pickle-based pytorch_model.bin could run code when loaded
            self.model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                                           use_safetensors=True)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            message = f"--judge hf:{folder}: cannot load a causal LM + tokenizer ({first})"
            raise GenerationEvalError(message) from None
        self.model.to(device).eval()
        self.device, self.batch_size, self.name = device, batch_size, f"hf:{folder}"
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

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> list[tuple[float, int, int]]:
        has_start = self.start_id is not None
        chunk = self.max_positions - 1 if has_start else self.max_positions
        windows = []  # (text index, ids fed to the model, number of scored tokens)
        scored = [0] * len(texts)
        for index, ids in enumerate(self.token_ids(texts)):
            for start in range(0, len(ids), chunk):
                piece = ids[start:start + chunk]
                # without BOS/EOS the first token of each window has no context and is not scored
                fed = [self.start_id] + piece if has_start else piece
                windows.append((index, fed))
                scored[index] += len(fed) - 1
        totals = [0.0] * len(texts)
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            width = max(len(fed) for _, fed in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            for row, (_, fed) in enumerate(batch):
                ids[row, :len(fed)] = torch.tensor(fed)
                attention[row, :len(fed)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=attention.to(self.device)).logits
            log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (b, n - 1, V)
            targets = ids[:, 1:].to(log_probs.device)
            token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (b, n - 1)
            sums = (token_lp.double().cpu() * attention[:, 1:]).sum(-1)  # (b,)
            for row, (index, _) in enumerate(batch):
                totals[index] -= float(sums[row])
        return [(totals[i], scored[i], len(text)) for i, text in enumerate(texts)]


def make_judge(spec: str, device: str | torch.device = "cpu", batch_size: int = 16) -> Judge:
    """``run:DIR`` or ``hf:DIR`` -> a judge on ``device``; GenerationEvalError naming the bad spec or folder."""
    kind, sep, folder_text = spec.partition(":")
    expected = "expected run:DIR (an edlm AR model) or hf:DIR (a local Hugging Face causal LM)"
    if not sep:
        raise GenerationEvalError(f"--judge {spec!r}: {expected}")
    if kind not in JUDGE_KINDS:
        raise GenerationEvalError(f"--judge {spec!r}: unknown judge kind {kind!r}; {expected}")
    if not folder_text:
        raise GenerationEvalError(f"--judge {spec!r}: no folder after '{kind}:'; {expected}")
    folder = Path(folder_text)
    if not folder.is_dir():
        raise GenerationEvalError(f"--judge {spec}: no such folder {folder}")
    if kind == "hf":
        return HFJudge(folder, device, batch_size)
    from edlm.checkpoint import load_model

    config, model = load_model(folder, device=device)
    if config.model.kind != "ar":
        raise GenerationEvalError(f"--judge {spec}: holds an {config.model.kind!r} model; the judge must be an "
                                  f"AR model (train one with `edlm train --model ar`)")
    if config.model.vocab_size != len(ALPHABET):
        raise GenerationEvalError(f"--judge {spec}: vocab_size {config.model.vocab_size}, expected the "
                                  f"{len(ALPHABET)}-symbol character alphabet")
    return RunJudge(model, config.model.seq_len, config.model.mask_id, batch_size, name=f"run:{folder}")


load_judge = make_judge  # the name ``edlm bench quality`` imports


# ----------------------------------------------------------------------------------------------------------
# metrics (pure functions)


def unigram_entropy(symbols: Sequence) -> float:
    """Entropy in nats of the empirical distribution of ``symbols`` (characters or token ids); 0 if empty."""
    if len(symbols) == 0:
        return 0.0
    counts = np.array(list(Counter(symbols).values()), dtype=np.float64)
    probs = counts / counts.sum()
    return float(-(probs * np.log(probs)).sum())


def distinct_n(sequences: Sequence[Sequence], n: int) -> float:
    """Unique n-grams / total n-grams, pooled over all sequences (n-grams never cross sequences); nan if none."""
    grams = [tuple(seq[i:i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def _mean_entropy(sequences: Sequence[Sequence]) -> tuple[float, float]:
    """Mean per-sample unigram entropy (bits, nats) over the non-empty samples."""
    nats = float(np.mean([unigram_entropy(seq) for seq in sequences if len(seq) > 0]))
    return nats / LN2, nats


def generation_metrics(texts: Sequence[str], judge: Judge) -> dict:
    """All generation metrics of ``texts`` under ``judge`` (see the module docstring); one JSON-able dict."""
    texts = list(texts)
    if not texts:
        raise GenerationEvalError("no samples to evaluate")
    triples = judge.nll(texts)
    total_nll = sum(t[0] for t in triples)
    total_tokens = sum(t[1] for t in triples)
    total_chars = sum(t[2] for t in triples)
    if total_tokens == 0:
        raise GenerationEvalError("every sample is empty: the judge scored no tokens")
    per_token = np.array([t[0] / t[1] for t in triples if t[1] > 0])  # per-sample NLL, nats per judge token
    entropy_bits, entropy_nats = _mean_entropy(texts)
    words = [text.split() for text in texts]
    result = {
        "num_samples": len(texts),
        "judge": judge.name,
        "judge_tokens": total_tokens,
        "characters": total_chars,
        "gen_ppl": math.exp(total_nll / total_tokens),
        "gen_ppl_mean_per_sample": float(np.exp(per_token).mean()),
        "judge_nll_per_token": total_nll / total_tokens,
        "judge_bpc": total_nll / total_chars / LN2 if total_chars else None,
        "entropy_bits": entropy_bits,
        "entropy_nats": entropy_nats,
        "entropy_unit": "character",
        # None (JSON null) where a sample set has no n-gram of that order
        "distinct": {name: None if math.isnan(value) else value for name, value in
                     [*((f"char_{n}", distinct_n(texts, n)) for n in range(1, 5)),
                      ("word_1", distinct_n(words, 1)), ("word_2", distinct_n(words, 2))]},
        "nll_spread": {"mean": float(per_token.mean()), "std": float(per_token.std()),
                       "min": float(per_token.min()), "max": float(per_token.max())},
    }
    if hasattr(judge, "token_ids"):
        token_bits, token_nats = _mean_entropy(judge.token_ids(texts))
        result.update(token_entropy_bits=token_bits, token_entropy_nats=token_nats)
    return result


# ----------------------------------------------------------------------------------------------------------
# command line


def read_samples(path: str | Path) -> tuple[list[str], dict]:
    """The ``samples`` list of a JSON file from ``edlm sample --json/--out`` -> (texts, whole record)."""
    path = Path(path)
    hint = "expected the JSON written by `edlm sample --json` or `--out`"
    if not path.is_file():
        raise GenerationEvalError(f"--samples {path}: no such file")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenerationEvalError(f"--samples {path}: not valid JSON ({error}); {hint}") from None
    samples = record.get("samples") if isinstance(record, dict) else None
    if not isinstance(samples, list):
        raise GenerationEvalError(f"--samples {path}: no \"samples\" list; {hint}")
    if not samples:
        raise GenerationEvalError(f"--samples {path}: the \"samples\" list is empty")
    for index, sample in enumerate(samples):
        if not isinstance(sample, str):
            raise GenerationEvalError(f"--samples {path}: samples[{index}] is a {type(sample).__name__}, "
                                      f"not a string")
    return samples, record


def _same_folder(a: str | None, b: str) -> bool:
    try:
        return a is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def eval_gen_command(args, device) -> int:
    """``edlm eval-gen --samples FILE --judge run:DIR|hf:DIR [--batch-size N] [--json]``."""
    texts, record = read_samples(args.samples)
    judge = make_judge(args.judge, device, args.batch_size)
    judge_folder = args.judge.partition(":")[2]
    energy = (record.get("settings") or {}).get("energy") if isinstance(record.get("settings"), dict) else None
    if _same_folder(energy.partition(":")[2] if isinstance(energy, str) else None, judge_folder):
        print(f"edlm: warning: the judge {args.judge} is the energy model that produced these samples; its "
              f"perplexity is not an independent measure (notes, section 2)", file=sys.stderr)
    result = generation_metrics(texts, judge)
    result.update(samples_file=str(args.samples), sampler_run=record.get("run"), sampler_model=record.get("model"))
    if args.json:
        print(json.dumps(result))
        return 0
    rows = [("samples", f"{result['num_samples']}"),
            ("judge", result["judge"]),
            ("gen PPL (per judge token)", f"{result['gen_ppl']:.3f}"),
            ("gen PPL (mean per sample)", f"{result['gen_ppl_mean_per_sample']:.3f}"),
            ("judge NLL (bits per character)", f"{result['judge_bpc']:.4f}"),
            ("entropy per sample (characters)",
             f"{result['entropy_bits']:.4f} bits, {result['entropy_nats']:.4f} nats")]
    if "token_entropy_bits" in result:
        rows.append(("entropy per sample (judge tokens)", f"{result['token_entropy_bits']:.4f} bits"))
    shown = {name: "-" if value is None else f"{value:.3f}" for name, value in result["distinct"].items()}
    rows.append(("distinct char 1/2/3/4", " / ".join(shown[f"char_{n}"] for n in range(1, 5))))
    rows.append(("distinct word 1/2", f"{shown['word_1']} / {shown['word_2']}"))
    spread = result["nll_spread"]
    rows.append(("NLL per token, per sample", f"mean {spread['mean']:.4f}, std {spread['std']:.4f}, "
                                              f"min {spread['min']:.4f}, max {spread['max']:.4f} nats"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0
