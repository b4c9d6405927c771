"""The two kinds of judge: an edlm AR run (``run:DIR``) and a Hugging Face causal LM (``hf:DIR_OR_NAME``).

Both are ``judge_base.ModelJudge``s: they only say how to encode text and how to run the model; scoring, windows and
features are shared.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edlm.data import ALPHABET
from edlm.evaluation.judge_base import GenerationEvalError, ModelJudge
from edlm.hub import resolve_hf_folder


def _picked_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log-softmax of ``logits`` (b, n, V) at ``targets`` (b, n) -> (b, n) float64, without a second (b, n, V)."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return picked.double().cpu()


class RunJudge(ModelJudge):
    """An edlm AR model as judge. ``model``: causal Transformer over the tokenizer's ids + [MASK] (its start
    token); ``tokenizer``: the run's (default: the character alphabet)."""

    always_start = True  # edlm's AR models are trained on [start] + x0

    def __init__(self, model: torch.nn.Module, seq_len: int, mask_id: int, batch_size: int = 16,
                 name: str = "run", tokenizer=None):
        from edlm.data.tokenizers import CharTokenizer

        self.model, self.context, self.mask_id = model, seq_len, mask_id
        self.batch_size, self.name = batch_size, name
        self.tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
        self.start_id, self.eos_id = mask_id, self.tokenizer.eos_id

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode_sample(text)]

    def encode_checked(self, index: int, text: str) -> list[int]:
        try:
            return self.encode(text)
        except ValueError as error:
            hint = (" (the judge reads only the 27-symbol alphabet: samples of a subword model need a judge with "
                    "their tokenizer, e.g. an AR run on the same data or hf:gpt2)") if self.tokenizer.name == "char" \
                else ""
            raise GenerationEvalError(f"sample {index}: {error}{hint}", "samples") from None

    def hidden_size(self) -> int:
        return int(self.model.output_layer.linear.in_features)

    @torch.no_grad()
    def outputs(self, inputs, real, targets, hidden):
        device = next(self.model.parameters()).device
        captured: list[torch.Tensor] = []
        hook = self.model.output_layer.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            logits = self.model(inputs.to(device))  # (b, n, V + 1): position i predicts the id after inputs_i
        finally:
            hook.remove()
        token_lp = None
        if targets is not None:
            logits = logits.float()
            logits[..., self.mask_id] = float("-inf")  # the start token is never a target
            token_lp = _picked_log_probs(logits, targets.to(device)) * real
        return token_lp, captured[0].double().cpu() if hidden else None


def load_run_judge(folder: Path, device, batch_size: int) -> RunJudge:
    """The judge of an AR run folder; GenerationEvalError (subject ``judge``) for another kind of model."""
    from edlm.checkpoint import load_model, load_run_tokenizer

    config, model = load_model(folder, device=device)
    if config.model.kind != "ar":
        raise GenerationEvalError(f"run:{folder}: holds an {config.model.kind!r} model; the judge must be an AR "
                                  f"model (train one with `edlm train --model ar`)", "judge")
    tokenizer = load_run_tokenizer(folder, config)
    if tokenizer.name == "char" and config.model.vocab_size != len(ALPHABET):
        raise GenerationEvalError(f"run:{folder}: vocab_size {config.model.vocab_size}, expected the "
                                  f"{len(ALPHABET)}-symbol character alphabet", "judge")
    return RunJudge(model, config.model.seq_len, config.model.mask_id, batch_size, name=f"run:{folder}",
                    tokenizer=tokenizer)


class HFJudge(ModelJudge):
    """A Hugging Face causal LM as judge (e.g. GPT-2 Large, as in the papers).

    ``folder``: a local folder, or a Hub repo id resolved by ``edlm.hub.resolve_hf_folder``; the judge's name
    keeps what the user wrote (``hf:gpt2-large``). Loads safetensors only and runs no remote code.
    """

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 16):
        source, folder = folder, resolve_hf_folder(folder, "hf:", GenerationEvalError, "judge")  # "no such folder" first
        try:
            import transformers
        except ImportError:
            raise GenerationEvalError(f"hf:{source} needs the transformers package; run `pip install "
                                      f"transformers`", "judge") from None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            # safetensors only: a pickle-based pytorch_model.bin could run code when loaded
            self.model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                                           use_safetensors=True)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise GenerationEvalError(f"hf:{source}: cannot load a causal LM + tokenizer ({first})",
                                      "judge") from None
        self.model.to(device).eval()
        self.device, self.batch_size, self.name = device, batch_size, f"hf:{source}"
        self.eos_id = self.tokenizer.eos_token_id
        self.start_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_id
        config = self.model.config
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if limit is None:
            limit = self.tokenizer.model_max_length if self.tokenizer.model_max_length < 10**6 else 1024
        self.context = int(limit)

    @property
    def max_positions(self) -> int:
        return self.context

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", 0) or config.n_embd)

    @torch.no_grad()
    def outputs(self, inputs, real, targets, hidden):
        out = self.model(input_ids=inputs.to(self.device), attention_mask=real.long().to(self.device),
                         output_hidden_states=hidden)
        token_lp = None if targets is None else _picked_log_probs(out.logits, targets.to(self.device)) * real
        return token_lp, out.hidden_states[-1].double().cpu() if hidden else None

