"""Layers: nothing in fabfile/core imports a component, the meta-task or the lab (so no import cycle runs
through it, and a spec test plans with the same core a deploy uses), nor names one: what a component
brings (its name, roles, ports, settings) reaches core through the contract (core/component.py).
Production code never imports the lab, the tests or the bench (they are given what they need, e.g. the
drills' power switch)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

FABFILE = Path(__file__).resolve().parents[2] / "fabfile"
CORE = FABFILE / "core"


#: (core file, string) pairs that are not what a component declares, and why
NOT_A_COMPONENT = {
    ("inventory.py", "airflow"): "the default cluster name",
    ("profile.py", "nginx"): "the nginx executable, a probe tool the profiler recognises",
    ("steps.py", "packages"): "the Packages step's kind",
}


def _imports(path: Path) -> list[str]:
    """Every module a file imports (lazy imports inside functions included), relative ones as written."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_core_imports_only_core_and_libraries():
    outside = {f"{path.name}: {name}" for path in CORE.glob("*.py") for name in _imports(path)
               if name.startswith(("..", "fabfile", "lab", "tests", "bench"))}
    assert outside == set()


def test_production_code_imports_no_lab_tests_or_bench():
    found = {f"{path.relative_to(FABFILE)}: {name}" for path in FABFILE.rglob("*.py") for name in _imports(path)
             if name.split(".")[0] in ("lab", "tests", "bench")}
    assert found == set()


def _declared() -> set[str]:
    """Every name a component declares: its own, its roles, its ports and its cluster settings."""
    from fabfile.components import COMPONENTS, REGISTRY
    return ({c.name for c in COMPONENTS} | set(REGISTRY.roles()) | set(REGISTRY.default_ports())
            | set(REGISTRY.settings()))


def test_core_names_no_component_role_port_or_setting():
    declared = _declared()
    found = {(path.name, node.value) for path in CORE.glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in declared}
    assert found - set(NOT_A_COMPONENT) == set()


#: what the health engine (fabfile/health.py) may import from fabfile: besides core, the ordered component list
#: (to load the inventory) and the single-points-of-failure report
HEALTH_IMPORTS = {".components", ".spof"}


def test_health_engine_names_no_component():
    """fabfile/health.py gathers and renders; every row is a component's (its health hooks): it imports no
    component and names none, nor a role, port or setting of one."""
    path = FABFILE / "health.py"
    tree = ast.parse(path.read_text())
    imports = {f".{a.name}" if node.module is None else f".{node.module}" for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.level for a in node.names}
    imports = {name for name in imports if not name.startswith(".core")}
    assert imports - HEALTH_IMPORTS == set()
    docstrings = {id(body[0].value) for node in ast.walk(tree) if isinstance(node, ast.Module | ast.FunctionDef)
                  and (body := node.body) and isinstance(body[0], ast.Expr)}
    words = {(node.lineno, word) for node in ast.walk(tree) if isinstance(node, ast.Constant)
             and isinstance(node.value, str) and id(node) not in docstrings
             for word in re.findall(r"[a-z_]+", node.value)}
    assert {(line, word) for line, word in words if word in _declared()} == set()


def _runtime_nodes(tree: ast.AST):
    """Every node that runs: `if TYPE_CHECKING:` blocks (imports for annotations only) are left out."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _module_graph() -> dict[str, set[str]]:
    """fabfile module -> the fabfile modules it imports when it runs (lazy imports inside functions included)."""
    modules = {".".join(p.relative_to(FABFILE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in FABFILE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                stem = f"{base}.{node.module}" if node.module else base
                # `from . import x` imports the submodule x; its package is already initialised
                targets |= ({stem} if node.module else set()) | {f"{stem}.{a.name}" for a in node.names}
            elif isinstance(node, ast.ImportFrom | ast.Import):
                targets |= {node.module} if isinstance(node, ast.ImportFrom) else {a.name for a in node.names}
        graph[name] = (targets & set(modules)) - {name}
    return graph


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str]:
    """A path start -> ... -> start through the graph, [] when there is none."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return []


def test_no_import_cycle_in_fabfile():
    """No module takes part in an import cycle, lazy imports included (a function-level import hides a cycle,
    it does not remove it)."""
    graph = _module_graph()
    cycles = [" -> ".join(c) for c in (_cycle_from(m, graph) for m in sorted(graph)) if c]
    assert cycles == []
