"""The package's import structure: no import cycles anywhere in ``tunefree``, and the bench harness layered
one way (CLI -> sweep plan -> run specs -> executor -> runner -> ledger -> report, docs/benchmark.md).

Imports are read from the source with ``ast``, so function-local imports (which hide cycles from a
plain ``import``) count as much as module-level ones; relative imports are resolved against the module's
package. ``from package import name`` is an edge to ``package.name`` when that is a module, else to the
package itself. Importing a submodule runs its parent package's ``__init__`` as well; that implicit
edge is not counted (it would make every package a cycle with its own modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tunefree

PACKAGE_DIR = Path(tunefree.__file__).parent

#: the bench layers, lowest first. A module may import only from strictly lower layers (a package given
#: here as a unit, like ``tasks``, may also import its own modules). Every bench module must be listed,
#: so a new module has to be placed deliberately.
BENCH_LAYERS: tuple[tuple[str, ...], ...] = (
    ("tunefree.bench.records", "tunefree.bench.metrics"),  # shared records, pure metric math
    ("tunefree.bench.tasks",),  # built-in tasks and the Task interface
    ("tunefree.bench.custom", "tunefree.bench.resolve"),  # make_task; names -> objects, code versions
    ("tunefree.bench.plan",),  # grid planning (pure)
    ("tunefree.bench.runner", "tunefree.bench.executors", "tunefree.bench.ledger"),  # peers: never each other
    ("tunefree.bench.report.document", "tunefree.bench.report.scoring", "tunefree.bench.report.palette"),
    ("tunefree.bench.report.options",),  # which settings form a sweep of one option (--vary)
    ("tunefree.bench.report.equal_compute",),  # two-gradient methods at half their steps
    ("tunefree.bench.report.figures", "tunefree.bench.report.ranking"),
    ("tunefree.bench.report.sections",),
    ("tunefree.bench.report",),  # write_report
    ("tunefree.bench.sweep",),  # the orchestrator
    ("tunefree.bench",),  # the public API
)
#: entries of BENCH_LAYERS that are packages whose own modules belong to the same unit
UNIT_PACKAGES = ("tunefree.bench.tasks",)


def module_files(package_dir: Path = PACKAGE_DIR, package: str = "tunefree") -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package, *parts])] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (function bodies included)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # "import a.b.c" imports a.b.c; keep the longest known prefix (a name, not a module, is dropped)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package_dir: Path = PACKAGE_DIR, package: str = "tunefree") -> dict[str, set[str]]:
    files = module_files(package_dir, package)
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``) or None, by depth-first search."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def bench_layer(module: str) -> tuple[int, str] | None:
    """``(layer index, unit)`` of a bench module (its unit is the BENCH_LAYERS entry it belongs to)."""
    for index, layer in enumerate(BENCH_LAYERS):
        for unit in layer:
            if module == unit or (unit in UNIT_PACKAGES and module.startswith(unit + ".")):
                return index, unit
    return None


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        if not module.startswith("tunefree.bench"):
            continue
        here = bench_layer(module)
        if here is None:
            problems.append(f"{module} is in no layer of BENCH_LAYERS: place it")
            continue
        for target in sorted(targets):
            there = bench_layer(target)
            if there is None or there[1] == here[1]:
                continue  # outside bench (optim, ...) or within the same unit
            if there[0] >= here[0]:
                problems.append(f"{module} (layer {here[0]}) imports {target} (layer {there[0]})")
    return problems


def test_graph_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.b import g\n    return g\n")
    (pkg / "b.py").write_text("from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\nimport pkg.sub\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a", "pkg.sub"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_bench_modules_import_only_lower_layers() -> None:
    graph = import_graph()
    assert "tunefree.bench.records" in graph and "tunefree.bench.sweep" in graph
    problems = layering_violations(graph)
    assert not problems, "bench layering broken:\n" + "\n".join(problems)


@pytest.mark.parametrize("leaf", ["tunefree.bench.records", "tunefree.bench.metrics"])
def test_leaf_modules_import_nothing_of_tunefree(leaf: str) -> None:
    assert import_graph()[leaf] == set()
