"""The package layering of docs/architecture.md, enforced: each import goes down (or sideways
within a layer, without cycles), and only the CLI imports lazily.

The layers are read from this file's LAYERS, which the docs page mirrors; a new package or root
module must be placed in it (the test fails until it is).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rlalign"

# bottom (0) to top; a module of layer k imports from layers <= k only.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        (
            "errors",
            "io",
            "config",
            "metrics",
            "runtime",
            "dist",
            "checkpoint",
            "rundir",
            "version",
            "plugins",
            "trackers",
            "precision",
        ),
        0,
    ),
    "rl": 1,
    "lm": 2,
    "data": 2,
    "envs": 2,
    "rewards": 3,
    "report_card": 3,
    "claims": 3,
    "train": 4,
    "control": 4,
    "report": 5,
    **dict.fromkeys(
        (
            "api",
            "cli",
            "commands",
            "demo",
            "demo_drive",
            "demo_tool",
            "goals",
            "tabular",
            "__main__",
            "__init__",
        ),
        6,
    ),
}
# Where an import inside a function is allowed: the CLI loads a subcommand's stage only when it
# runs, so that `rlalign --help` does not import torch and transformers; the package's
# __init__ registers the Gymnasium ids without importing the simulator.
LAZY_ALLOWED = ("cli", "commands", "__init__")


def unit(module: str) -> str:
    """``rlalign.train.loop`` -> ``train``; ``rlalign.errors`` -> ``errors``; ``rlalign`` ->
    ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def internal_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported rlalign module, line, inside a function)`` for every import in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:  # `from rlalign import checkpoint` names a module
                    full = f"{target}.{alias.name}"
                    is_module = (SRC.parent / Path(*full.split("."))).with_suffix(".py").exists()
                    found.append((full if is_module else target, child.lineno, in_function))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [(t, line, lazy) for t, line, lazy in found if t.split(".")[0] == "rlalign"]


def all_imports() -> list[tuple[str, str, int, bool]]:
    """``(importing module, imported module, line, lazy)`` over the package."""
    rows = []
    for path in sorted(SRC.rglob("*.py")):
        rows += [(module_name(path), *row) for row in internal_imports(path)]
    return rows


def layering_violations(rows: list[tuple[str, str, int, bool]]) -> list[str]:
    problems = []
    for source, target, line, lazy in rows:
        a, b = unit(source), unit(target)
        for u in (a, b):
            if u not in LAYERS:
                problems.append(f"{u}: not in LAYERS (place it in tests/test_layers.py and docs)")
        if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]:
            problems.append(
                f"{source}:{line} imports {target}: layer {LAYERS[a]} ({a}) may not import "
                f"layer {LAYERS[b]} ({b})"
            )
        if lazy and a not in LAZY_ALLOWED:
            problems.append(f"{source}:{line} imports {target} inside a function")
    return sorted(set(problems))


def package_cycles(rows: list[tuple[str, str, int, bool]]) -> list[list[str]]:
    """Every cycle of the graph between units (packages and root modules), as a path."""
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in rows:
        a, b = unit(source), unit(target)
        if a != b and a != "__init__":  # every submodule's import runs the package __init__
            graph.setdefault(a, set()).add(b)
    cycles, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return cycles


def test_every_import_goes_down_the_layers():
    assert layering_violations(all_imports()) == []


def test_no_cycle_between_packages():
    assert package_cycles(all_imports()) == []


def test_the_docs_page_lists_every_layered_package():
    page = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [u for u in LAYERS if u not in ("__init__", "__main__") and f"`{u}" not in page]
    missing = [u for u in missing if f"rlalign.{u}" not in page]
    assert missing == []


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # a planted upward import is reported with its place
        ([("rlalign.rl.losses", "rlalign.train.loop", 7, False)], "rlalign.rl.losses:7 imports"),
        # a lazy import outside the CLI is reported too
        ([("rlalign.train.rl", "rlalign.lm.sampling", 3, True)], "inside a function"),
        # a package nobody placed
        ([("rlalign.agents.text", "rlalign.errors", 1, False)], "agents: not in LAYERS"),
    ],
)
def test_the_checks_catch_planted_violations(rows, expected):
    assert any(expected in p for p in layering_violations(rows))


def test_the_cycle_check_catches_a_planted_cycle():
    rows = [
        ("rlalign.lm.a", "rlalign.data.b", 1, False),
        ("rlalign.data.c", "rlalign.lm.d", 1, False),
    ]
    assert package_cycles(rows) == [["data", "lm", "data"]]
