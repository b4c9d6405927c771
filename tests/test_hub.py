"""Hugging Face Hub names wherever edlm takes a Hugging Face folder, offline: a Hub cache laid out by hand.

``HF_HUB_CACHE`` points at ``tmp/hub`` and ``HF_HUB_OFFLINE=1``; a repo ``org/name`` is stored as the Hub does:
``models--org--name/refs/main`` holds a commit hash, ``snapshots/<hash>/<file>`` links to ``blobs/<sha256>``.
A name must then give exactly what its folder gives (judge scores, energies, imported logits), pickles stay
refused without being read, and a path-like typo never reaches the Hub.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edlm.hub import SAFE_PATTERNS, HubError, resolve_hf_folder, split_hub_name

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "abc"]


def cache_repo(cache: Path, repo_id: str, files_from: Path, revision: str = "main") -> Path:
    """Store every file of ``files_from`` as the Hub cache does (blob + symlink); returns the snapshot folder."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()  # 40 hex digits, like a git commit
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for file in sorted(files_from.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, storage / "blobs" / digest)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", digest))
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty offline Hub cache. huggingface_hub reads the variables once, at import: patch its copies too."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything asks the Hub."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        pytest.fail(f"snapshot_download was called with {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from helpers_hf import save_tiny_char_gpt2

    return save_tiny_char_gpt2(tmp_path_factory.mktemp("tiny_gpt2"), n_positions=16)


# ----------------------------------------------------------------------------------------------------------
# names and paths


@pytest.mark.parametrize("source, expected", [
    ("gpt2-large", ("gpt2-large", None)), ("org/tiny", ("org/tiny", None)), ("org/tiny@v1", ("org/tiny", "v1")),
    ("org/tiny@refs/pr/3", ("org/tiny", "refs/pr/3")),
    ("./nope", None), ("../nope", None), ("/abs/nope", None), ("~/nope", None), ("a/b/c", None), ("org/", None),
    ("org/tiny@", None), ("a--b", None), ("a..b", None), ("my model", None), ("name.git", None), (".hidden", None)])
def test_what_reads_as_a_hub_name(source, expected):
    assert split_hub_name(source) == expected


@pytest.mark.parametrize("source", ["./nope", "a/b/c", "org/name/", "~/edlm-no-such-folder", "/edlm/no/such",
                                    "~edlm-no-such-user/x"])
def test_a_path_like_missing_source_is_no_such_folder_without_asking_the_hub(source, no_hub):
    with pytest.raises(HubError) as info:
        resolve_hf_folder(source, "hf:", subject="judge")
    assert str(info.value) == f"judge hf:{source}: no such folder"
    assert info.value.flag_message() == f"--judge hf:{source}: no such folder"  # as the command line shows it


def test_an_existing_folder_is_itself_and_a_file_is_not_a_folder(tmp_path, no_hub):
    assert resolve_hf_folder(str(tmp_path)) == tmp_path
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HubError, match=r"^hf .*config.json: not a folder"):
        resolve_hf_folder(tmp_path / "config.json", subject="hf")


def test_only_safe_files_are_allowed_and_the_revision_is_passed(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: calls.append(
        (repo_id, kwargs)) or str(tmp_path))
    assert resolve_hf_folder("org/tiny@v1") == tmp_path
    [(repo_id, kwargs)] = calls
    assert repo_id == "org/tiny" and kwargs["revision"] == "v1"
    assert resolve_hf_folder("gpt2") == tmp_path and calls[1][1]["revision"] is None
    allowed = kwargs["allow_patterns"]
    assert sorted(allowed) == sorted(SAFE_PATTERNS) and not kwargs.get("ignore_patterns")
    risky = ["pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "model.pt", "weights.pth", "last.ckpt",
             "tf_model.h5", "flax_model.msgpack", "modeling_mdlm.py", "configuration_mdlm.py", "sub/model.bin",
             "model.onnx", "training_args.bin", "optimizer.pt", "model.pkl", "model.pickle", "model.joblib"]
    safe = ["config.json", "model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
            "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt", "spiece.model",
            "special_tokens_map.json", "generation_config.json"]
    # the Hub's own filter (fnmatch) over these names keeps exactly the safe ones
    assert sorted(filter_repo_objects(risky + safe, allow_patterns=allowed)) == sorted(safe)
    assert not [name for name in risky for pattern in allowed if fnmatch.fnmatch(name, pattern)]


def test_without_huggingface_hub_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    with pytest.raises(HubError, match=r"^hf org/tiny: no such folder, and .*`pip install huggingface_hub`"):
        resolve_hf_folder("org/tiny", subject="hf")


def test_an_unknown_name_offline_is_one_line_naming_flag_and_name(hub_cache):
    class CustomError(HubError):
        pass

    with pytest.raises(CustomError) as info:
        resolve_hf_folder("org/unknown", "hf:", CustomError, "energy")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("energy hf:org/unknown: no such folder, and 'org/unknown' could not be fetched "
                              "from the Hugging Face Hub (LocalEntryNotFoundError: ")
    assert "HF_HUB_OFFLINE=1" in message and "download org/unknown --include '*.json'" in message


def test_a_cached_name_resolves_to_its_snapshot_and_a_revision_to_its_own(hub_cache, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.json").write_text('{"a": 1}')
    main = cache_repo(hub_cache, "org/tiny", files)
    (files / "config.json").write_text('{"a": 2}')
    tagged = cache_repo(hub_cache, "org/tiny", files, revision="v2")
    assert resolve_hf_folder("org/tiny") == main and main != tagged
    assert json.loads((resolve_hf_folder("org/tiny@main") / "config.json").read_text()) == {"a": 1}
    assert json.loads((resolve_hf_folder("org/tiny@v2") / "config.json").read_text()) == {"a": 2}
    with pytest.raises(HubError, match="^hf org/tiny@v3: no such folder, and 'org/tiny' could not be fetched"):
        resolve_hf_folder("org/tiny@v3", subject="hf")


def test_the_environment_variables_work_in_a_fresh_process(hub_cache, tmp_path):
    """The CLI's case: HF_HUB_CACHE / HF_HUB_OFFLINE set before huggingface_hub is imported (no patching)."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.json").write_text("{}")
    snapshot = cache_repo(hub_cache, "org/tiny", files)
    code = "import sys; from edlm.hub import resolve_hf_folder; print(resolve_hf_folder(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code, "org/tiny"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == snapshot


# ----------------------------------------------------------------------------------------------------------
# the three callers: --judge hf:, --energy hf:, import-mdlm --hf


def eval_gen_json(main, capsys, samples: Path, judge: str) -> dict:
    assert main(["eval-gen", "--samples", str(samples), "--judge", judge, "--json", "--device", "cpu",
                 "--bootstrap", "20"]) == 0
    return json.loads(capsys.readouterr().out)


def without(value, text: str):
    """``value`` with every string equal to ``text`` replaced by a placeholder (the judge's name)."""
    if isinstance(value, dict):
        return {key: without(item, text) for key, item in value.items()}
    if isinstance(value, list):
        return [without(item, text) for item in value]
    return "<judge>" if value == text else value


def test_judge_by_hub_name_scores_like_the_folder(hub_cache, gpt2_folder, tmp_path, capsys):
    from edlm.cli import main
    from edlm.evaluation.judges import make_judge

    cache_repo(hub_cache, "org/tiny", gpt2_folder)
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": TEXTS}))
    by_folder = eval_gen_json(main, capsys, samples, f"hf:{gpt2_folder}")
    by_name = eval_gen_json(main, capsys, samples, "hf:org/tiny")
    assert without(by_name, "hf:org/tiny") == without(by_folder, f"hf:{gpt2_folder}")
    judge = make_judge("hf:org/tiny", batch_size=2)
    assert judge.name == "hf:org/tiny"
    scores = judge.nll(TEXTS)
    assert scores == make_judge(f"hf:{gpt2_folder}", batch_size=2).nll(TEXTS)
    assert [count for _, count, _ in scores] == [len(text) for text in TEXTS]  # one token per character
    assert all(total > 0 for total, _, _ in scores)


def test_energy_by_hub_name_equals_the_folder(hub_cache, gpt2_folder):
    from edlm.config import ModelConfig
    from edlm.energy import make_energy

    cache_repo(hub_cache, "org/tiny", gpt2_folder)
    V, L, B, k = 28, 6, 2, 3  # 27 characters + <|endoftext|>
    denoiser = ModelConfig(vocab_size=V, seq_len=L)
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randint(0, V, (B, k, L), generator=generator)  # (B, k, L)
    x_t = candidates[:, 0].clone()  # (B, L)
    x_t[:, ::2] = V  # every other position masked
    log_probs = torch.log_softmax(torch.randn(B, L, V + 1, generator=generator), -1)  # (B, L, V + 1)
    energies = {}
    for source in (str(gpt2_folder), "org/tiny"):
        energy = make_energy(f"hf:{source}", denoiser, "coar")
        energies[source] = energy(candidates, x_t, log_probs)  # (B, k)
    assert energies["org/tiny"].shape == (B, k) and torch.isfinite(energies["org/tiny"]).all()
    assert torch.equal(energies["org/tiny"], energies[str(gpt2_folder)])
    assert energies["org/tiny"].std() > 0  # the candidates differ, so must their energies


def test_import_mdlm_by_hub_name_gives_identical_logits(hub_cache, tmp_path, capsys):
    from test_cli import save_run

    from edlm.checkpoint import list_checkpoints, load_model
    from edlm.cli import main
    from edlm.config import get_preset
    from edlm.fileio import read_json

    config = get_preset("char-tiny")
    save_run(tmp_path / "run", config, step=3, noise=0.02)
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "exported")]) == 0
    snapshot = cache_repo(hub_cache, "org/mdlm-stand-in", tmp_path / "exported")
    assert main(["import-mdlm", "--hf", "org/mdlm-stand-in", "--out", str(tmp_path / "back"), "--tokenizer", "char",
                 "--preset", "char-tiny"]) == 0
    _, original = load_model(tmp_path / "run")
    _, imported = load_model(tmp_path / "back")
    tokens = torch.randint(0, config.model.vocab_size + 1, (2, config.model.seq_len))  # (2, L), [MASK] included
    with torch.no_grad():
        assert torch.equal(original(tokens), imported(tokens))
    origin = read_json(list_checkpoints(tmp_path / "back")[-1] / "state.json", "state")["imported_from"]
    assert origin["hf_repo"] == "org/mdlm-stand-in" and origin["hf_folder"] == str(snapshot)


class TouchOnUnpickle:
    """Unpickling this creates ``marker``: proof that something read the pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.mark.parametrize("caller", ["judge", "energy", "import"])
def test_a_cached_repo_with_only_pickled_weights_is_refused_unread(hub_cache, gpt2_folder, tmp_path, caller, capsys):
    from edlm.cli import main

    files = tmp_path / "files"
    shutil.copytree(gpt2_folder, files)
    (files / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (files / "pytorch_model.bin").write_bytes(pickle.dumps(TouchOnUnpickle(marker), protocol=4))
    cache_repo(hub_cache, "org/pickled", files)
    if caller == "judge":
        samples = tmp_path / "samples.json"
        samples.write_text(json.dumps({"samples": TEXTS}))
        argv = ["eval-gen", "--samples", str(samples), "--judge", "hf:org/pickled", "--device", "cpu"]
        expected = "--judge hf:org/pickled: cannot load a causal LM + tokenizer ("
    elif caller == "energy":
        from test_cli import save_run

        from edlm.config import get_preset

        save_run(tmp_path / "run", get_preset("char-tiny"))
        argv = ["sample", "--run", str(tmp_path / "run"), "--num", "1", "--steps", "2", "--device", "cpu",
                "--energy", "hf:org/pickled"]
        expected = ("--energy hf:org/pickled: no model.safetensors (found pytorch_model.bin, a pickle-based file edlm "
                    "does not load); convert the weights to safetensors")
    else:
        argv = ["import-mdlm", "--hf", "org/pickled", "--out", str(tmp_path / "out"), "--tokenizer", "char"]
        expected = "/models--org--pickled/snapshots/"  # the existing message names the cached folder
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("edlm: error: ") and expected in err, err
    if caller == "import":
        assert ": no model.safetensors (found generation_config.json, pytorch_model.bin, " in err
    assert not marker.exists()


@pytest.mark.parametrize("caller", ["judge", "energy", "import"])
def test_an_unknown_name_offline_exits_2_naming_the_flag_and_name(hub_cache, tmp_path, caller, capsys):
    from test_cli import save_run

    from edlm.cli import main
    from edlm.config import get_preset

    if caller == "judge":
        samples = tmp_path / "samples.json"
        samples.write_text(json.dumps({"samples": TEXTS}))
        argv, flag = ["eval-gen", "--samples", str(samples), "--judge", "hf:org/unknown"], "--judge hf:"
    elif caller == "energy":
        save_run(tmp_path / "run", get_preset("char-tiny"))
        argv = ["sample", "--run", str(tmp_path / "run"), "--num", "1", "--steps", "2", "--energy", "hf:org/unknown"]
        flag = "--energy hf:"
    else:
        argv, flag = ["import-mdlm", "--hf", "org/unknown", "--out", str(tmp_path / "out")], "--hf "
    assert main(argv + ["--device", "cpu"] if caller != "import" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"edlm: error: {flag}org/unknown: no such folder, and 'org/unknown' could not be fetched "
                          f"from the Hugging Face Hub (")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["./nope", "a/b/c"])
def test_a_path_like_missing_source_never_reaches_the_hub_from_any_caller(source, tmp_path, no_hub):
    from edlm.checkpoint import CheckpointError
    from edlm.config import ModelConfig
    from edlm.energy import EnergyError, make_energy
    from edlm.evaluation.judges import GenerationEvalError, make_judge
    from edlm.training.importer import import_mdlm_hf

    with pytest.raises(GenerationEvalError, match=rf"^judge hf:{source}: no such folder$"):
        make_judge(f"hf:{source}")
    with pytest.raises(EnergyError, match=rf"^energy hf:{source}: no such folder$"):
        make_energy(f"hf:{source}", ModelConfig(vocab_size=28, seq_len=6))
    with pytest.raises(CheckpointError, match=rf"^hf {source}: no such folder$"):
        import_mdlm_hf(source, tmp_path / "out")
