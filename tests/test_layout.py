"""The code's shape: no import cycles in tumorlib/ and train/, and no product module importing the tests.

Imports are read with ``ast``, function-level ones included (a cycle hidden in a function is still a
cycle), ``if TYPE_CHECKING:`` blocks excluded (they never run). ``from tumorlib import Name`` counts as
an import of the submodule that tumorlib's lazy ``_EXPORTS`` table loads ``Name`` from.
"""

from __future__ import annotations

import ast
from pathlib import Path

from train.spacefiles import lazy_table, runtime_nodes

from .conftest import ROOT

PACKAGES = ("tumorlib", "train")
#: Everything that ships: the library, the trainer, the apps and the benchmarks.
PRODUCT = ("tumorlib", "train", "benchmarks", "app.py", "streamlit_app.py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(entries) -> dict[str, Path]:
    """Module name -> file, for every .py file under the given folders or files of the repository."""
    out = {}
    for entry in entries:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            out[_module_name(file)] = file
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules among ``known`` that module ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif target in known and known[target].name == "__init__.py":
                    lazy = lazy_table(ast.parse(known[target].read_text(encoding="utf-8"))).get(alias.name)
                    if lazy:
                        found.add(f"{target}.{lazy}")
    # Importing a.b.c runs a and a.b first.
    closed = {".".join(m.split(".")[: i + 1]) for m in found for i in range(m.count(".") + 1)}
    return {m for m in closed if m in known and m != name}


def import_graph(entries) -> dict[str, set[str]]:
    known = _sources(entries)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_in_the_library_and_the_trainer():
    graph = import_graph(PACKAGES)
    assert {"tumorlib.bundle", "train.train", "train.evaluate"} <= set(graph)  # the graph is really read
    assert "tumorlib.weights" in graph["tumorlib.bundle"]  # function-level imports count
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_product_module_imports_the_tests():
    known = _sources([*PRODUCT, "tests"])
    offenders = {}
    for name, path in _sources(PRODUCT).items():
        bad = sorted(m for m in imports_of(name, path, known) if m == "tests" or m.startswith("tests."))
        if bad:
            offenders[name] = bad
    assert offenders == {}
