"""The house rules, checked on the source: the package's folders are layered in one declared order (a
folder imports only folders below it, function-level imports included, `if TYPE_CHECKING:` blocks
excepted), no import circle at module or folder level, stages never import sweep or analysis code, the
pure folders import no torch, no module over ~400 lines and no function over 80.

    python -m pytest tests/test_layout.py -q
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "grpo_rank"
# low -> high: a unit may import itself and the units before it. "errors" is the one base module; the
# commands (run.py, report.py, status.py, ...) sit on top and may import anything.
LAYERS = ("errors", "record", "runtime", "objective", "allocation", "data", "config", "profiling", "training",
          "evaluation", "pipeline", "sweep", "analysis")
STAGES = ("runtime", "objective", "allocation", "data", "profiling", "training", "evaluation", "pipeline")
# folders (and single modules) whose import must not pull torch in: the idea, the record and the analysis
PURE = ("grpo_rank.record", "grpo_rank.config", "grpo_rank.analysis", "grpo_rank.allocation.allocate",
        "grpo_rank.allocation.importance", "grpo_rank.objective", "grpo_rank.sweep.naming", "grpo_rank.runtime.threads")
MAX_LINES, MAX_FUNCTION = 400, 80


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node):
    """Every node below `node` except the bodies of `if TYPE_CHECKING:` (imports for annotations only)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            yield from (n for c in child.orelse for n in [c, *_walk(c)])
            continue
        yield child
        yield from _walk(child)


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports anywhere (top level or inside functions), resolved to modules:
    `from grpo_rank.x import y` counts as grpo_rank.x.y when that is a module, else grpo_rank.x."""
    me = module_name(path)
    pkg = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    out = set()
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("grpo_rank"))
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[: len(pkg) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            if not mod.startswith("grpo_rank"):
                continue
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            out.update(subs or {mod})
    return {m for m in out if m in known and m != me}


def unit(module: str) -> str:
    """The layer a module belongs to: its folder under grpo_rank/, `errors`, or `commands` (top level)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "commands"  # the package's own __init__
    if len(parts) == 2 and parts[1] not in LAYERS:
        return "commands"
    return parts[1]


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imports(f, known) for f in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                found.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    return found


def test_the_walk_sees_function_level_imports():
    g = graph()
    # pipeline/launch.py imports run_job at top level; the report's W&B mirror is imported inside build()
    assert "grpo_rank.pipeline.job" in g["grpo_rank.pipeline.launch"]
    assert "grpo_rank.analysis.report.wandb_mirror" in g["grpo_rank.analysis.report.cli"]


def test_every_folder_is_declared():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), folders - set(LAYERS)
    assert len(folders) >= 6


def test_folders_import_only_lower_folders():
    order = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for m, deps in graph().items():
        mine = unit(m)
        if mine == "commands":
            continue
        for d in deps:
            theirs = unit(d)
            if theirs == "commands" or order[theirs] > order[mine]:
                bad.append(f"{m} -> {d}")
    assert bad == []


def test_stages_never_import_sweep_or_analysis():
    bad = [f"{m} -> {d}" for m, deps in graph().items() if unit(m) in STAGES for d in deps
           if unit(d) in ("sweep", "analysis")]
    assert bad == []


def test_no_import_circle_between_modules():
    assert cycles(graph()) == []


def test_no_import_circle_between_folders():
    folders: dict[str, set[str]] = {}
    for m, deps in graph().items():
        folders.setdefault(unit(m), set()).update(unit(d) for d in deps if unit(d) != unit(m))
    assert cycles(folders) == []


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if path.is_relative_to(PACKAGE) and len(text.splitlines()) > MAX_LINES:
            long_modules.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert long_modules == [] and long_functions == []


def test_no_benchmark_or_generator_ships_in_the_package():
    shipped = [p.name for p in PACKAGE.rglob("*.py") if p.name.startswith("bench") or p.name == "synthetic.py"]
    assert shipped == []


def test_pure_folders_import_no_torch():
    code = (f"import sys; import {', '.join(PURE)}; "
            "import pkgutil, importlib, grpo_rank.record, grpo_rank.config, grpo_rank.analysis\n"
            "for pkg in (grpo_rank.record, grpo_rank.config, grpo_rank.analysis):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
