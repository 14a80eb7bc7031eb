"""Shared fixtures: the lab (tests/lab/lab_fixture.py) and a deployed cluster on it."""

from __future__ import annotations

import time

import pytest

from tests.e2e.util import inv
from tests.lab.lab_fixture import lab  # noqa: F401 - re-exported session fixture

_deployed: dict = {}


@pytest.fixture(scope="session")
def deployed(lab):  # noqa: F811 - the fixture above
    """The 3-node lab after `inv deploy -v` converged it (once per session). Yields the run's record."""
    if not _deployed:
        t0 = time.monotonic()
        res = inv("deploy", "--verbose", timeout=2400)
        _deployed.update(output=res.stdout + res.stderr, rc=res.returncode, seconds=time.monotonic() - t0)
        print(f"\n[deployed] inv deploy: rc={res.returncode} in {_deployed['seconds']:.0f}s")
        if res.returncode != 0:
            pytest.fail("inv deploy failed:\n" + _deployed["output"][-6000:], pytrace=False)
    yield _deployed
