"""Every `from X import name` in the product resolves, function-level (lazy) imports included.

A lazy import of a name that moved fails only when its code path runs: `drills.wait_rejoined` imported
REPLICA_ROLES from health after it had moved to patroni, and drill.postgres ended in an ImportError on the
lab, after the fault it had just caused.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("fabfile/**/*.py"), *ROOT.glob("bench/*.py"), ROOT / "tasks.py"])


def _imports(path: Path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module, [a.name for a in node.names if a.name != "*"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_from_import_resolves(path):
    missing = []
    for line, module, names in _imports(path):
        if module.split(".")[0] not in ("fabfile", "bench", "lab", "tests"):
            continue
        mod = importlib.import_module(module)
        for name in names:
            if not hasattr(mod, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"line {line}: {name} from {module}")
    assert not missing, missing
