"""Interop with released MDLM weights: the Hugging Face layout (kuleshov-group/mdlm-owt) in and out, and the
Lightning checkpoint's positional EMA. Fake checkpoints with exactly the released names, at tiny sizes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from edlm.checkpoint import CheckpointError, load_model, save_checkpoint
from edlm.config import ConfigError, get_preset
from edlm.models import build_model
from edlm.training.exporter import export_hf
from edlm.training.importer import import_mdlm, import_mdlm_hf, mdlm_parameter_names

# The released names, written out as listed for kuleshov-group/mdlm-owt (not derived from edlm's modules).
BLOCK_NAMES = ["norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight", "mlp.0.weight", "mlp.0.bias",
               "mlp.2.weight", "mlp.2.bias", "adaLN_modulation.weight", "adaLN_modulation.bias"]


def released_shapes(rows: int, hidden: int, heads: int, cond: int, blocks: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of MDLM's HF ``model.safetensors``, in MDLM's parameter order, with its shape."""
    shapes = {"backbone.vocab_embed.embedding": (rows, hidden),
              "backbone.sigma_map.mlp.0.weight": (cond, 256), "backbone.sigma_map.mlp.0.bias": (cond,),
              "backbone.sigma_map.mlp.2.weight": (cond, cond), "backbone.sigma_map.mlp.2.bias": (cond,)}
    per_block = [(hidden,), (3 * hidden, hidden), (hidden, hidden), (hidden,), (4 * hidden, hidden), (4 * hidden,),
                 (hidden, 4 * hidden), (hidden,), (6 * hidden, cond), (6 * hidden,)]
    for i in range(blocks):
        shapes.update({f"backbone.blocks.{i}.{name}": shape for name, shape in zip(BLOCK_NAMES, per_block)})
    shapes.update({"backbone.output_layer.norm_final.weight": (hidden,),
                   "backbone.output_layer.linear.weight": (rows, hidden), "backbone.output_layer.linear.bias": (rows,),
                   "backbone.output_layer.adaLN_modulation.weight": (2 * hidden, cond),
                   "backbone.output_layer.adaLN_modulation.bias": (2 * hidden,)})
    return shapes


def fake_mdlm_owt(folder, rows=28, hidden=16, heads=2, cond=8, blocks=2, length=8, time_conditioning=False,
                  seed=0) -> dict[str, torch.Tensor]:
    """Write a fake HF MDLM folder as released (config.json with its auto_map, model.safetensors); returns tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: 0.3 * torch.randn(shape, generator=generator)
               for name, shape in released_shapes(rows, hidden, heads, cond, blocks).items()}
    head = hidden // heads
    tensors["backbone.rotary_emb.inv_freq"] = 1.0 / 10_000 ** (torch.arange(0, head, 2).float() / head)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["MDLM"], "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig",
                                                      "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
              "cond_dim": cond, "dropout": 0.1, "hidden_dim": hidden, "model_length": length, "model_type": "mdlm",
              "n_blocks": blocks, "n_heads": heads, "return_dict": False, "time_conditioning": time_conditioning,
              "torch_dtype": "float32", "transformers_version": "4.38.2", "vocab_size": rows}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_mdlm.py").write_text("raise SystemExit('remote code ran')\n")  # must never be imported
    return tensors


def log_probs(model, length: int, seed: int = 0, sigma: float | None = None) -> torch.Tensor:
    rows = model.config.vocab_size + 1
    tokens = torch.randint(0, rows, (3, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sig = None if sigma is None else torch.full((3,), sigma)
        return torch.log_softmax(model(tokens, sig).float(), -1)


def test_hf_folder_imports_every_tensor_under_its_name(tmp_path):
    tensors = fake_mdlm_owt(tmp_path / "hf")
    config, notes = import_mdlm_hf(tmp_path / "hf", tmp_path / "run", preset="char-tiny", tokenizer="char")
    assert (config.model.kind, config.model.vocab_size, config.model.seq_len, config.model.n_layers,
            config.model.hidden, config.model.n_heads, config.model.cond_dim, config.model.mlp_ratio) == \
        ("mdlm", 27, 8, 2, 16, 2, 8, 4)
    assert config.train == get_preset("char-tiny").train
    for weights in ("model", "ema"):
        _, model = load_model(tmp_path / "run", weights=weights)
        state = model.state_dict()
        assert len(state) == len(tensors) - 1  # everything but the rotary buffer, which edlm recomputes
        for name, value in state.items():
            assert torch.equal(value, tensors["backbone." + name]), name
    assert "EMA" in notes[1]
    (checkpoint,) = (tmp_path / "run" / "checkpoints").iterdir()
    source = json.loads((checkpoint / "state.json").read_text())["imported_from"]
    assert checkpoint.name == "step-00000000" and source["tokenizer"] == "char"
    assert set(source["sha256"]) == {"config.json", "model.safetensors"}


def test_mdlm_owt_sized_vocabulary_is_gpt2(tmp_path):
    """The released shape: 50258 rows = 50257 GPT-2 tokens + [MASK] (hidden kept tiny)."""
    fake_mdlm_owt(tmp_path / "owt", rows=50258, hidden=8, heads=2, cond=4, blocks=1, length=16)
    config, _ = import_mdlm_hf(tmp_path / "owt", tmp_path / "run")
    assert config.model.vocab_size == 50257 and config.model.mask_id == 50257
    if hasattr(config.model, "tokenizer"):
        assert config.model.tokenizer == "gpt2"
    with pytest.raises(CheckpointError, match=r"vocab_size 28 is not the gpt2 tokenizer's 50257 tokens \+ \[MASK\]"):
        fake_mdlm_owt(tmp_path / "small")
        import_mdlm_hf(tmp_path / "small", tmp_path / "run2")
    assert not (tmp_path / "run2").exists()


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_export_then_import_gives_identical_log_probs(tmp_path, time_conditioning):
    model_config = dataclasses.replace(get_preset("char-tiny").model, time_conditioning=time_conditioning)
    config = dataclasses.replace(get_preset("char-tiny"), model=model_config)
    torch.manual_seed(0)
    raw, ema = build_model(model_config), build_model(model_config)
    with torch.no_grad():
        for p, q in zip(raw.parameters(), ema.parameters()):
            p.copy_(0.3 * torch.randn_like(p))
            q.copy_(0.3 * torch.randn_like(q))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(config.to_json())
    save_checkpoint(run, 7, raw.state_dict(), ema.state_dict(), None, {"history": {}})

    assert export_hf(run, tmp_path / "hf") == ["config.json", "model.safetensors", "tokenizer_meta.json"]
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config == {"architectures": ["MDLM"], "model_type": "mdlm", "vocab_size": 28, "model_length": 32,
                         "hidden_dim": 64, "cond_dim": 32, "n_blocks": 2, "n_heads": 4, "dropout": 0.0,
                         "time_conditioning": time_conditioning, "torch_dtype": "float32"}
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    expected_shapes = released_shapes(28, 64, 4, 32, 2)
    assert {k: tuple(v.shape) for k, v in exported.items() if k != "backbone.rotary_emb.inv_freq"} == expected_shapes
    assert exported["backbone.rotary_emb.inv_freq"].shape == (8,)  # head size 16

    imported_config, _ = import_mdlm_hf(tmp_path / "hf", tmp_path / "back", preset="char-tiny")  # the folder's char
    assert imported_config.model == model_config
    _, back = load_model(tmp_path / "back")
    sigma = 0.7 if time_conditioning else None
    assert torch.equal(log_probs(back, 32, sigma=sigma), log_probs(ema.eval(), 32, sigma=sigma))
    if time_conditioning:  # the flag survived: sigma changes the output
        assert not torch.equal(log_probs(back, 32, sigma=0.7), log_probs(back, 32, sigma=0.0))
    export_hf(run, tmp_path / "hf-raw", weights="model")
    import_mdlm_hf(tmp_path / "hf-raw", tmp_path / "back-raw", preset="char-tiny", tokenizer="char")
    _, back_raw = load_model(tmp_path / "back-raw")
    assert torch.equal(log_probs(back_raw, 32), log_probs(raw.eval(), 32))


def test_export_refuses_what_the_layout_cannot_hold(tmp_path):
    config = dataclasses.replace(get_preset("char-tiny"), model=dataclasses.replace(
        get_preset("char-tiny").model, kind="ar"))
    model = build_model(config.model)
    run = tmp_path / "ar"
    run.mkdir()
    (run / "config.json").write_text(config.to_json())
    save_checkpoint(run, 1, model.state_dict(), model.state_dict(), None, {"history": {}})
    with pytest.raises(CheckpointError, match="holds a 'ar' model; only MDLM denoisers"):
        export_hf(run, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CheckpointError, match="is not an empty folder"):
        export_hf(run, tmp_path / "full")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# the Lightning checkpoint's positional EMA


def lightning_checkpoint(tensors: dict[str, torch.Tensor], shadow: list[torch.Tensor]) -> dict:
    return {"epoch": 1, "global_step": 42, "state_dict": dict(tensors),
            "ema": {"decay": 0.9999, "num_updates": 42, "shadow_params": shadow}}


def test_ema_shadow_list_is_mapped_by_mdlm_parameter_order(tmp_path):
    tensors = fake_mdlm_owt(tmp_path / "hf", hidden=64, heads=4, cond=32, blocks=2, length=32)
    order = [name for name in released_shapes(28, 64, 4, 32, 2)]  # MDLM's parameters() order
    assert ["backbone." + n for n in mdlm_parameter_names(2)] == order
    shadow = [torch.full(tensors[name].shape, float(index)) for index, name in enumerate(order)]
    torch.save(lightning_checkpoint(tensors, shadow), tmp_path / "last.ckpt")
    _, notes = import_mdlm(tmp_path / "last.ckpt", tmp_path / "run", preset="char-tiny")
    assert "mapped by position" in notes[1]
    _, model = load_model(tmp_path / "run", weights="model")
    _, ema = load_model(tmp_path / "run")
    for index, name in enumerate(order):
        key = name[len("backbone."):]
        assert torch.equal(model.state_dict()[key], tensors[name])
        assert bool((ema.state_dict()[key] == index).all()), name
    # the order edlm's own modules register parameters in is MDLM's (what a positional EMA relies on)
    assert [n for n, _ in build_model(get_preset("char-tiny").model).named_parameters()] == mdlm_parameter_names(2)


def test_ema_with_wrong_count_or_shapes_is_refused(tmp_path):
    tensors = fake_mdlm_owt(tmp_path / "hf", hidden=64, heads=4, cond=32, blocks=2, length=32)
    order = list(released_shapes(28, 64, 4, 32, 2))
    good = [tensors[name].clone() for name in order]
    swapped = list(good)
    swapped[1], swapped[2] = swapped[2], swapped[1]  # sigma_map.mlp.0 weight and bias swapped
    cases = [(good[:-1], f"ema.shadow_params has {len(order) - 1} tensors, the backbone has {len(order)} "
                         f"parameters; refusing to map the EMA by position"),
             (swapped, "ema.shadow_params[1] has shape (32,), but parameter 1 (backbone.sigma_map.mlp.0.weight) "
                       "is (32, 256)")]
    for shadow, message in cases:
        torch.save(lightning_checkpoint(tensors, shadow), tmp_path / "bad.ckpt")
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)").replace(
                ".", r"\.").replace("[", r"\[").replace("]", r"\]")):
            import_mdlm(tmp_path / "bad.ckpt", tmp_path / "run", preset="char-tiny")
        assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.import-*"))


# ----------------------------------------------------------------------------------------------------------
# bad Hugging Face folders: one line naming --hf, nothing written


def test_bad_hf_folders_are_refused_without_writing(tmp_path):
    def variant(name, edit_config=None, edit_tensors=None, drop_weights=False):
        folder = tmp_path / name
        tensors = fake_mdlm_owt(folder)
        if edit_config:
            config = json.loads((folder / "config.json").read_text())
            edit_config(config)
            (folder / "config.json").write_text(json.dumps(config))
        if edit_tensors:
            edit_tensors(tensors)
            save_file(tensors, str(folder / "model.safetensors"))
        if drop_weights:
            (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
        return folder

    def extra(t):
        t["backbone.blocks.9.norm1.weight"] = torch.ones(16)

    def wrong_shape(t):
        t["backbone.blocks.1.mlp.0.bias"] = torch.ones(63)

    cases = [
        (tmp_path / "missing", CheckpointError, "no such folder"),
        (variant("bert", lambda c: c.update(model_type="bert")), CheckpointError,
         "model_type is 'bert', expected 'mdlm'"),
        (variant("nolen", lambda c: c.pop("model_length")), CheckpointError,
         "model_length must be a positive integer, found None"),
        (variant("heads", lambda c: c.update(n_heads=4)), CheckpointError,
         "rotary_emb.inv_freq differs from edlm's rotary frequencies"),
        (variant("odd", lambda c: c.update(n_heads=3)), ConfigError, "model.hidden must be divisible by model.n_heads"),
        (variant("pickle", drop_weights=True), CheckpointError,
         "no model.safetensors (found pytorch_model.bin; edlm reads only a single safetensors file here)"),
        (variant("gone", edit_tensors=lambda t: t.pop("backbone.blocks.0.attn_out.weight")), CheckpointError,
         "missing ['backbone.blocks.0.attn_out.weight']"),
        (variant("extra", edit_tensors=extra), CheckpointError, "unexpected ['backbone.blocks.9.norm1.weight']"),
        (variant("shape", edit_tensors=wrong_shape), CheckpointError,
         "backbone.blocks.1.mlp.0.bias has shape (63,) but an edlm Transformer of the config gives (64,)"),
    ]
    (tmp_path / "noconfig").mkdir()
    cases.append((tmp_path / "noconfig", CheckpointError, "config.json: missing (Hugging Face config)"))
    for folder, error, message in cases:
        with pytest.raises(error) as caught:
            import_mdlm_hf(folder, tmp_path / "run", preset="char-tiny", tokenizer="char")
        text = str(caught.value)
        assert message in text and text.startswith("hf ") and "\n" not in text, (folder.name, text)
        assert caught.value.flag_message().startswith("--hf "), folder.name  # the command line names the flag
        assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.import-*"))


# ----------------------------------------------------------------------------------------------------------
# an independent reference: MDLM's DiT restated from its published code (tests/mdlm_reference.py)


def reference_and_edlm_logits(reference, model, time_conditioning: bool, seed: int = 0):
    """Logits of MDLM's DIT and of the imported edlm model on the same random tokens and sigma (B = 3, L = 8)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 28, (3, 8), generator=generator)
    sigma = torch.rand(3, generator=generator) * 5.0
    with torch.no_grad():
        expected = reference(tokens, sigma if time_conditioning else torch.zeros(3))
        got = model(tokens, sigma).float()
    return expected, got


def backbone(reference) -> dict[str, torch.Tensor]:
    return {f"backbone.{name}": tensor.clone() for name, tensor in reference.state_dict().items()}


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_hf_import_gives_the_logits_of_mdlms_own_model(tmp_path, time_conditioning):
    from mdlm_reference import random_dit

    reference = random_dit(seed=1)
    folder = tmp_path / "hf"
    fake_mdlm_owt(folder, time_conditioning=time_conditioning)  # config.json and the layout of the release
    save_file(backbone(reference), str(folder / "model.safetensors"), metadata={"format": "pt"})
    import_mdlm_hf(folder, tmp_path / "run", preset="char-tiny", tokenizer="char")
    _, model = load_model(tmp_path / "run")
    expected, got = reference_and_edlm_logits(reference, model.eval(), time_conditioning)
    assert expected.abs().max() > 1.0  # the weights matter
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_lightning_ckpt_ema_and_raw_weights_give_mdlms_logits(tmp_path, time_conditioning):
    """The EMA list is positional: mapped by MDLM's parameter order, the EMA model must equal MDLM's EMA DIT."""
    from mdlm_reference import random_dit

    raw, ema = random_dit(seed=2), random_dit(seed=3)
    checkpoint = {"state_dict": backbone(raw), "global_step": 7,
                  "ema": {"decay": 0.9999, "num_updates": 7,
                          "shadow_params": [p.detach().clone() for p in ema.parameters()]}}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    overrides = ["model.n_heads=2", "model.seq_len=8", f"model.time_conditioning={str(time_conditioning).lower()}"]
    import_mdlm(tmp_path / "last.ckpt", tmp_path / "run", preset="char-tiny", overrides=overrides)
    for weights, reference in (("ema", ema), ("model", raw)):
        _, model = load_model(tmp_path / "run", weights=weights)
        expected, got = reference_and_edlm_logits(reference, model.eval(), time_conditioning)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_safetensors_ckpt_gives_mdlms_logits(tmp_path):
    from mdlm_reference import random_dit

    reference = random_dit(seed=4)
    save_file(backbone(reference), str(tmp_path / "weights.safetensors"))
    import_mdlm(tmp_path / "weights.safetensors", tmp_path / "run", preset="char-tiny",
                overrides=["model.n_heads=2", "model.seq_len=8"])
    _, model = load_model(tmp_path / "run")
    expected, got = reference_and_edlm_logits(reference, model.eval(), False)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
