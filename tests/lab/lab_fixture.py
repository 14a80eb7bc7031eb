"""The session-scoped `lab` fixture: real lab hosts for end-to-end tests.

Brings the lab up (reusing it when every inventory host already runs) and down at the end of the session,
unless it was reused or AIRFLOW_HA_LAB_KEEP=1. Import `lab` from here into a conftest.py.
"""

from __future__ import annotations

import os

import pytest

import lab as labapi

_session = {"users": 0, "owned": False, "nodes": None}  # shared if several conftests import the fixture


def lab_session():
    """Generator: yields the list of running lab.Node; owns the lab only if it started it."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if _session["users"] == 0:
        try:
            reused = all(labapi.is_running(n) for n in labapi.inventory_names())
            _session["nodes"] = labapi.up()
        except labapi.LabError as e:
            pytest.fail(f"lab: {e}", pytrace=False)
        _session["owned"] = not reused
    _session["users"] += 1
    try:
        yield _session["nodes"]
    finally:
        _session["users"] -= 1
        if _session["users"] == 0 and _session["owned"] and os.environ.get("AIRFLOW_HA_LAB_KEEP") != "1":
            labapi.down()


@pytest.fixture(scope="session")
def lab():
    """The running lab hosts (list of lab.Node), inventory order."""
    yield from lab_session()
