"""The ``edlm eval-gen`` command: its JSON and text reports, MAUVE against whole validation rows, the warning
when the judge is the energy model, exit code 2 with the file or flag named for bad samples files, bad judges
and a char judge on subword samples, and the whole pipeline from ``edlm sample`` to ``edlm eval-gen``.
"""

from __future__ import annotations

import json

import pytest
from toys import SENTENCE

from edlm.evaluation.generation import GenerationEvalError, read_samples


# ----------------------------------------------------------------------------------------------------------
# the command line


def test_cli_eval_gen_json(ar_run, tmp_path, capsys):
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": [SENTENCE, "aab ab a b"], "run": "somewhere", "model": "mdlm"}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("gen_ppl", "entropy_bits", "entropy_nats", "num_samples", "judge_bpc", "distinct", "nll_spread"):
        assert key in result
    assert result["num_samples"] == 2 and result["sampler_model"] == "mdlm"
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 0
    assert "gen PPL" in capsys.readouterr().out


def test_cli_eval_gen_mauve_against_whole_validation_rows(ar_run, tiny_data, tmp_path, capsys):
    pytest.importorskip("mauve")
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    texts = [SENTENCE[:30], "aab ab a b aab ab a b aab ab a ", "the cat sat on the mat while th", "abc abc abc "]
    samples.write_text(json.dumps({"samples": texts, "length": 31, "tokenizer": "char"}))
    argv = ["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--mauve", "--reference",
            str(tiny_data), "--mauve-seeds", "0,1,2", "--mauve-resamples", "5", "--bootstrap", "100", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["mauve"]["seeds"] == [0, 1, 2] and 0.0 <= result["mauve"]["mauve"] <= 1.0
    assert "last token" in result["mauve"]["features"] and result["mauve"]["num_references"] == 4
    assert result["mauve"]["reference"] == {"data": str(tiny_data), "split": "val", "rows": 4, "row_tokens": 31,
                                            "seed": 0}
    assert {"gen_ppl", "judge_bpc", "entropy_bits", "entropy", "mauve"} <= set(result["ci95"])
    assert "MAUVE on 4 samples" in captured.err
    assert main(argv[:-1]) == 0 and "MAUVE" in capsys.readouterr().out
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--mauve"]) == 2
    assert "--mauve needs --reference" in capsys.readouterr().err
    samples.write_text(json.dumps({"samples": texts}))  # no length: MAUVE's rows cannot be cut
    assert main(argv) == 2 and "--samples" in capsys.readouterr().err


def test_cli_eval_gen_warns_when_the_judge_is_the_energy(ar_run, tmp_path, capsys):
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": [SENTENCE], "settings": {"energy": f"ar:{ar_run[0]}"}}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}", "--json"]) == 0
    assert "is the energy model" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("not json {", "not valid JSON"), ('{"texts": ["a"]}', 'no "samples"'), ('{"samples": []}', "empty"),
    ('{"samples": ["a", 3]}', "samples[1]")])
def test_cli_bad_samples_file_exits_2(ar_run, tmp_path, capsys, content, message):
    from edlm.cli import main

    samples = tmp_path / "bad.json"
    samples.write_text(content)
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 2
    err = capsys.readouterr().err
    assert str(samples) in err and message in err
    with pytest.raises(GenerationEvalError, match="no such file"):
        read_samples(tmp_path / "missing.json")


def test_cli_bad_judge_exits_2(tmp_path, capsys):
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": [SENTENCE]}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", "gpt2:large"]) == 2
    assert "unknown judge kind" in capsys.readouterr().err
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"hf:{tmp_path / 'nowhere'}"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_cli_sample_ar_then_eval_gen(ar_run, tmp_path, capsys):
    """The whole pipeline: `edlm sample` from the AR run (prompted), then `edlm eval-gen` on its output."""
    from edlm.cli import main

    out = tmp_path / "ar_samples.json"
    assert main(["sample", "--run", str(ar_run[0]), "--num", "3", "--length", "20", "--prompt", "The",
                 "--batch-size", "2", "--out", str(out), "--json", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["nfe"] == 2 * 17 and all(len(t) == 20 and t.startswith("the") for t in record["samples"])
    assert main(["eval-gen", "--samples", str(out), "--judge", f"run:{ar_run[0]}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == 3 and result["characters"] == 60 and result["sampler_model"] == "ar"


def test_a_char_judge_on_subword_samples_names_the_tokenizer_mismatch(ar_run, tmp_path, capsys):
    """Issue 21 item 10: it said "character '\\n' ... not in the judge's alphabet"."""
    from edlm.cli import main

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": ["Hello there,\nworld<|endoftext|>"], "tokenizer": "gpt2"}))
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer mismatch" in err and "gpt2" in err and "char" in err
    samples.write_text(json.dumps({"samples": ["Hello there,\nworld"]}))  # no tokenizer recorded
    assert main(["eval-gen", "--samples", str(samples), "--judge", f"run:{ar_run[0]}"]) == 2
    assert "the judge reads only the 27-symbol alphabet" in capsys.readouterr().err
