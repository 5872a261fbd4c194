"""The shape of the code, checked: imports form a DAG, modules stay small, plugins stay plugins.

Static (``ast``): every ``import`` counts, also those inside functions — a lazy import hides a
cycle from Python, not from a reader. Importing a package's own ancestors is not an edge
(Python runs them first anyway).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"augforge": ROOT / "augforge", "augforge_plugins": ROOT / "plugins" / "augforge_plugins",
            "augforge_runtime": ROOT / "runtime" / "augforge_runtime"}
MAX_LINES = 400  # per module (DESIGN.md: "modules stay under ~400 lines")


def modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package."""
    root = PACKAGES[package]
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.with_suffix("").relative_to(root.parent).parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name the module imports (absolute; relative imports resolved), lazy ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> modules of the same package it imports (edges to its own ancestors left out)."""
    mods = modules(package)

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph = {}
    for name, path in mods.items():
        targets = {owner(d) for d in imported_names(name, path)}
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None for a DAG (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_a_planted_cycle_and_passes_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_form_a_dag(package):
    cycle = find_cycle(import_graph(package))
    assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle)}; move the shared piece into a module both can import"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_over_the_line_budget(package):
    long = {str(p.relative_to(ROOT)): n for p in modules(package).values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they hold): {long}"


def test_plugins_never_import_mlflow_and_the_core_imports_no_plugin():
    bad = [f"{name} imports mlflow" for name, path in modules("augforge_plugins").items()
           if any(d == "mlflow" or d.startswith("mlflow.") for d in imported_names(name, path))]
    bad += [f"{name} imports {d}" for name, path in modules("augforge").items()
            for d in sorted(imported_names(name, path)) if d.split(".")[0] == "augforge_plugins"]
    assert not bad, "plugins compute, the core does tracking; the core finds plugins through entry points only: " + "; ".join(bad)


def test_the_runtime_stays_torch_free():
    bad = [f"{name} imports {d}" for name, path in modules("augforge_runtime").items()
           for d in sorted(imported_names(name, path)) if d.split(".")[0] in ("torch", "augforge")]
    for name, path in modules("augforge_runtime").items():  # mlflow is optional: looked up inside functions only
        top = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        bad += [f"{name} imports mlflow at module level" for n in top
                if any(a.name.split(".")[0] == "mlflow" for a in n.names) or (getattr(n, "module", "") or "").startswith("mlflow")]
    assert not bad, "augforge-runtime must install and import without torch, mlflow or augforge: " + "; ".join(bad)


def test_the_contract_modules_sit_at_the_top_and_depend_on_no_stage():
    graph = import_graph("augforge")
    contract = ("augforge.hookspecs", "augforge.interfaces", "augforge.registry", "augforge.plugins")
    stages = ("augforge.data", "augforge.training", "augforge.evaluation", "augforge.export", "augforge.sweep", "augforge.turing")
    bad = {m: sorted(t for t in graph[m] if t.startswith(stages)) for m in contract}
    assert all(m in graph for m in contract) and not any(bad.values()), f"the contract imports a stage: {bad}"
