"""The code's layering, read from its import statements (ast; nothing is imported): schemas
know nothing of tasks or flows, tasks nothing of flows, the parts of tasks/ depend on each
other without a cycle, and no module grows past a readable size."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("schemas", "tasks", "flows")
MAX_MODULE_LINES = 520  # ~500, with a small margin


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[str]:
    """Every module an import statement of ``path`` names, at any depth (lazy imports inside
    functions are dependencies too); ``from package import name`` yields ``package.name``,
    which may be a module or an attribute: callers compare prefixes."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else node.module
            yield from (f"{base}.{alias.name}" for alias in node.names)


def part_of_tasks(module: str) -> str | None:
    """The part of tasks/ a module belongs to: its sub-package (tasks.dedup) or, for a
    module directly under tasks/, the module itself (tasks.core)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) >= 2 else None


def dependencies_between_parts() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in modules("tasks"):
        source = part_of_tasks(module_name(path))
        if source is None:  # tasks/__init__.py
            continue
        targets = {part_of_tasks(name) for name in imported_modules(path)}
        graph.setdefault(source, set()).update(t for t in targets if t is not None and t != source)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None when it is a DAG (depth-first search)."""
    finished: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in finished:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        finished.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


@pytest.mark.parametrize("layer, forbidden", [("schemas", ("tasks", "flows")), ("tasks", ("flows",))])
def test_lower_layers_do_not_import_higher_ones(layer: str, forbidden: tuple[str, ...]) -> None:
    offending = [f"{module_name(path)} imports {name}"
                 for path in modules(layer) for name in imported_modules(path)
                 if name.split(".")[0] in forbidden]
    assert offending == []


def test_parts_of_tasks_depend_on_each_other_without_a_cycle() -> None:
    graph = dependencies_between_parts()
    assert {"tasks.core", "tasks.engines", "tasks.dedup", "tasks.stage1", "tasks.stage2"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_is_too_long_to_read() -> None:
    lengths = {module_name(path): len(path.read_text(encoding="utf-8").splitlines())
               for layer in LAYERS for path in modules(layer)}
    assert {name: lines for name, lines in lengths.items() if lines > MAX_MODULE_LINES} == {}
