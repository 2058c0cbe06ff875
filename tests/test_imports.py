"""The package's import structure: no import circle between invstable's modules, and no reach outside it.

The graph is read from the source (``ast``), not by importing: an edge ``a -> b`` for every ``import b`` or
``from b import ...`` in module ``a`` that names a module of invstable (``from pkg import sub`` names the module
``pkg.sub`` when ``sub`` is one). Parent packages are not edges: a circle is two modules that need each other.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

# found without importing it: the graph is read from the source
ROOT = Path(importlib.util.find_spec("invstable").submodule_search_locations[0]).resolve()
PACKAGE = ROOT.name


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, module: str, modules, *, top_level_only: bool) -> set[str]:
    """The invstable modules ``path`` imports: at import time only, or also inside functions."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if top_level_only and inside:
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")[: len(module.split(".")) - child.level + (1 if is_package else 0)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                submodules = {f"{target}.{a.name}" for a in child.names} & set(modules)
                found.update(submodules)
                if len(submodules) < len(child.names):  # names defined in the module itself
                    found.add(target)
            visit(child, inside)

    visit(tree, False)
    return {name for name in found if name in modules and name != module}


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, m, modules, top_level_only=top_level_only) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def test_the_graph_reader_sees_circles_and_relative_imports():
    # the checker must be able to fail: a made-up circle is found, a chain is not one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    graph = _graph(top_level_only=True)
    assert f"{PACKAGE}.operators._base" in graph[f"{PACKAGE}.operators._ct"]
    assert f"{PACKAGE}.operators" in graph[f"{PACKAGE}.baselines._fbp"]


def _describe(graph, cycles) -> str:
    return "; ".join(" | ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in cycles)


def test_no_import_circle_at_import_time():
    graph = _graph(top_level_only=True)
    cycles = _cycles(graph)
    assert cycles == [], _describe(graph, cycles)


def test_no_import_circle_even_through_deferred_imports():
    # an import inside a function that closes a circle hides a dependency knot; none is left
    graph = _graph(top_level_only=False)
    cycles = _cycles(graph)
    assert cycles == [], _describe(graph, cycles)


def _reaches_outside(source: str, module: str) -> list[str]:
    """Imports of the source checkout's ``benchmarks`` and uses of ``sys.path`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f"{module} imports {n}" for n in names if n.split(".")[0] == "benchmarks"]
        if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
                and node.value.id == "sys":
            found.append(f"{module} touches sys.path (line {node.lineno})")
    return found


def test_the_outside_reader_sees_what_it_looks_for():
    assert len(_reaches_outside("import sys\nsys.path.insert(0, '.')\nfrom benchmarks import quality", "m")) == 2
    assert _reaches_outside("from .benchmarks import x\nimport os.path", "m") == []


def test_the_package_does_not_reach_outside_itself():
    offenders = [hit for module, path in _modules().items()
                 for hit in _reaches_outside(path.read_text(encoding="utf-8"), module)]
    assert offenders == []
