"""The package's import graph: no cycle, and no import from a lower layer to a higher one.

Layers, bottom to top (an import may go down, or sideways inside one layer):
config/fileio/device/errors/parallel/flags/hub/stats/progress -> diffusion, law -> data -> models -> checkpoint ->
energy -> sampling ->
likelihood, evaluation -> training -> bench -> api -> commands -> cli. Every import counts, also the lazy ones inside
functions: a lazy upward import is still an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "edlm"
LAYERS = [
    {"edlm", "config", "fileio", "device", "errors", "parallel", "flags", "hub", "stats", "progress"},
    {"diffusion", "law"},
    {"data"},
    {"models"},
    {"checkpoint"},
    {"energy"},
    {"sampling"},
    {"likelihood", "evaluation"},
    {"training"},
    {"bench"},
    {"api"},
    {"commands"},
    {"cli", "__main__"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_part(module: str) -> str:
    """``edlm.sampling.mdlm`` -> ``sampling``; ``edlm`` -> ``edlm``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(path: Path) -> set[str]:
    """Every edlm module imported anywhere in the file (module level and inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "edlm"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "edlm":
            found.add(node.module)
            # ``from edlm.pkg import sub`` may name a submodule
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if SRC.parent.joinpath(*f"{node.module}.{alias.name}".split(".")).with_suffix(".py").is_file()}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_every_module_belongs_to_a_layer():
    unknown = sorted({top_part(name) for name in graph()} - set(LEVEL))
    assert not unknown, f"modules outside the layer table: {unknown} (add them to LAYERS here and in the README)"


def test_no_upward_import():
    upward = [f"{name} (layer {LEVEL[top_part(name)]}) imports {target} (layer {LEVEL[top_part(target)]})"
              for name, targets in graph().items() for target in targets
              if LEVEL.get(top_part(target), -1) > LEVEL.get(top_part(name), 99)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return stack + [node, target]
            if target not in state:
                cycle = visit(target, stack + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


@pytest.mark.parametrize("source, expected", [("edlm.sampling.mdlm", "sampling"), ("edlm", "edlm")])
def test_top_part(source, expected):
    assert top_part(source) == expected


def readme_layer_table() -> list[tuple[str, list[str]]]:
    """(layer, file patterns) of every row of the README's "What is where" table."""
    import re

    text = (SRC.parents[1] / "README.md").read_text()
    table = text[text.index("## What is where"):].split("\n## ")[0]
    rows = [line.split("|")[1:4] for line in table.splitlines() if line.startswith("| ") and "`" in line]
    return [(layer.strip(), re.findall(r"`([^`]+)`", files)) for layer, _, files in rows]


def covers(pattern: str, path: str) -> bool:
    """``data/`` covers every file below it, ``sampling/samplers/*.py`` its folder's files, else the exact path."""
    import fnmatch

    if pattern.endswith("/"):
        return path.startswith(pattern)
    return fnmatch.fnmatch(path, pattern) if "*" in pattern else path == pattern


def test_the_readme_layer_table_lists_every_file_in_its_layers_row():
    """Every module (package ``__init__`` files aside) is in the row of its own layer, and only there."""
    rows = readme_layer_table()
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if path.name == "__init__.py":
            continue
        top = top_part(module_name(path))
        expected = "base" if LEVEL[top] == 0 else "commands" if top in ("cli", "__main__") else top
        layers = {layer for layer, patterns in rows if any(covers(p, relative) for p in patterns)}
        if layers != {expected}:
            wrong.append(f"{relative}: listed in {sorted(layers) or 'no row'}, expected the {expected} row")
    assert not wrong, "\n".join(wrong)


def error_messages_naming_a_flag(path: Path) -> list[str]:
    """``SomethingError("--flag ...")`` calls in one file: the message opens with a command-line flag."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith("Error") and node.args:
            first = node.args[0]
            head = first.values[0] if isinstance(first, ast.JoinedStr) and first.values else first
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.startswith("--"):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def test_library_errors_name_their_argument_not_a_flag():
    """Below ``bench`` (which parses its own argv) errors carry the argument as ``subject`` and the command line
    turns it into the flag; ``flags.py`` builds the flags and may name them."""
    library = [path for path in SRC.rglob("*.py") if LEVEL[top_part(module_name(path))] < LEVEL["bench"]
               and path.name != "flags.py"]
    assert len(library) > 50
    offenders = [hit for path in library for hit in error_messages_naming_a_flag(path)]
    assert offenders == []
