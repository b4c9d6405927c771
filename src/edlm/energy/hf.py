"""A Hugging Face causal LM as the EDLM-AR energy: ``--energy hf:DIR_OR_NAME`` (docs/method.md §3.1).

The energy is the one of ``energy.ar`` (coar or full); only the AR token log-probs come from the HF model.

Source. A local folder, or a Hub repo id (``gpt2``, ``org/name@revision``) fetched into (or found in) the
Hugging Face cache by ``edlm.hub.resolve_hf_folder``: only JSON, safetensors and tokenizer text files are
downloaded, and ``HF_HUB_OFFLINE=1`` uses a cached copy without the network.

Loading. The folder is read with ``local_files_only=True``, ``use_safetensors=True`` and
``trust_remote_code=False``: weights come only from ``model.safetensors`` (a pickle-based ``pytorch_model.bin``
is refused, never unpickled), and no code shipped with the folder runs.

Tokenizer. The HF model must share the denoiser's tokenizer: its vocabulary size (the tokenizer's length when
the folder holds one, else ``config.vocab_size``) must equal the denoiser's ``vocab_size``, and when the caller
passes the denoiser's tokenizer, a probe text must encode to the same ids. A model whose output layer is
padded beyond the vocabulary (e.g. 50304 rows for 50257 tokens) is scored over the real tokens only: the
log-softmax runs over the first ``vocab_size`` logits.

Start token. The model's own convention: its BOS id (GPT-2: ``<|endoftext|>`` = 50256, also its EOS) is
prepended, so the logits at input position i predict x0_i and position 0 is scored. The denoiser's [MASK] id
(= vocab_size) is not a token of the HF model and never reaches it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edlm.device import autocast_for
from edlm.energy.ar import ARMode, EnergyMismatchError, TokenLogProbEnergy, check_mode
from edlm.energy.base import EnergyError, rows_per_chunk
from edlm.hub import resolve_hf_folder

PROBE_TEXT = "The quick brown fox, 1972: naïve café -- done.\n"


def load_hf_causal_lm(source: str | Path, subject: str = "energy"):
    """Load ``source`` (a local folder or a Hub repo id) as a causal LM on the CPU in float32 (safetensors only,
    no remote code).

    Returns (model in eval mode, tokenizer or None when the folder has no tokenizer files).
    Raises ``EnergyError`` naming ``hf:{source}`` (and ``subject``, the argument it came in).
    """
    where = f"hf:{source}"
    folder = resolve_hf_folder(source, "hf:", EnergyError, subject)
    if not (folder / "config.json").is_file():
        raise EnergyError(f"{where}: no config.json (expected a Hugging Face model folder)", subject)
    if not any(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.glob("*.bin")]
        detail = f" (found {pickled[0]}, a pickle-based file edlm does not load)" if pickled else ""
        raise EnergyError(f"{where}: no model.safetensors{detail}; convert the weights to safetensors", subject)
    try:
        import transformers
    except ImportError:
        raise EnergyError(f"{where} needs the transformers package; run `pip install transformers`",
                          subject) from None
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # library code prints nothing; restored below
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, trust_remote_code=False,
            dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EnergyError(f"{where}: cannot load a causal LM ({first})", subject) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer = None
    if any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                                   trust_remote_code=False)
        except (OSError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise EnergyError(f"{where}: cannot load its tokenizer ({first})", subject) from None
    return model.eval(), tokenizer


class HFEnergy(TokenLogProbEnergy):
    """A Hugging Face causal LM as the AR energy: (candidates (B, k, L), x_t (B, L), log_probs) -> (B, k).

    ``model`` is an ``AutoModelForCausalLM``; ``vocab_size`` and ``mask_id`` are the denoiser's; ``start_id`` is
    the id prepended so position 0 is scored (the model's BOS). The B x k candidates are scored in chunks of
    ``chunk_rows`` sequences (default: as many as keep a chunk's logits under 1 GiB) on the model's device;
    energies come back as float64 on the candidates' device.
    """

    def __init__(self, model: torch.nn.Module, vocab_size: int, start_id: int, mode: ARMode = "coar",
                 chunk_rows: int | None = None, precision: str = "fp32"):
        check_mode(mode)
        self.model, self.vocab_size, self.start_id, self.mode = model, vocab_size, start_id, mode
        self.mask_id = vocab_size  # the denoiser's [MASK]; never a token of the HF model
        self.chunk_rows, self.precision = chunk_rows, precision
        self.seq_len = max_positions(model.config)

    @torch.no_grad()
    def token_log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """log p_HF(x_i | BOS, x_<i) for (N, L) clean sequences -> (N, L) float64 on their device, in chunks."""
        # checked on the device (no host read inside a sampling step): a RuntimeError on the CPU, a device-side
        # assert on a GPU
        torch._assert_async(((sequences >= 0) & (sequences < self.vocab_size)).all(),
                            f"HFEnergy scores clean sequences only: found an id outside [0, {self.vocab_size}) (the "
                            f"denoiser's [MASK] is {self.mask_id})")
        device = next(self.model.parameters()).device
        vocab_rows = self.model.get_output_embeddings().weight.shape[0]
        chunk = rows_per_chunk(self.chunk_rows, sequences.shape[1], vocab_rows)
        out = []
        for start in range(0, sequences.shape[0], chunk):
            rows = sequences[start:start + chunk].to(device)  # (n, L)
            inputs = torch.cat([torch.full_like(rows[:, :1], self.start_id), rows[:, :-1]], dim=1)  # (n, L)
            with autocast_for(device, self.precision):
                logits = self.model(input_ids=inputs, use_cache=False).logits  # (n, L, V_model)
            logits = logits[..., :self.vocab_size].float()  # (n, L, V): padded rows of the output layer dropped
            # log-softmax of the picked token only, without a second (n, L, V) tensor
            picked = logits.gather(-1, rows.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (n, L)
            out.append(picked.double())
        return torch.cat(out).to(sequences.device)


def max_positions(config) -> int | None:
    """The longest input a HF model accepts (``n_positions`` / ``max_position_embeddings``), None if unbounded."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def make_hf_energy(folder: str | Path, denoiser_config, mode: ARMode = "coar", device="cpu",
                   precision: str = "fp32", tokenizer=None) -> HFEnergy:
    """Build the HF energy for a denoiser with ``denoiser_config`` (a ``ModelConfig``), with every check.

    ``folder``: a local Hugging Face folder or a Hub repo id (see ``edlm.hub.resolve_hf_folder``).

    ``tokenizer``: the denoiser's tokenizer (anything with ``encode(str) -> ids``), optional; when given and the
    folder has a tokenizer, both must encode ``PROBE_TEXT`` to the same ids. Raises ``EnergyError``.
    """
    where, subject = f"hf:{folder}", "energy"
    model, hf_tokenizer = load_hf_causal_lm(folder)
    vocab = len(hf_tokenizer) if hf_tokenizer is not None else int(model.config.vocab_size)
    if vocab != denoiser_config.vocab_size:
        source = "its tokenizer has" if hf_tokenizer is not None else "its config.json has vocab_size"
        raise EnergyMismatchError(f"{where}: {source} {vocab} tokens, the denoiser has "
                                  f"{denoiser_config.vocab_size}; they must share a tokenizer", subject)
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < vocab:
        raise EnergyMismatchError(f"{where}: its output layer has {rows} rows for {vocab} tokens", subject)
    if tokenizer is not None and hf_tokenizer is not None:
        ours = [int(i) for i in tokenizer.encode(PROBE_TEXT)]
        theirs = list(hf_tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"])
        if ours != theirs:
            raise EnergyMismatchError(f"{where}: its tokenizer encodes a probe text differently from the "
                                      f"denoiser's; they must share a tokenizer", subject)
    start_id = model.config.bos_token_id
    if start_id is None:
        start_id = model.config.eos_token_id
    if isinstance(start_id, list):
        start_id = start_id[0] if start_id else None
    if start_id is None or not 0 <= int(start_id) < vocab:
        raise EnergyError(f"{where}: config.json has no usable bos_token_id or eos_token_id (got {start_id}); "
                          f"the energy needs a start token to score position 0", subject)
    limit = max_positions(model.config)
    if limit is not None and limit < denoiser_config.seq_len:
        raise EnergyMismatchError(f"{where}: the model takes {limit} positions, shorter than the denoiser's "
                                  f"seq_len {denoiser_config.seq_len}", subject)
    return HFEnergy(model.to(device), denoiser_config.vocab_size, int(start_id), mode, precision=precision)
