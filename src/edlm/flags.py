"""Command-line flags generated from frozen config dataclasses, and the argparse value checks they use.

Used by the ``edlm`` command and by the benchmarks, so each default and each help text is written once, in the
config field (``metadata["help"]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import textwrap
import types
import typing


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help text that shows every flag's default (unless there is none to show: None or an off switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)

    def _split_lines(self, text, width):
        """Wrap at spaces only: names such as edlm-ar-coar-k2-w0.2 or --remask-alpha-on stay whole."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class OneLineParser(argparse.ArgumentParser):
    """Bad flags: exit 2 with one line naming the flag (subparsers and the benchmarks' parsers use it too);
    ``--help`` shows each flag's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive_ints(name):
    """A comma-separated list of integers >= 1, e.g. ``--steps 8,16,32``."""
    single = positive_int(name)

    def parse(text):
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"{name} needs at least one value, got {text!r}")
        return [single(part) for part in parts]
    return parse


def positive_int(name):
    whole = integer(name)

    def parse(text):
        value = whole(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {value}")
        return value
    return parse


def _number(name, text) -> float:
    """``text`` as a float; ArgumentTypeError naming the flag ``name`` otherwise."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None


def float_in(name, low, high, low_open=False):
    def parse(text):
        value = _number(name, text)
        bad_low = value <= low if low_open else value < low
        if bad_low or value > high or not math.isfinite(value):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{name} must be in {bracket}{low}, {high}], got {value}")
        return value
    return parse


def _flag_type(hint, name: str):
    """argparse ``type``/``choices`` for a dataclass field annotation (int, float, str, bool, Literal, Optional)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return {"type": type(args[0]), "choices": list(args)}
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0], name)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint is int:
        return {"type": integer(name)}
    if hint is float:
        return {"type": _finite_float(name)}
    return {"type": str}


def integer(name):
    """Any whole number (range checks belong to the config, which names the flag)."""
    def parse(text):
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
    return parse


def _finite_float(name):
    def parse(text):
        value = _number(name, text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be finite, got {value}")
        return value
    return parse


def add_config_flags(parser, config_class, defaults: dict | None = None) -> None:
    """One flag per field of a frozen config dataclass: ``--field-name``, default and help from the field.

    The field's ``metadata["help"]`` is the help text (so each default and explanation is written once, in the
    config); ``Literal`` fields become choices, bools become ``--x/--no-x``; a field whose metadata says
    ``"flag": False`` gets none. ``parser`` may be an argument group. Range checks stay in the config's own
    validation (``__post_init__``), which names the flag.
    """
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.metadata.get("flag", True) is False:
            continue
        flag = "--" + field.name.replace("_", "-")
        kwargs = dict(_flag_type(hints[field.name], flag))
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        default = (defaults or {}).get(field.name, default)
        parser.add_argument(flag, dest=field.name, default=default, help=field.metadata.get("help", " "), **kwargs)


def config_from_args(config_class, args: argparse.Namespace):
    """Build ``config_class`` from the parsed flags that ``add_config_flags`` added."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
                           if hasattr(args, f.name)})
