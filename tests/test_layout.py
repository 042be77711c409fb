"""The house rules, checked: no import circle between the package's modules, no module over ~400
lines, and the modules that hold the idea (allocation, statistics, importance, the record, the config)
import no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "grpo_rank"
PURE = ("allocate", "stats", "importance", "result", "config", "answers", "rewards", "naming", "threads")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """The package modules `path` imports at its top level (imports inside functions run later)."""
    pkg = module_name(path).split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)]
            if node.module:
                out.add(".".join([*base, node.module]))
            else:
                out.update(".".join([*base, a.name]) for a in node.names)
    return out


def test_no_import_circle():
    files = list(PACKAGE.rglob("*.py"))
    graph = {module_name(f): top_level_imports(f) for f in files}
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in graph[m]:
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    assert cycles == []
    assert "grpo_rank.pipeline.job" in graph and graph["grpo_rank.pipeline.job"], "the walk found the package's imports"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_under_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_pure_modules_import_no_torch():
    code = f"import sys; import {', '.join('grpo_rank.' + m for m in PURE)}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
