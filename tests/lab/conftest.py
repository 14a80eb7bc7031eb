"""Registers the `lab` fixture for tests/lab (other test folders import it from lab_fixture too)."""

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `import lab` must be the repo's package, not this folder

from tests.lab.lab_fixture import lab  # noqa: E402,F401
