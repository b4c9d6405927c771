"""Generation quality of sample texts: judge perplexity, judge bits per character, entropy, distinct-n.

A judge is any object with ``name`` and ``nll(texts) -> [(total_nll_nats, num_judge_tokens, num_characters)]``
(one triple per text); ``token_ids(texts)`` is optional (judges with their own tokenizer, for token entropy).

    run:DIR   an edlm AR checkpoint. Character level: the text is encoded with edlm's alphabet, every character
              is scored, the first one behind the start token; texts longer than the judge's seq_len are scored
              in consecutive windows, each starting again from the start token.
    hf:DIR    a Hugging Face causal LM + tokenizer from a local folder (``local_files_only``). The text is
              re-tokenised; as in the MDLM/EDLM protocol the BOS token (else EOS) is put in front, so every
              real token is scored; long texts go in windows of the model's maximum positions, each with BOS.

Per-token generative perplexity depends on how the judge splits text (docs/method.md §2), so the judge's NLL
per character (bpc) and the samples' entropy are always reported beside it, each with a 95% bootstrap
interval, and the per-sample scores are kept so that two sample sets can be compared later, paired
(``edlm.evaluation.stats``). A judge must never be the energy model that produced the samples:
``evaluate_samples`` warns when it is.

Judges with ``features(texts) -> (n, H)`` (both here) also feed MAUVE (``edlm.evaluation.mauve_score``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from edlm.errors import EdlmError
from edlm.data import ALPHABET, MASK_ID
from edlm.evaluation.diversity import distinct_n  # noqa: F401 (re-exported: tests and older callers)
from edlm.evaluation.diversity import diversity_metrics, mean_entropy, unigram_entropy
from edlm.evaluation.stats import DEFAULT_RESAMPLES, METRICS, SampleScores, bootstrap_ci

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

    def _batches(self, texts: Sequence[str]):
        """Yield (text index per row, x0 (b, n) long on the model's device, real (b, n) bool on CPU)."""
        device = next(self.model.parameters()).device
        windows = []  # (text index, (n,) ids) with n <= seq_len
        for index, text in enumerate(texts):
            ids = self.encode(index, text)
            windows += [(index, ids[start:start + self.seq_len]) for start in range(0, len(ids), self.seq_len)]
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            width = max(len(ids) for _, ids in batch)
            # causal model: padding after a window's end cannot change the scores of its real positions
            x0 = torch.zeros(len(batch), width, dtype=torch.long)
            real = torch.zeros(len(batch), width, dtype=torch.bool)
            for row, (_, ids) in enumerate(batch):
                x0[row, :len(ids)], real[row, :len(ids)] = ids, True
            yield [index for index, _ in batch], x0.to(device), real

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
        return [(totals[i], len(text), len(text)) for i, text in enumerate(texts)]

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
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            width = max(len(fed) for _, fed in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            for row, (_, fed) in enumerate(batch):
                ids[row, :len(fed)] = torch.tensor(fed)
                attention[row, :len(fed)] = 1
            yield [index for index, _ in batch], ids, attention

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
# metrics


def generation_metrics(texts: Sequence[str], judge: Judge, num_resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0) -> dict:
    """All generation metrics of ``texts`` under ``judge``; one JSON-able dict.

    ``per_sample`` keeps each sample's judge NLL (nats), judge tokens, characters and character entropy
    (bits), in sample order, so two sets drawn with the same seeds can be compared later, paired
    (``edlm.evaluation.stats.compare_sets``). ``ci95`` holds 95% bootstrap intervals [low, high] of gen-PPL,
    judge bpc and entropy (``num_resamples`` resamples of the samples, numpy seed ``seed``).
    """
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
    entropy_bits, entropy_nats = mean_entropy(texts)
    sample_entropy = [unigram_entropy(text) / LN2 if text else None for text in texts]
    scores = SampleScores.from_lists([t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples],
                                     sample_entropy)
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
        "ci95": {metric: [interval.low, interval.high] for metric in METRICS
                 for interval in [bootstrap_ci(scores, metric, num_resamples, seed)]},
        "bootstrap": {"resamples": num_resamples, "seed": seed, "interval": "percentile, resampling samples"},
        **diversity_metrics(texts),
        "nll_spread": {"mean": float(per_token.mean()), "std": float(per_token.std()),
                       "min": float(per_token.min()), "max": float(per_token.max())},
        "per_sample": {"nll": [t[0] for t in triples], "tokens": [t[1] for t in triples],
                       "characters": [t[2] for t in triples], "entropy_bits": sample_entropy},
    }
    if hasattr(judge, "token_ids"):
        token_bits, token_nats = mean_entropy(judge.token_ids(texts))
        result.update(token_entropy_bits=token_bits, token_entropy_nats=token_nats)
    return result


def evaluate_samples(texts: Sequence[str], judge: Judge, references: Sequence[str] | None = None,
                     mauve_seeds: Sequence[int] = (0,), energy: str | None = None, judge_spec: str | None = None,
                     num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """``generation_metrics`` plus MAUVE against ``references`` (when given) and a ``warnings`` list.

    ``energy`` is the sampler's ``--energy`` setting (e.g. ``ar:DIR``) and ``judge_spec`` the judge's
    (``run:DIR``): when both name one folder, a warning says the judge is not independent. MAUVE is
    averaged over ``mauve_seeds`` (k-means seeds); ``result["mauve"]`` is None when it was not asked for.
    """
    result = generation_metrics(texts, judge, num_resamples, seed)
    warnings = []
    if energy and judge_spec and _same_folder(energy.partition(":")[2], judge_spec.partition(":")[2]):
        warnings.append(f"the judge {judge_spec} is the energy model that produced these samples; its "
                        f"perplexity is not an independent measure (docs/method.md §2)")
    result["mauve"] = None
    if references is not None:
        from edlm.evaluation.mauve_score import judge_mauve

        result["mauve"] = judge_mauve(judge, texts, references, mauve_seeds)
        if result["mauve"]["mauve"] is None:
            warnings.append(f"MAUVE unavailable: {result['mauve']['unavailable']}")
    result["warnings"] = warnings
    return result


def _interval_text(result: dict, metric: str, digits: int) -> str:
    low, high = result["ci95"][metric]
    return f"{result[metric]:.{digits}f} (95% CI {low:.{digits}f}..{high:.{digits}f})"


def report_lines(result: dict) -> list[str]:
    """The human-readable table of an ``evaluate_samples`` result, one string per line (no printing)."""
    rows = [("samples", f"{result['num_samples']}"),
            ("judge", result["judge"]),
            ("gen PPL (per judge token)", _interval_text(result, "gen_ppl", 3)),
            ("gen PPL (mean per sample)", f"{result['gen_ppl_mean_per_sample']:.3f}"),
            ("judge NLL (bits per character)", _interval_text(result, "judge_bpc", 4)),
            ("entropy per sample (characters)", _interval_text(result, "entropy_bits", 4)
             + f" bits, {result['entropy_nats']:.4f} nats")]
    if "token_entropy_bits" in result:
        rows.append(("entropy per sample (judge tokens)", f"{result['token_entropy_bits']:.4f} bits"))
    shown = {name: "-" if value is None else f"{value:.3f}" for name, value in result["distinct"].items()}
    rows.append(("distinct char 1/2/3/4", " / ".join(shown[f"char_{n}"] for n in range(1, 5))))
    rows.append(("distinct word 1/2/3", " / ".join(shown[f"word_{n}"] for n in range(1, 4))))
    repeat = {name: "-" if value is None else f"{value:.3f}" for name, value in result["repetition_4"].items()}
    rows.append(("repeated 4-grams (char / word)", f"{repeat['char']} / {repeat['word']}"))
    bleu = result.get("self_bleu")
    rows.append(("self-BLEU (sacrebleu)", f"{bleu:.2f}" if bleu is not None else
                 f"unavailable ({result.get('unavailable', '')})"))
    mauve = result.get("mauve")
    if mauve is not None:
        rows.append(("MAUVE", f"{mauve['mauve']:.4f} (k-means seeds {mauve['seeds']}, std {mauve['std']:.4f})"
                     if mauve["mauve"] is not None else f"unavailable ({mauve['unavailable']})"))
    spread = result["nll_spread"]
    rows.append(("NLL per token, per sample", f"mean {spread['mean']:.4f}, std {spread['std']:.4f}, "
                                              f"min {spread['min']:.4f}, max {spread['max']:.4f} nats"))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]


# ----------------------------------------------------------------------------------------------------------
# samples files


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


def sampler_energy(record: dict) -> str | None:
    """The ``--energy`` setting recorded in a samples file, if any."""
    settings = record.get("settings")
    energy = settings.get("energy") if isinstance(settings, dict) else None
    return energy if isinstance(energy, str) else None


def _same_folder(a: str | None, b: str | None) -> bool:
    try:
        return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
