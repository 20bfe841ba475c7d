"""The layout stays readable: no import cycles between the project's modules, no module past
500 lines outside tests.

A cycle means neither module can be read (or imported, or tested) without the other, and in
Python it turns into an ImportError the day someone moves an import to module level; size is
the cheapest proxy for "a reader sees it all". Both rules are checked on the source, with
`ast`, so the check is fast and sees imports inside functions too (a lazy import still makes
two modules depend on each other).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Source folder → the package it installs as (pyproject.toml's `package-dir`).
PACKAGES = {
    "evalharness": "evalharness",
    "tasks": "evalharness.tasks",
    "judges": "evalharness.judges",
    "trainers": "evalharness.trainers",
    "kernels": "evalharness.kernels",
    "reports": "evalharness.reports",
}
MAX_MODULE_LINES = 500


def project_modules() -> dict[str, Path]:
    """Every project module by its dotted name (a package by its `__init__.py`)."""
    modules: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its source. `from pkg import sub` counts as
    importing `pkg.sub` when that is a module (the package's own `__init__` runs as Python always
    runs it, which is not a dependency the reader has to follow), else `pkg` itself."""

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            module = owner(target) if target.startswith("evalharness") else None
            if module and module != name:
                found.add(module)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_project_modules() -> None:
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 100, "the module scan found too little: is the layout map stale?"
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other: " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def source_files() -> list[Path]:
    folders = [*PACKAGES, "benchmarks"]
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


def test_no_module_over_500_lines() -> None:
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in source_files()}
    assert len(sizes) > 100
    too_long = [
        f"{path.relative_to(ROOT)} ({lines})"
        for path, lines in sizes.items()
        if lines > MAX_MODULE_LINES
    ]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: " + ", ".join(too_long)
