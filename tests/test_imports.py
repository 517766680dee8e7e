"""Every module of ``fiber_kernels`` and ``fiber_fast`` stands alone: the project's import graph (read with
``ast``: every ``import`` anywhere in a module, deferred ones in functions included) has no cycle, so no
module imports itself back through others, and each module imports first in a fresh interpreter.

The fresh imports (one new interpreter per module, a few seconds each: ``-m slow``) catch what the graph
cannot: a module that works only when another one was imported before it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"fiber_kernels": ROOT / "kernels" / "fiber_kernels", "fiber_fast": ROOT / "fiber_fast"}


def project_modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module and package of the project."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: project modules it imports}``: ``from a import b`` counts as importing ``a.b`` when that is
    a module (``from . import _C``, an extension, counts as neither), else ``a``. Parent packages do not
    count, neither as implied by importing ``a.b`` nor named: Python has them running before any module
    inside them, so a package's ``__init__`` importing its submodules is no cycle."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                            for alias in node.names}
        graph[module] = {target for target in targets
                         if target in modules and not f"{module}.".startswith(f"{target}.")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or ``[]`` when it has none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_import_graph_reads_relative_and_deferred_imports() -> None:
    modules = project_modules()
    graph = import_graph(modules)
    assert len(modules) > 50 and "fiber_kernels.window_attention.api" in modules
    # relative module imports, "from .. import module", absolute ones across the two packages
    assert {"fiber_kernels.window_attention.function", "fiber_kernels.dispatch",
            "fiber_kernels.window_attention.checks"} <= graph["fiber_kernels.window_attention.api"]
    assert "fiber_kernels.modules" in graph["fiber_fast.models.model"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others() -> None:
    cycle = find_cycle(import_graph(project_modules()))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def _env() -> dict[str, str]:
    return {**os.environ, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "1")}


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(name for name in project_modules() if not name.endswith(".__main__")))
def test_module_imports_alone_in_a_new_interpreter(module: str) -> None:
    # every module but the ``python -m`` entry points (importing one runs the command line)
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT,
                         env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr
