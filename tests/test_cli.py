"""Flags generated from frozen config dataclasses: one default and one help text, written in the config."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest
from optional import needs_bpe, needs_gpt2

from edlm.cli import build_parser, main
from edlm.flags import add_config_flags, config_from_args


@dataclass(frozen=True)
class ToyConfig:
    steps: int = field(default=64, metadata={"help": "number of reverse steps T"})
    window: float = field(default=0.2, metadata={"help": "importance-sampling window"})
    mode: Literal["coar", "full"] = field(default="coar", metadata={"help": "AR energy mode"})
    prompt: str | None = field(default=None, metadata={"help": "fixed prefix"})
    cached: bool = field(default=True, metadata={"help": "reuse denoiser outputs"})


def save_run(path, config, step=1, noise=0.0):
    """A run folder holding ``config`` and one checkpoint of a freshly built model; ``noise`` > 0 perturbs every
    weight (the zero-initialised output layer alone would make every logit 0). Returns the model."""
    import json

    import torch

    from edlm.checkpoint import save_checkpoint
    from edlm.fileio import write_json_atomic
    from edlm.models import build_model

    path.mkdir()
    write_json_atomic(path / "config.json", json.loads(config.to_json()))
    torch.manual_seed(0)
    model = build_model(config.model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(noise * torch.randn_like(parameter))
    save_checkpoint(path, step, model.state_dict(), model.state_dict(), None, {})
    return model


def parser_for(config_class) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser, config_class)
    return parser


def test_defaults_come_from_the_config():
    assert config_from_args(ToyConfig, parser_for(ToyConfig).parse_args([])) == ToyConfig()


def test_flags_override_fields_with_types_and_choices():
    args = parser_for(ToyConfig).parse_args(["--steps", "8", "--window", "1.0", "--mode", "full", "--prompt",
                                             "to be ", "--no-cached"])
    assert config_from_args(ToyConfig, args) == ToyConfig(8, 1.0, "full", "to be ", False)
    with pytest.raises(SystemExit):
        parser_for(ToyConfig).parse_args(["--mode", "half"])
    with pytest.raises(SystemExit):
        parser_for(ToyConfig).parse_args(["--steps", "eight"])


def test_help_shows_each_flag_with_its_text_and_default():
    text = parser_for(ToyConfig).format_help()
    for expected in ("--steps STEPS", "number of reverse steps T (default: 64)", "importance-sampling window "
                     "(default: 0.2)", "--cached, --no-cached"):
        assert expected in " ".join(text.split()), expected


@pytest.mark.parametrize("command", ["data prepare", "law make", "train", "eval", "sample", "eval-gen", "import-mdlm",
                                     "export-hf", "demo"])
def test_every_flag_of_every_command_has_help(command):
    """No flag without an explanation: `edlm CMD --help` lists a text for each option."""
    parser = build_parser()
    for word in command.split():
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.dest != "help" and not (a.help or "").strip()]
    assert not missing, f"edlm {command}: flags without help: {missing}"


def test_export_hf_then_import_hf_through_the_cli_gives_the_same_logits(tmp_path, capsys):
    import torch

    from edlm.checkpoint import load_model
    from edlm.cli import main
    from edlm.config import get_preset

    config = get_preset("char-tiny")
    run = tmp_path / "run"
    save_run(run, config, step=3, noise=0.02)
    assert main(["export-hf", str(run), str(tmp_path / "hf")]) == 0
    assert main(["import-mdlm", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back"), "--tokenizer", "char",
                 "--preset", "char-tiny"]) == 0
    _, original = load_model(run)
    _, imported = load_model(tmp_path / "back")
    tokens = torch.randint(0, config.model.vocab_size + 1, (2, config.model.seq_len))
    with torch.no_grad():
        assert torch.equal(original(tokens), imported(tokens))


def test_a_bpe_run_round_trips_through_export_hf_and_import_mdlm(tiny_bpe_run, tmp_path, capsys):
    """export-hf writes the run's tokenizer files beside the weights and import-mdlm --hf takes them back: the
    re-imported run samples the same text. A folder whose size fits no tokenizer it can name asks for --tokenizer."""
    import json

    from edlm.cli import main

    run, _ = tiny_bpe_run
    hf = tmp_path / "hf"
    assert main(["export-hf", str(run), str(hf)]) == 0
    assert (hf / "tokenizer.json").is_file() and (hf / "tokenizer_meta.json").is_file()
    back = tmp_path / "back"
    assert main(["import-mdlm", "--hf", str(hf), "--out", str(back), "--preset", "char-tiny"]) == 0
    assert json.loads((back / "config.json").read_text())["model"]["tokenizer"] == "bpe:300"
    samples = []
    for folder in (run, back):
        capsys.readouterr()
        assert main(["sample", "--run", str(folder), "--num", "2", "--steps", "4", "--device", "cpu", "--json"]) == 0
        samples.append(json.loads(capsys.readouterr().out)["samples"])
    assert samples[0] == samples[1] and any(text.strip() for text in samples[0])
    assert main(["import-mdlm", "--hf", str(hf), "--out", str(tmp_path / "char"), "--tokenizer", "char"]) == 2
    assert "--tokenizer char" in capsys.readouterr().err
    for name in ("tokenizer.json", "tokenizer_meta.json"):  # an export from before the tokenizer files
        (hf / name).unlink()
    assert main(["import-mdlm", "--hf", str(hf), "--out", str(tmp_path / "old")]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_import_needs_exactly_one_source(tmp_path):
    from edlm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["import-mdlm", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["import-mdlm", "--ckpt", "a.ckpt", "--hf", "dir", "--out", str(tmp_path / "x")])


TINY_TRAIN = ["--max-steps", "1", "--no-progress", "--device", "cpu", "model.seq_len=16", "model.hidden=32",
              "model.n_layers=1", "train.batch_size=4", "train.eval_batches=1", "train.precision=fp32"]


def test_a_preset_is_a_model_size_the_tokenizer_comes_from_the_data(tiny_data, tmp_path, capsys):
    """--preset bpe-small on char data trains a char model (vocabulary from the data) and says in one note that
    the preset was tuned for another tokenizer; an explicit model.tokenizer that contradicts the data is refused."""
    import json

    from edlm.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--preset", "bpe-small", "--out", str(run)] + TINY_TRAIN) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("edlm: note:")]
    assert len(notes) == 1 and "--preset bpe-small was tuned for the bpe:4096 tokenizer" in notes[0], err
    assert "char" in notes[0]
    model = json.loads((run / "config.json").read_text())["model"]
    assert (model["tokenizer"], model["vocab_size"]) == ("char", 27)
    assert main(["train", "--data", str(tiny_data), "--preset", "char-tiny", "--out", str(tmp_path / "same")]
                + TINY_TRAIN) == 0
    assert "edlm: note:" not in capsys.readouterr().err  # the preset's own tokenizer: nothing to say
    assert main(["train", "--data", str(tiny_data), "--preset", "char-tiny", "--out", str(tmp_path / "bad")]
                + TINY_TRAIN + ["model.tokenizer=gpt2"]) == 2
    assert "model.tokenizer=gpt2" in capsys.readouterr().err


@needs_bpe
def test_bpe_small_trains_on_a_smaller_bpe(tmp_path, capsys):
    """bpe:N data of any N (and a trained BPE that ended with fewer tokens) trains with --preset bpe-small."""
    import json

    from conftest import TEXT

    from edlm.cli import main

    (tmp_path / "text.txt").write_text(TEXT)
    data = tmp_path / "data"
    assert main(["data", "prepare", "--corpus", "files", "--path", str(tmp_path / "text.txt"), "--tokenizer",
                 "bpe:300", "--out", str(data), "--no-progress"]) == 0
    meta = json.loads((data / "meta.json").read_text())["tokenizer"]
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--preset", "bpe-small", "--out", str(run)] + TINY_TRAIN) == 0
    assert "tuned for the bpe:4096 tokenizer" in capsys.readouterr().err
    model = json.loads((run / "config.json").read_text())["model"]
    assert (model["tokenizer"], model["vocab_size"]) == ("bpe:300", meta["vocab_size"])


@needs_gpt2
def test_subword_data_trains_with_a_char_preset_and_reports_bits_per_character(tmp_path, capsys):
    """gpt2 data: a char-size preset trains a gpt2 model, which evaluates and reports bits per character beside
    bits per token (chars per token > 1)."""
    import json

    from edlm.cli import main

    text = tmp_path / "docs.jsonl"
    text.write_text("\n".join(json.dumps({"text": f"Document {i}: The cat sat on the mat, again and again."})
                              for i in range(60)))
    data = tmp_path / "data"
    assert main(["data", "prepare", "--corpus", "files", "--path", str(text), "--tokenizer", "gpt2", "--out",
                 str(data), "--no-progress"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--preset", "char-tiny", "--out", str(run), "--max-steps", "2",
                 "--no-progress", "model.seq_len=16", "model.hidden=32",
                 "train.batch_size=4", "train.eval_batches=1", "train.precision=fp32"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(data), "--split", "val", "--t-samples", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["chars_per_token"] > 2.0
    assert abs(result["bpc"] * result["chars_per_token"] - result["nll_nats"] / 0.6931471805599453) < 1e-6


@needs_gpt2
def test_run_judge_scores_subword_text_with_the_runs_tokenizer(tmp_path):
    """A gpt2 AR run as judge: its NLL of a text equals the AR loss of the text's GPT-2 ids, and bits per
    character divide by characters, not tokens."""
    from dataclasses import replace

    import torch

    from edlm.config import get_preset
    from edlm.data.tokenizers import get_tokenizer
    from edlm.evaluation.judges import make_judge
    from edlm.models.ar import ar_loss

    config = get_preset("char-tiny")
    config = replace(config, model=replace(config.model, kind="ar", tokenizer="gpt2", vocab_size=50257,
                                           hidden=32, n_layers=1))
    run = tmp_path / "judge"
    model = save_run(run, config, noise=0.05)
    judge = make_judge(f"run:{run}", "cpu")
    text = "Hello world, the cat sat."
    ids = torch.tensor(get_tokenizer("gpt2").encode(text), dtype=torch.long)[None]
    total, tokens, characters = judge.nll([text])[0]
    with torch.no_grad():
        expected = float(ar_loss(model.eval(), ids, config.model.mask_id)[0]) * ids.shape[1]
    assert (tokens, characters) == (ids.shape[1], len(text)) and tokens < characters
    assert abs(total - expected) < 1e-3


def test_an_energy_run_with_another_tokenizer_is_refused(tmp_path):
    from dataclasses import replace

    from edlm.config import get_preset
    from edlm.data.tokenizers import TokenizerMismatchError, get_tokenizer
    from edlm.energy import make_energy

    config = get_preset("char-tiny")
    ar_config = replace(config, model=replace(config.model, kind="ar"))
    run = tmp_path / "ar"
    save_run(run, ar_config)
    assert make_energy(f"ar:{run}", config.model, tokenizer=get_tokenizer("char")) is not None

    class OtherTokenizer:  # same size as the alphabet, another vocabulary
        name = "bpe:27"

        def to_meta(self):
            return {"name": "bpe:27", "vocab_size": 27, "fingerprint": "0" * 64}

    with pytest.raises(TokenizerMismatchError, match="tokenizer mismatch"):
        make_energy(f"ar:{run}", config.model, tokenizer=OtherTokenizer())



@needs_gpt2
def test_subword_runs_sample_decode_and_judge_through_the_cli(tmp_path, capsys):
    """gpt2 data end to end on tiny models: MDLM and AR samples are decoded GPT-2 text (no [MASK] id leaks into
    decoding), and eval-gen scores them with a gpt2 AR judge."""
    import json

    from edlm.cli import main

    text = tmp_path / "docs.jsonl"
    text.write_text("\n".join(json.dumps({"text": f"Line {i}: the cat sat on the mat."}) for i in range(60)))
    data = tmp_path / "data"
    assert main(["data", "prepare", "--corpus", "files", "--path", str(text), "--tokenizer", "gpt2", "--out",
                 str(data), "--no-progress"]) == 0
    small = ["--no-progress", "--max-steps", "2", "model.tokenizer=gpt2", "model.seq_len=16", "model.hidden=32",
             "model.n_layers=1", "train.batch_size=4", "train.eval_batches=1", "train.precision=fp32"]
    for kind in ("mdlm", "ar"):
        assert main(["train", "--data", str(data), "--preset", "char-tiny", "--model", kind, "--out",
                     str(tmp_path / kind)] + small) == 0
    for kind in ("mdlm", "ar"):
        capsys.readouterr()
        assert main(["sample", "--run", str(tmp_path / kind), "--num", "2", "--steps", "4", "--prompt", "Line",
                     "--out", str(tmp_path / f"{kind}.json"), "--json"]) == 0
        record = json.loads((tmp_path / f"{kind}.json").read_text())
        assert record["tokenizer"] == "gpt2" and all(s.startswith("Line") for s in record["samples"])
    capsys.readouterr()
    assert main(["eval-gen", "--samples", str(tmp_path / "mdlm.json"), "--judge", f"run:{tmp_path / 'ar'}",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["characters"] > result["judge_tokens"] > 0


def test_a_library_caller_gets_the_same_choice_check_as_the_flags():
    """argparse offers choices on the command line; a SampleConfig built in Python is checked the same way."""
    from edlm.config import ConfigError
    from edlm.sampling import SampleConfig

    with pytest.raises(ConfigError, match=r"^precision 'fp16': expected one of fp32, bf16$") as caught:
        SampleConfig(precision="fp16")
    assert caught.value.flag_message() == "--precision 'fp16': expected one of fp32, bf16"  # what the CLI prints
    with pytest.raises(ConfigError, match=r"^energy_mode 'half': expected one of coar, full$") as caught:
        SampleConfig(energy_mode="half")
    assert caught.value.flag_message() == "--energy-mode 'half': expected one of coar, full"
    with pytest.raises(ConfigError, match=r"^remask 'sometimes': expected one of cap, rescale, conf"):
        SampleConfig.of(sampler="remdm", remask="sometimes")
    assert SampleConfig.of(sampler="remdm", remask="loop").options_for().remask == "loop"


def test_eval_with_an_hf_energy_checks_its_tokenizer_against_the_runs(tmp_path, tiny_data, capsys):
    """Issue 19 item 7: ``edlm eval --energy hf:DIR`` compared vocabulary sizes only, never the ids."""
    pytest.importorskip("transformers")
    import torch
    import transformers
    from tokenizers import Tokenizer, models

    from edlm.config import get_preset
    from edlm.data import ALPHABET

    vocab = {char: index for index, char in enumerate(reversed(ALPHABET))}  # 27 tokens, other ids
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=" ")), unk_token=" ")
    folder = tmp_path / "hf"
    wrapped.save_pretrained(str(folder))
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=27, n_positions=32, n_embd=16, n_layer=1,
                                                         n_head=2, bos_token_id=0, eos_token_id=0)
                                 ).save_pretrained(str(folder))
    run = tmp_path / "mdlm"
    save_run(run, get_preset("char-tiny"), noise=0.05)
    argv = ["eval", "--run", str(run), "--data", str(tiny_data), "--energy", f"hf:{folder}", "--max-sequences",
            "2", "--json", "--device", "cpu"]
    assert main(argv) == 2
    assert "encodes a probe text differently" in capsys.readouterr().err
