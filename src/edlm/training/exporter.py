"""Export an edlm MDLM run in the layout of the Hugging Face release ``kuleshov-group/mdlm-owt``: ``edlm export-hf``.

The folder holds ``config.json`` (``model_type mdlm``; ``vocab_size`` counts [MASK]) and ``model.safetensors``
with the ``backbone.`` names of MDLM's ``DIT`` plus its ``rotary_emb.inv_freq`` buffer, so MDLM's own code (and
``edlm import-mdlm --hf``) can load it, and the run's tokenizer files (``tokenizer_meta.json``, plus
``tokenizer.json`` for a trained ``bpe:N``, a Hugging Face ``tokenizers`` file), which ``import-mdlm --hf`` reads
back. No Python code is written: the folder carries no ``auto_map``; users of
MDLM's ``modeling_mdlm.py`` put it beside the weights themselves.
"""

from __future__ import annotations

from pathlib import Path

from edlm.checkpoint import CheckpointError, copy_tokenizer_files, load_model, publish_folder
from edlm.fileio import write_json_atomic
from edlm.training.importer import MDLM_MLP_RATIO, PREFIX, ROTARY, mdlm_parameter_names


def mdlm_hf_config(model_config) -> dict:
    """MDLM's Hugging Face ``config.json`` for an edlm ``ModelConfig`` of kind ``mdlm``."""
    return {"architectures": ["MDLM"], "model_type": "mdlm", "vocab_size": model_config.vocab_size + 1,
            "model_length": model_config.seq_len, "hidden_dim": model_config.hidden,
            "cond_dim": model_config.cond_dim, "n_blocks": model_config.n_layers, "n_heads": model_config.n_heads,
            "dropout": model_config.dropout, "time_conditioning": model_config.time_conditioning,
            "torch_dtype": "float32"}


def export_hf(run_dir: str | Path, out_dir: str | Path, weights: str = "ema") -> list[str]:
    """Write ``out_dir/config.json`` + ``out_dir/model.safetensors`` (float32) from the newest valid checkpoint.

    ``weights``: ``ema`` (default, as the released MDLM weights) or ``model`` (the raw weights). Only MDLM
    denoisers with MDLM's MLP width (4 x hidden) can be expressed in this layout. ``out_dir`` must be new or
    empty; it is assembled beside and renamed into place. Returns the names of the files written.
    """
    from safetensors.torch import save_file

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if weights not in ("ema", "model"):
        raise CheckpointError(f"{weights!r}: expected ema or model", "weights")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointError(f"{out_dir}: is not an empty folder; choose a new folder")
    config, model = load_model(run_dir, weights=weights)
    if config.model.kind != "mdlm":
        raise CheckpointError(f"{run_dir}: holds a {config.model.kind!r} model; only MDLM denoisers have the "
                              f"MDLM-OWT layout")
    if config.model.mlp_ratio != MDLM_MLP_RATIO:
        raise CheckpointError(f"{run_dir}: model.mlp_ratio is {config.model.mlp_ratio}; MDLM's layout fixes it "
                              f"at {MDLM_MLP_RATIO}")
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    assert sorted(state) == sorted(mdlm_parameter_names(config.model.n_layers))  # the layout's names, no more
    tensors = {PREFIX + k: v for k, v in state.items()}
    tensors[PREFIX + ROTARY] = model.rotary_emb.inv_freq.detach().float().contiguous().cpu()
    written = ["config.json", "model.safetensors"]

    def fill(folder: Path) -> None:
        write_json_atomic(folder / "config.json", mdlm_hf_config(config.model))
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        written.extend(copy_tokenizer_files(run_dir, folder, config))  # import-mdlm --hf takes them back

    publish_folder(out_dir, fill, str(out_dir))
    return written
