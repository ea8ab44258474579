"""No import cycle between the project's modules, counting imports inside functions.

A function-local import hides a cycle from Python at import time but not from the reader:
the two modules still depend on each other. So the graph here is built from the source
with `ast`, over every statement of every module, wherever the import sits.

What counts as an edge, and why:
- A module is a file: `pkg/mod.py` is `pkg.mod`, `pkg/__init__.py` is `pkg`.
- `import a.b.c` and `from a.b.c import x` are an edge to `a.b.c` only, not to `a` and
  `a.b`. Python runs the parent `__init__`s too, but that is a property of packages, not
  a dependency the file states; counting it would turn every `__init__` that re-exports
  its submodules into a cycle with each of them. A module that names its own package
  (`from pkg import x` inside `pkg/mod.py`) does get that edge, so an `__init__` that
  imports the module back is a cycle, as it should be: that is the pattern that breaks on
  a partially initialised module.
- `from pkg import name` is an edge to `pkg.name` when that is a project module, else to
  `pkg` (the name is an attribute of the package). Relative imports resolve against the
  importing module's package.
- Imports under `if TYPE_CHECKING:` count too: a type that crosses layers both ways is the
  same tangle, only later.
- Strings that Django or Celery import (INSTALLED_APPS, `include("x.urls")`, task names
  sent through `workers.jobs.job_enqueue`) are not edges: naming a task instead of
  importing it is how services stay below the tasks that call them.
- Only edges between project modules are kept; tests, migrations and benchmarks are not
  part of the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "datasets_app", "annotation", "training", "workers", "api")
EXCLUDED_PARTS = {"tests", "migrations", "benchmarks", "__pycache__"}

# Cycles that another part of the current change removes; each entry is the sorted list of
# the cycle's modules. The lead empties this list; a cycle not listed here fails the test.
KNOWN_CYCLES: list[list[str]] = []


def module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if EXCLUDED_PARTS & set(rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in known else base


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        targets = set(_imported(tree, module, is_package, known))
        graph[module] = {t for t in targets if t in known and t != module}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def cycle_chain(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete loop through the component, `a -> b -> a`, shortest from its first module."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    chain = [start]
                    while node != start:
                        chain.append(node)
                        node = previous[node]
                    chain.append(start)
                    return " -> ".join([chain[0], *reversed(chain[1:-1]), chain[0]])
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{component} is not a cycle")


def test_the_graph_sees_function_local_and_relative_imports(tmp_path):
    # Made-up module names: the graph builder is tested, not the project's layout.
    tree = ast.parse(
        "import training.modeling\n"
        "def f():\n"
        "    from training import recipes\n"
        "    from training.recipes import TrainConfig\n"
        "    from . import generation\n"
        "    from .generation import core\n"
    )
    known = {"training", "training.modeling", "training.recipes", "training.generation"}
    known |= {"training.generation.core"}
    found = set(_imported(tree, "training.services", False, known))
    assert found == {
        "training.modeling",
        "training.recipes",
        "training.generation",
        "training.generation.core",
    }


def test_strongly_connected_finds_loops_and_only_loops():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert cycle_chain(graph, ["a", "b", "c"]) == "a -> b -> c -> a"


def test_the_graph_covers_the_apps():
    graph = import_graph()
    assert "workers.jobs" in graph and "training.services.trainings" in graph
    assert "workers.models" in graph["workers.jobs"]
    assert not any(name.split(".")[-1] == "tests" or ".migrations" in name for name in graph)


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if c not in KNOWN_CYCLES]
    chains = "\n".join(
        f"{cycle_chain(graph, component)}   (tangle of {len(component)}: {', '.join(component)})"
        for component in cycles
    )
    assert not cycles, f"import cycles (a function-local import is still an import):\n{chains}"
