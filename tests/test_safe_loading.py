"""Safe loading: weights only from safetensors, state from JSON, pickles only via `edlm import-mdlm`
with torch.load(weights_only=True), and a malicious pickle never runs."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import edlm
from edlm.checkpoint import load_model
from edlm.cli import main
from edlm.config import get_preset
from edlm.models import build_model

SRC = Path(edlm.__file__).parent


def randomised_tiny_model(seed: int) -> torch.nn.Module:
    """A char-tiny denoiser with every tensor random (the zero-initialised output layer too)."""
    torch.manual_seed(seed)
    model = build_model(get_preset("char-tiny").model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def mdlm_style_checkpoint(model: torch.nn.Module, ema_model: torch.nn.Module) -> dict:
    """What MDLM's Lightning module saves: prefixed state_dict (with the rotary buffer), EMA shadow list."""
    state = {f"backbone.{k}": v.clone() for k, v in model.state_dict().items()}
    state["backbone.rotary_emb.inv_freq"] = model.rotary_emb.inv_freq.clone()
    return {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "2.2.1", "state_dict": state,
            "ema": {"decay": 0.9999, "num_updates": 1234,
                    "shadow_params": [p.detach().clone() for p in ema_model.parameters()]},
            "optimizer_states": [], "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}}}


def logits(model: torch.nn.Module) -> torch.Tensor:
    tokens = torch.randint(0, 28, (3, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(tokens)


def test_import_round_trip_gives_identical_logits(tmp_path, capsys):
    model, ema_model = randomised_tiny_model(0), randomised_tiny_model(1)
    torch.save(mdlm_style_checkpoint(model, ema_model), tmp_path / "mdlm.ckpt")
    assert main(["import-mdlm", "--ckpt", str(tmp_path / "mdlm.ckpt"), "--out", str(tmp_path / "run"),
                 "--preset", "char-tiny"]) == 0
    assert "EMA weights taken from ema.shadow_params" in capsys.readouterr().err
    config, imported = load_model(tmp_path / "run", weights="model")
    assert config.model == get_preset("char-tiny").model
    assert torch.equal(logits(imported), logits(model))
    _, imported_ema = load_model(tmp_path / "run")  # EMA weights (the default for eval and sampling)
    assert torch.equal(logits(imported_ema), logits(ema_model))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00001234"]


def test_import_from_safetensors_and_shape_inference(tmp_path):
    """A bare safetensors state dict; sizes are inferred from shapes, n_heads comes from an override."""
    config = get_preset("char-tiny").model
    import dataclasses

    wide = dataclasses.replace(config, hidden=96, n_layers=3, n_heads=3, cond_dim=48)
    torch.manual_seed(0)
    model = build_model(wide)
    save_file({f"backbone.{k}": v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    assert main(["import-mdlm", "--ckpt", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "run"),
                 "--preset", "char-tiny", "model.n_heads=3"]) == 0
    loaded_config, imported = load_model(tmp_path / "run", weights="model")
    assert (loaded_config.model.hidden, loaded_config.model.n_layers, loaded_config.model.cond_dim) == (96, 3, 48)
    assert torch.equal(logits(imported), logits(model.eval()))


class CodeOnLoad:
    """Unpickling this calls exec(...), which writes the marker file: the classic pickle exploit."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys, writer):
    marker = tmp_path / "marker"
    payload = {"state_dict": {"backbone.vocab_embed.embedding": torch.zeros(28, 64)}, "evil": CodeOnLoad(marker)}
    path = tmp_path / "evil.ckpt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    if writer == "pickle.dump":  # control: an ordinary unpickler does run the payload
        pickle.loads(path.read_bytes())
        assert marker.read_text() == "code ran"
        marker.unlink()
    assert main(["import-mdlm", "--ckpt", str(path), "--out", str(tmp_path / "run"), "--preset", "char-tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edlm: error: --ckpt {path}: ")
    assert "refused" in err[0]
    if writer == "torch.save":
        assert "refused: it contains a Python object other than tensors" in err[0] and "(exec)" in err[0]
    assert not marker.exists()
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob(".run.import-*"))


def test_import_refuses_bad_inputs_without_writing(tmp_path, capsys):
    model = randomised_tiny_model(0)
    torch.save(mdlm_style_checkpoint(model, model), tmp_path / "ok.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00\x01 definitely not a checkpoint")
    torch.save({"state_dict": {"other.weight": torch.zeros(3)}}, tmp_path / "other.ckpt")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    cases = [
        (["--ckpt", str(tmp_path / "missing.ckpt")], "missing.ckpt: no such file"),
        (["--ckpt", str(tmp_path / "garbage.ckpt")], "refused by PyTorch's weights-only loader"),
        (["--ckpt", str(tmp_path / "other.ckpt")], "no MDLM backbone weights found"),
        (["--ckpt", str(tmp_path / "ok.ckpt"), "--preset", "nope"], "unknown preset 'nope'"),
        (["--ckpt", str(tmp_path / "ok.ckpt"), "model.n_heads=5"], "model.hidden must be divisible by model.n_heads"),
    ]
    for flags, message in cases:
        out = tmp_path / "run"
        assert main(["import-mdlm", "--out", str(out), "--preset", "char-tiny"] + flags) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (flags, err)
        assert not out.exists()
    assert main(["import-mdlm", "--ckpt", str(tmp_path / "ok.ckpt"), "--out", str(tmp_path / "taken")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


FORBIDDEN = [
    (re.compile(r"\btorch\.load\s*\("), "torch.load"),
    (re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|cloudpickle|joblib|marshal|shelve)\b", re.M),
     "a pickle-family module"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"weights_only\s*=\s*False"), "weights_only=False"),
    (re.compile(r"\b(pickle|dill|cloudpickle|joblib)\.loads?\s*\("), "unpickling"),
]


def test_no_other_code_unpickles():
    """Only training/importer.py may call torch.load, once, with weights_only=True."""
    offenders = []
    for file in sorted(SRC.rglob("*.py")):
        text = file.read_text()
        for pattern, what in FORBIDDEN:
            for match in pattern.finditer(text):
                line = text[:match.start()].count("\n") + 1
                offenders.append(f"{file.relative_to(SRC)}:{line}: {what}")
    importer = "training/importer.py"
    allowed = [o for o in offenders if o.startswith(importer) and o.endswith("torch.load")]
    assert len(allowed) == 1 and not set(offenders) - set(allowed), offenders
    text = (SRC / importer).read_text()
    call = text[text.index("torch.load(path"):]
    assert call[:call.index(")") + 1] == 'torch.load(path, map_location="cpu", weights_only=True)'


def test_hugging_face_models_load_safetensors_only():
    """transformers' from_pretrained falls back to pickle-based pytorch_model.bin unless told not to."""
    offenders = []
    for file in sorted(SRC.rglob("*.py")):
        text = file.read_text()
        for match in re.finditer(r"\b\w*Model\w*\.from_pretrained\(([^()]*(\([^()]*\))?[^()]*)\)", text):
            if "use_safetensors=True" not in match.group(1):
                offenders.append(f"{file.relative_to(SRC)}:{text[:match.start()].count(chr(10)) + 1}")
    assert not offenders, f"from_pretrained without use_safetensors=True: {offenders}"


def test_no_code_from_model_folders_runs():
    """Hugging Face folders may ship Python (auto_map); edlm never asks transformers to run it."""
    offenders = []
    for file in sorted(SRC.rglob("*.py")):
        text = file.read_text()
        for match in re.finditer(r"\.from_pretrained\(([^()]*(\([^()]*\))?[^()]*)\)", text):
            line = f"{file.relative_to(SRC)}:{text[:match.start()].count(chr(10)) + 1}"
            if "trust_remote_code=True" in match.group(1):
                offenders.append(line)
            elif file.name == "hf.py" and "trust_remote_code=False" not in match.group(1):
                offenders.append(line + " (energy/hf.py says trust_remote_code=False explicitly)")
    assert not offenders, offenders
