"""Layers: nothing in fabfile/core imports a component, the meta-task or the lab (so no import cycle runs
through it, and a spec test plans with the same core a deploy uses), nor names one: what a component
brings (its name, roles, ports, settings) reaches core through the contract (core/component.py).
Production code never imports the lab, the tests or the bench (they are given what they need, e.g. the
drills' power switch)."""

from __future__ import annotations

import ast
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
