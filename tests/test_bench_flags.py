"""The flags of every registered benchmark (``edlm.bench``): each flag's ``--help`` shows its default and
choices, the sampler and method flags list the valid names, ``--help`` runs, and ``edlm bench --help`` lists
every benchmark.
"""

import pytest


def bench_parsers(monkeypatch) -> dict:
    """{name: parser} of every registered benchmark, caught when its main parses its flags (nothing runs)."""
    from edlm.bench import BENCHES, run_bench
    from edlm.flags import OneLineParser

    class Parsed(Exception):
        pass

    parsers = {}

    def catch(parser, args=None, namespace=None):
        parsers[name] = parser
        raise Parsed

    monkeypatch.setattr(OneLineParser, "parse_args", catch)
    for name in BENCHES:
        with pytest.raises(Parsed):
            run_bench(name, [])
    return parsers


def flag_help(parser, flag: str) -> str:
    """The help of one flag as ``--help`` prints it, whitespace collapsed."""
    action = next(a for a in parser._actions if flag in a.option_strings)
    return " ".join(parser._get_formatter()._format_action(action).split())


def test_every_bench_help_shows_each_flags_default_and_choices(monkeypatch, capsys):
    import argparse

    from edlm.bench import BENCHES, run_bench

    for name, parser in bench_parsers(monkeypatch).items():
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = flag_help(parser, action.option_strings[0])
            if action.default not in (None, False, argparse.SUPPRESS):
                default = action.default
                shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
                assert f"default: {shown}" in text, (name, text)
            for choice in action.choices or ():
                assert str(choice) in text, (name, choice, text)
    monkeypatch.undo()
    for name in BENCHES:  # and --help itself runs
        with pytest.raises(SystemExit) as info:
            run_bench(name, ["--help"])
        assert info.value.code == 0 and "usage" in capsys.readouterr().out


def test_bench_help_lists_the_valid_samplers_and_methods(monkeypatch):
    from edlm.bench.quality import method_grid
    from edlm.sampling import SAMPLERS

    parsers = bench_parsers(monkeypatch)
    for name in ("quality", "sampling"):
        text = flag_help(parsers[name], "--samplers")
        assert all(sampler in text for sampler in SAMPLERS), (name, text)
    text = flag_help(parsers["quality"], "--methods")
    assert all(method.name in text for method in method_grid("full", [], True, 256)), text


def test_edlm_bench_help_lists_every_benchmark(capsys):
    from edlm.bench import BENCHES
    from edlm.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in BENCHES), out
