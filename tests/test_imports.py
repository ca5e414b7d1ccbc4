"""Imports point downstream only (DESIGN.md): no import cycle, and nothing below the façade imports it.

The graph is read from the source with ``ast``, so an import inside a function counts as much as one
at the top of a module (it runs sooner or later); only ``if TYPE_CHECKING:`` blocks are left out,
since they never run.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import maskstore

PACKAGE = Path(maskstore.__file__).resolve().parent
FACADE = "maskstore.archive"
# The public entry points and integrations that sit on the façade: they may import it.
ON_TOP = {"maskstore", "maskstore.cli", "maskstore.demo", "maskstore.dask", "maskstore.torch",
          "maskstore.viewer", "maskstore.viewer.app", "maskstore.viewer.server"}
# The stages the façade calls (and their packages' modules): none of them may import it.
BELOW = {"maskstore.errors", "maskstore.layout", "maskstore.postings", "maskstore.frame_groups", "maskstore.store", "maskstore.records",
         "maskstore.compression",
         "maskstore.model", "maskstore.labels", "maskstore.media", "maskstore.stats", "maskstore.render", "maskstore.export",
         "maskstore.loaders", "maskstore.check", "maskstore.summary", "maskstore.layouts", "maskstore.upgrade",
         "maskstore.video", "maskstore._accel", "maskstore._fallback", "maskstore.lifecycle"}
BELOW_PACKAGES = ("maskstore.ingest", "maskstore.query")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_below(name: str) -> bool:
    return name in BELOW or any(name == p or name.startswith(p + ".") for p in BELOW_PACKAGES)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _known(name: str) -> str | None:
    """The package module ``name`` is, or the nearest package module containing it."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _compiled_module(name: str) -> bool:
    """Whether ``name`` is a compiled module of the package (``_speedups``): not part of the graph."""
    package = name.rpartition(".")[0]
    return (package in MODULES and MODULES[package].name == "__init__.py"
            and importlib.util.find_spec(name) is not None)


class Imports(ast.NodeVisitor):
    """Package modules one module imports, wherever in it the import statement is."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parent = self.package.split(".")
            parent = parent[:len(parent) - node.level + 1]
            base = ".".join(parent + ([base] if base else []))
        for alias in node.names:  # ``from . import records`` imports a module, not a name
            full = f"{base}.{alias.name}"
            if full in MODULES:
                self._add(full)
            elif not _compiled_module(full):
                self._add(base)

    def _add(self, name: str) -> None:
        target = _known(name)
        if target is None:
            return
        if target != name and _compiled_module(".".join(name.split(".")[:target.count(".") + 2])):
            return  # ``from ._speedups import x``
        # Importing a module runs its packages' __init__ first, unless they hold the importer (they
        # ran before it); the root package only counts when named (``from maskstore import x``).
        parts = target.split(".")
        for i in range(2, len(parts)):
            package = ".".join(parts[:i])
            if not (self.module + ".").startswith(package + "."):
                self.found.add(package)
        self.found.add(target)


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        visitor = Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        graph[name] = visitor.found - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_has_a_place():
    """A new module must be put on top of the façade or below it, here, before it can import anything."""
    unplaced = sorted(m for m in MODULES if m != FACADE and m not in ON_TOP and not is_below(m))
    assert unplaced == []


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_no_module_below_the_facade_imports_it():
    graph = import_graph()
    offenders = sorted(m for m, targets in graph.items() if is_below(m) and targets & {FACADE, "maskstore"})
    assert offenders == []
    assert FACADE in graph["maskstore"]  # the walk does see imports of the façade


def test_the_walk_sees_lazy_imports_and_skips_type_checking_blocks():
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from .archive import Archive\nelse:\n    from . import labels\n"
              "def f():\n    from .query import engine\n    import maskstore.render\n    from . import _speedups\n")
    visitor = Imports("maskstore.export", is_package=False)
    visitor.visit(ast.parse(source))
    assert visitor.found == {"maskstore.labels", "maskstore.query", "maskstore.query.engine", "maskstore.render"}


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle
