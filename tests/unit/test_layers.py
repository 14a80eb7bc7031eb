"""Layers: nothing in fabfile/core imports a component, the meta-task or the lab (so no import cycle runs
through it, and a spec test plans with the same core a deploy uses); production code never imports the
lab, the tests or the bench (they are given what they need, e.g. the drills' power switch)."""

from __future__ import annotations

import ast
from pathlib import Path

FABFILE = Path(__file__).resolve().parents[2] / "fabfile"
CORE = FABFILE / "core"


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
