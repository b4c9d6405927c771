"""Clear errors: every bad input exits 2 with one line naming the flag or file, and writes nothing partial.

The CLI runs in-process (``edlm.cli.main``) against one small corpus and one 10-step char-tiny run shared by
the module. ``EDLM_ERRORS_TABLE=docs/errors.md pytest tests/test_cli_errors.py`` also writes the table of
bad inputs and the messages they get (paths shown as DATA, RUN, TMP).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import edlm.checkpoint as checkpoint_module
from edlm.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
)
from edlm.cli import main
from edlm.config import get_preset
from edlm.data import prepare_corpus
from edlm.models import build_model

TEXT = ("the quick brown fox jumps over the lazy dog and the cat sat on the mat while the dog barked at "
        "the moon ") * 40
TRAIN = ["train", "--preset", "char-tiny", "--device", "cpu", "--no-progress"]


def make_run(path: Path, **model_changes) -> Path:
    """A run folder holding an untrained model of char-tiny with ``model_changes`` (no training needed)."""
    config = get_preset("char-tiny")
    config = replace(config, model=replace(config.model, **model_changes))
    path.mkdir(parents=True)
    write_json_atomic(path / "config.json", json.loads(config.to_json()))
    model = build_model(config.model)
    save_checkpoint(path, 1, model.state_dict(), model.state_dict(), None, {})
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs for every case: a corpus, a trained run, broken copies of it, bad files."""
    root = tmp_path_factory.mktemp("cli")
    (root / "text.txt").write_text(TEXT)
    prepare_corpus("files", root / "data", root / "text.txt")
    run = root / "run"
    assert main(TRAIN + ["--data", str(root / "data"), "--out", str(run), "--max-steps", "10",
                         "train.precision=fp32", "train.ckpt_every=5", "train.eval_every=10"]) == 0
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    (root / "binary.dat").write_bytes(b"\x00\x01\x02abc")
    (root / "a-file").write_text("a regular file, not a folder")
    (root / "short-train.txt").write_text("a b c d e f g h i j k l m n o")  # 29 chars: train split 26 < 32
    prepare_corpus("files", root / "short-train", root / "short-train.txt")
    (root / "short-val.txt").write_text("abcdefghijklmnopqrstuvwxyz " * 2)  # 53 chars: train 48, val 3
    prepare_corpus("files", root / "short-val", root / "short-val.txt")
    make_run(root / "ar-short", kind="ar", seq_len=16)
    make_run(root / "ar-vocab", kind="ar", vocab_size=30)
    (root / "not-a-run").mkdir()
    (root / "no-checkpoint").mkdir()
    shutil.copy(run / "config.json", root / "no-checkpoint" / "config.json")
    for name, damage in (("truncated", "truncate"), ("bitflip", "flip"), ("bad-state", "state")):
        copy = root / name
        shutil.copytree(run, copy)
        for step_dir in list_checkpoints(copy):
            weights = step_dir / "model.safetensors"
            if damage == "truncate":
                weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            elif damage == "flip":
                data = bytearray(weights.read_bytes())
                data[-10] ^= 0x01
                weights.write_bytes(bytes(data))
            else:
                (step_dir / "state.json").write_text('{"step": 5, "sha')
    incompatible = root / "incompatible"
    shutil.copytree(run, incompatible)
    config = json.loads((incompatible / "config.json").read_text())
    config["model"]["hidden"] = 128
    (incompatible / "config.json").write_text(json.dumps(config))
    (root / "bad-samples.json").write_text("{not json")
    assert main(["export-hf", str(run), str(root / "hf-old")]) == 0
    (root / "hf-old" / "tokenizer_meta.json").unlink()  # as exported before the tokenizer files were
    return {"root": root, "run": run, "data": root / "data", "run_snapshot": snapshot(run), "table": []}


# (case id, argv template, expected message fragment, paths that must not exist afterwards)
# Templates: {root} the module's tmp folder, {run} the trained run, {data} its corpus.
SAMPLE = ["sample", "--run", "{run}", "--num", "1", "--steps", "4", "--device", "cpu", "--out", "{root}/s.json"]
CASES = [
    # corpora
    ("missing corpus", ["data", "prepare", "--corpus", "files", "--path", "{root}/nope.txt", "--out", "{root}/o"],
     "--path {root}/nope.txt: no such file or folder", ["o"]),
    ("empty corpus", ["data", "prepare", "--corpus", "files", "--path", "{root}/empty.txt", "--out", "{root}/o"],
     "{root}/empty.txt: empty file; remove it or put text in it", ["o"]),
    ("binary file", ["data", "prepare", "--corpus", "files", "--path", "{root}/binary.dat", "--out", "{root}/o"],
     "{root}/binary.dat: looks binary (NUL byte at offset 0)", ["o"]),
    ("unknown corpus", ["data", "prepare", "--corpus", "wiki", "--out", "{root}/o"],
     "unknown corpus 'wiki'", ["o"]),
    ("data folder missing", TRAIN + ["--data", "{root}/nodata", "--out", "{root}/o"],
     "data dir {root}/nodata: no such folder; run `edlm data prepare` first", ["o"]),
    ("train split shorter than one sequence", TRAIN + ["--data", "{root}/short-train", "--out", "{root}/o"],
     "{root}/short-train: train split has 26 tokens, fewer than one sequence (model.seq_len=32)", ["o"]),
    ("val split shorter than one sequence", TRAIN + ["--data", "{root}/short-val", "--out", "{root}/o"],
     "{root}/short-val: val split has 2 tokens, fewer than one sequence (model.seq_len=32)", ["o"]),
    ("eval split shorter than one sequence", ["eval", "--run", "{run}", "--data", "{root}/short-val"],
     "--data {root}/short-val, test split: seq_len=32: split has 3 tokens, not enough for one evaluation chunk", []),
    # names
    ("unknown preset", TRAIN + ["--data", "{data}", "--out", "{root}/o", "--preset", "huge"],
     "unknown preset 'huge' (valid: char-tiny, char-small, text8-paper, bpe-small, owt-paper)", ["o"]),
    ("a value outside a setting's choices", TRAIN + ["--data", "{data}", "--out", "{root}/o", "train.precision=fp16"],
     "train.precision='fp16': expected one of bf16, fp32", ["o"]),
    ("a setting out of range", TRAIN + ["--data", "{data}", "--out", "{root}/o", "train.eval_every=0"],
     "train.eval_every must be >= 1", ["o"]),
    ("unknown model", TRAIN + ["--data", "{data}", "--out", "{root}/o", "--model", "gpt"],
     "--model 'gpt': unknown model (valid: mdlm, ar, nce)", ["o"]),
    ("unknown energy", SAMPLE + ["--energy", "bert:{run}"],
     "--energy 'bert:{run}': unknown energy 'bert' (valid: zero, ar:RUN_DIR, hf:DIR_OR_NAME, nce:RUN_DIR, "
     "law:DIR)", ["s.json"]),
    ("energy law folder missing", SAMPLE + ["--energy", "law:{root}/nolaw"],
     "--energy law:{root}/nolaw: {root}/nolaw: no such law folder; make one with `edlm law make`", ["s.json"]),
    ("energy without a folder", SAMPLE + ["--energy", "ar"], "--energy 'ar': expected ar:RUN_DIR", ["s.json"]),
    ("energy of the wrong kind", SAMPLE + ["--energy", "nce:{root}/ar-short"],
     "holds a 'ar' model, not 'nce'", ["s.json"]),
    # overrides
    ("override without =", TRAIN + ["--data", "{data}", "--out", "{root}/o", "train.lr"],
     "malformed override 'train.lr': expected section.key=value", ["o"]),
    ("override without section", TRAIN + ["--data", "{data}", "--out", "{root}/o", "lr=3"],
     "malformed override key 'lr': expected model.<field> or train.<field>", ["o"]),
    ("unknown override key", TRAIN + ["--data", "{data}", "--out", "{root}/o", "train.learning_rate=3"],
     "unknown config key train.learning_rate (valid: ", ["o"]),
    ("override value of the wrong type", TRAIN + ["--data", "{data}", "--out", "{root}/o", "train.lr=fast"],
     "override train.lr=fast: expected a float", ["o"]),
    ("inconsistent override", TRAIN + ["--data", "{data}", "--out", "{root}/o", "model.n_heads=3"],
     "model.hidden must be divisible by model.n_heads", ["o"]),
    # ranges (argparse, one line)
    ("--max-steps 0", TRAIN + ["--data", "{data}", "--out", "{root}/o", "--max-steps", "0"],
     "edlm train: error: argument --max-steps: --max-steps must be >= 1, got 0", ["o"]),
    ("--steps 0", SAMPLE + ["--steps", "0"], "edlm: error: --steps must be >= 1", ["s.json"]),
    ("--k 0", SAMPLE + ["--k", "0"], "edlm: error: --k must be >= 1", ["s.json"]),
    ("--length 0", SAMPLE + ["--length", "0"], "edlm: error: --length must be >= 1", ["s.json"]),
    ("--length above seq_len", SAMPLE + ["--length", "64"],
     "--length 64: longer than the model's sequence length 32", ["s.json"]),
    ("--temperature 0", SAMPLE + ["--temperature", "0"],
     "edlm: error: --temperature must be > 0", ["s.json"]),
    ("--temperature not a number", SAMPLE + ["--temperature", "hot"],
     "argument --temperature: --temperature must be a number, got 'hot'", ["s.json"]),
    ("--top-p 1.5", SAMPLE + ["--top-p", "1.5"], "edlm: error: --top-p must be in (0, 1]",
     ["s.json"]),
    ("--top-p 0", SAMPLE + ["--top-p", "0"], "edlm: error: --top-p must be in (0, 1]", ["s.json"]),
    ("--window 2", SAMPLE + ["--window", "2"], "edlm: error: --window must be in [0, 1]",
     ["s.json"]),
    ("--window -0.1", SAMPLE + ["--window", "-0.1"], "edlm: error: --window must be in [0, 1]",
     ["s.json"]),
    ("eval --k 0", ["eval", "--run", "{run}", "--data", "{data}", "--k", "0"], "edlm: error: --k must be >= 1", []),
    ("eval --steps 0", ["eval", "--run", "{run}", "--data", "{data}", "--steps", "0"],
     "edlm: error: --steps must be >= 1", []),
    ("eval --window 1.5", ["eval", "--run", "{run}", "--data", "{data}", "--window", "1.5"],
     "edlm: error: --window must be in [0, 1]", []),
    # prompts
    ("prompt longer than the sequence", SAMPLE + ["--prompt", "x" * 40],
     "--prompt is 40 characters after normalisation, longer than the sequence length 32", ["s.json"]),
    ("infill longer than the sequence", SAMPLE + ["--infill", "ab_" * 12],
     "--infill is 36 characters after normalisation, longer than the sequence length 32", ["s.json"]),
    # energy vs denoiser
    ("energy with a shorter sequence length", SAMPLE + ["--energy", "ar:{root}/ar-short"],
     "{root}/ar-short: energy model seq_len 16 is shorter than the denoiser's 32", ["s.json"]),
    ("energy with another vocabulary", SAMPLE + ["--energy", "ar:{root}/ar-vocab"],
     "{root}/ar-vocab: energy model has vocab_size 30, the denoiser has 27; they must share a tokenizer",
     ["s.json"]),
    # run folders and checkpoints
    ("run folder missing", ["sample", "--run", "{root}/nowhere"],
     "{root}/nowhere/config.json: missing; is {root}/nowhere a run folder made by `edlm train`?", []),
    ("folder that is not a run", ["eval", "--run", "{root}/not-a-run", "--data", "{data}"],
     "{root}/not-a-run/config.json: missing", []),
    ("run folder without a checkpoint", SAMPLE[:2] + ["{root}/no-checkpoint"] + SAMPLE[3:],
     "{root}/no-checkpoint: no valid checkpoint in {root}/no-checkpoint/checkpoints", ["s.json"]),
    ("truncated checkpoint file", ["sample", "--run", "{root}/truncated"],
     "no valid checkpoint among the 2 in {root}/truncated/checkpoints; newest: "
     "{root}/truncated/checkpoints/step-00000010/model.safetensors: checksum mismatch (truncated or corrupted)", []),
    ("corrupted checkpoint file (one bit)", ["eval", "--run", "{root}/bitflip", "--data", "{data}"],
     "{root}/bitflip/checkpoints/step-00000010/model.safetensors: checksum mismatch", []),
    ("truncated state.json", ["sample", "--run", "{root}/bad-state"],
     "{root}/bad-state/checkpoints/step-00000010/state.json: not valid JSON", []),
    ("checkpoint from an incompatible config", ["sample", "--run", "{root}/incompatible"],
     "{root}/incompatible/checkpoints/step-00000010/model.safetensors: vocab_embed.embedding has shape (28, 64) "
     "but {root}/incompatible/config.json gives (28, 128) (incompatible config)", []),
    ("--resume with changed model settings", TRAIN + ["--data", "{data}", "--out", "{run}", "--resume",
                                                     "model.n_layers=3"],
     "--resume: model.n_layers differ from {run}/config.json; start a new run folder instead", []),
    ("--resume with a changed global batch", TRAIN + ["--data", "{data}", "--out", "{run}", "--resume",
                                                     "train.batch_size=8"],
     "--resume: train.batch_size differ from {run}/config.json", []),
    ("--resume of a folder that holds no run", TRAIN + ["--data", "{data}", "--out", "{root}/o", "--resume"],
     "--resume: {root}/o holds no run (no config.json); start it without resuming", ["o"]),
    ("a model.tokenizer override the data contradicts", TRAIN + ["--data", "{data}", "--out", "{root}/o",
                                                                 "model.tokenizer=gpt2"],
     "model.tokenizer=gpt2: --data {data} uses the char tokenizer (drop the override", ["o"]),
    ("training into a used folder without --resume", TRAIN + ["--data", "{data}", "--out", "{run}"],
     "--out {run} already holds checkpoints: resume it, or choose a new folder", []),
    # outputs
    ("train --out not writable", TRAIN + ["--data", "{data}", "--out", "{root}/a-file/run"],
     "--out {root}/a-file/run: not writable ({root}/a-file is not a writable folder)", []),
    ("data --out not writable", ["data", "prepare", "--corpus", "files", "--path", "{root}/text.txt", "--out",
                                 "{root}/a-file/data"],
     "--out {root}/a-file/data: not a writable folder (Not a directory)", []),
    ("sample --out not writable", SAMPLE[:-1] + ["{root}/a-file/s.json"],
     "--out {root}/a-file/s.json: not writable ({root}/a-file is not a writable folder)", []),
    ("import-mdlm --out not writable", ["import-mdlm", "--ckpt", "{root}/m.safetensors", "--out",
                                        "{root}/a-file/run", "--preset", "char-tiny"],
     "--out {root}/a-file/run: not writable ({root}/a-file is not a writable folder)", []),
    # other commands
    ("import-mdlm --hf: a size no named tokenizer fits", ["import-mdlm", "--hf", "{root}/hf-old", "--out",
                                                          "{root}/o"],
     "--hf {root}/hf-old/config.json: vocab_size 28 is not the gpt2 tokenizer's 50257 tokens + [MASK]; pass "
     "--tokenizer NAME", ["o"]),
    ("law make with more successors than symbols", ["law", "make", "--support", "40", "--out", "{root}/law"],
     "--support 40: need 1 <= support <= vocab (27)", ["law"]),
    ("law corpus folder missing", ["data", "prepare", "--corpus", "law:{root}/nolaw", "--out", "{root}/o"],
     "--corpus law:{root}/nolaw: {root}/nolaw: no such law folder", ["o"]),
    ("eval-gen with neither judge nor law", ["eval-gen", "--samples", "{root}/bad-samples.json"],
     "eval-gen needs --judge (a judge model) and/or --law DIR (a known law)", []),
    ("eval-gen samples missing", ["eval-gen", "--samples", "{root}/none.json", "--judge", "run:{run}"],
     "--samples {root}/none.json: no such file", []),
    ("eval-gen samples not JSON", ["eval-gen", "--samples", "{root}/bad-samples.json", "--judge", "run:{run}"],
     "--samples {root}/bad-samples.json: not valid JSON", []),
    ("--device cuda without CUDA", SAMPLE + ["--device", "cuda"], "--device cuda: CUDA is not available", ["s.json"]),
]


def fill(template: str, world) -> str:
    return template.format(root=world["root"], run=world["run"], data=world["data"])


@pytest.mark.parametrize("case, argv, expected, absent", CASES, ids=[case[0] for case in CASES])
def test_bad_input_exits_2_with_one_line(world, capsys, case, argv, expected, absent):
    if case == "--device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if case.startswith("import-mdlm"):
        from safetensors.torch import save_file

        model = build_model(get_preset("char-tiny").model)
        save_file({f"backbone.{k}": v for k, v in model.state_dict().items()}, world["root"] / "m.safetensors")
    capsys.readouterr()
    code = run_cli([fill(part, world) for part in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (case, captured.err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("edlm") and ": error: " in lines[0]
    assert fill(expected, world) in lines[0], (lines[0], fill(expected, world))
    assert "Traceback" not in captured.err + captured.out
    for name in absent:
        assert not (world["root"] / name).exists(), f"{case}: left {name} behind"
    assert snapshot(world["run"]) == world["run_snapshot"], f"{case}: modified the run folder"
    assert not list(world["root"].rglob("*.tmp-*")), f"{case}: left a temporary file"
    shown = lines[0].replace(str(world["run"]), "RUN").replace(str(world["data"]), "DATA")
    world["table"].append((case, " ".join(part.replace("{run}", "RUN").replace("{data}", "DATA")
                                          .replace("{root}/", "TMP/") for part in argv), shown
                           .replace(str(world["root"]), "TMP")))


def run_cli(argv: list[str]) -> int:
    """``edlm ARGV`` in-process; argparse errors arrive as SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def test_prompt_outside_the_vocabulary_is_normalised_with_a_note(world, capsys):
    """Characters outside a-z/space are not an error: the prompt is normalised like the corpus (accents
    folded, lowercase, digits spelled out, anything else -> space), a note says so, and it is kept verbatim
    in the samples."""
    code = main([fill(p, world) for p in SAMPLE[:-2]] + ["--prompt", "Héllo, World 42!", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.strip() == ("edlm: note: --prompt: normalised to 'hello world four two' (the model "
                                    "knows only a-z and space)")
    assert json.loads(captured.out)["samples"][0].startswith("hello world four two")
    code = main([fill(p, world) for p in SAMPLE[:-2]] + ["--infill", "Zoë __ café", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "edlm: note: --infill: normalised to 'zoe __ cafe'" in captured.err
    sample = json.loads(captured.out)["samples"][0]
    assert sample[:4] == "zoe " and sample[6:11] == " cafe"  # the template keeps its positions


def test_disk_full_during_a_save(world, tmp_path, monkeypatch, capsys):
    """ENOSPC in the middle of the second checkpoint: one clear line, no partial folder, the first intact."""
    real_save, calls = checkpoint_module.save_file, {"n": 0}

    def save_file(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # ema.safetensors of the second checkpoint
            with open(filename, "wb") as handle:
                handle.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)
    run = tmp_path / "run"
    code = main(TRAIN + ["--data", str(world["data"]), "--out", str(run), "--max-steps", "10",
                         "train.precision=fp32", "train.ckpt_every=5", "train.eval_every=10"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0] == (f"edlm: error: {run}/checkpoints/step-00000010: cannot write checkpoint (No space left on "
                        f"device); nothing partial was kept, earlier checkpoints are intact")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000005"]
    assert load_checkpoint(run / "checkpoints" / "step-00000005").step == 5
    world["table"].append(("disk full during a checkpoint save (simulated ENOSPC)", "train ... (2nd save fails)",
                           lines[0].replace(str(tmp_path), "TMP")))


def test_debug_shows_the_traceback_and_the_console_script_prints_one_line(world, tmp_path):
    argv = ["-m", "edlm", "train", "--data", str(world["data"]), "--out", str(tmp_path / "o"), "--preset", "huge"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    plain = subprocess.run([sys.executable] + argv, capture_output=True, text=True, env=env, timeout=60)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == ["edlm: error: unknown preset 'huge' (valid: char-tiny, char-small, "
                                                 "text8-paper, bpe-small, owt-paper)"]
    with pytest.raises(Exception, match="unknown preset 'huge'"):
        main(["--debug"] + argv[2:])
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module", autouse=True)
def errors_table(world):
    """With EDLM_ERRORS_TABLE=FILE, write the markdown table of the messages seen by this module."""
    yield
    target = os.environ.get("EDLM_ERRORS_TABLE")
    if not target or not world["table"]:
        return
    lines = ["# Bad inputs and the errors they get", "",
             "Generated by `EDLM_ERRORS_TABLE=docs/errors.md pytest tests/test_cli_errors.py` from the real "
             "messages. Every row exits with status 2, prints exactly one line on stderr (a traceback only with "
             "`edlm --debug`), and leaves no partial output. DATA is a prepared corpus, RUN a trained run, TMP a "
             "scratch folder.", "",
             "Characters outside the vocabulary in `--prompt`/`--infill` are not an error: they are normalised "
             "like the corpus (accents folded, lowercase, digits spelled out, anything else becomes a space) and "
             "a note says so, e.g. `edlm: note: --prompt: normalised to 'hello world four two' (the model knows "
             "only a-z and space)`.", "",
             "| bad input | command | message |", "|---|---|---|"]
    for case, command, message in world["table"]:
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731
        lines.append(f"| {cell(case)} | `` {cell(command)} `` | `` {cell(message)} `` |")
    Path(target).write_text("\n".join(lines) + "\n")


def test_internal_errors_keep_their_traceback(monkeypatch):
    """A ValueError that is not an edlm user error is a bug: it must propagate (traceback), not exit 2."""
    import edlm.commands

    def broken(args):
        raise ValueError("internal: tensors on different devices")

    monkeypatch.setitem(edlm.commands.COMMANDS, "eval-gen", broken)
    with pytest.raises(ValueError, match="different devices"):
        main(["eval-gen", "--samples", "x.json", "--judge", "run:x"])


def test_os_error_on_a_user_path_is_one_line(monkeypatch, capsys):
    import edlm.commands

    def missing(args):
        raise FileNotFoundError(2, "No such file or directory", "samples.json")

    monkeypatch.setitem(edlm.commands.COMMANDS, "eval-gen", missing)
    assert main(["eval-gen", "--samples", "x.json", "--judge", "run:x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "edlm: error: [Errno 2] No such file or directory: 'samples.json'"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_before_or_after_the_subcommand(tmp_path, where):
    argv = ["data", "prepare", "--corpus", "wiki", "--out", str(tmp_path / "never")]
    argv = ["--debug"] + argv if where == "before" else argv + ["--debug"]
    with pytest.raises(Exception, match="unknown corpus 'wiki'"):
        main(argv)
