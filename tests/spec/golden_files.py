"""The golden-file comparison the spec tests share: regenerate with UPDATE_GOLDEN=1, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def assert_matches_golden(got: str, path: Path) -> None:
    """`got` equals the reviewed golden file at `path` (written instead when missing or with UPDATE_GOLDEN=1)."""
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(got)
        if os.environ.get("UPDATE_GOLDEN") != "1":
            pytest.fail(f"{path} did not exist: written, review it and run again")
    assert got == path.read_text(), f"plan differs from {path}: review, then UPDATE_GOLDEN=1"
