"""Shared fixtures: the lab (tests/lab/lab_fixture.py) and a deployed cluster on it."""

from __future__ import annotations

import pytest

from tests.lab.lab_fixture import lab  # noqa: F401 - re-exported session fixture

_deployed: dict = {}


@pytest.fixture(scope="session")
def deployed(lab):  # noqa: F811 - the fixture above
    """The 3-node lab after its first deploy (once per session): `fab -H node1,node2,node3 deploy --verbose`
    under the outsider's watch, then `inv health` once (tests/e2e/fresh.py). Yields the record."""
    if not _deployed:
        from tests.e2e.fresh import watched_fab_deploy
        _deployed.update(watched_fab_deploy())
        print(f"\n[deployed] fab deploy: rc={_deployed['rc']} in {_deployed['seconds']:.0f}s")
        if _deployed["rc"] != 0:
            pytest.fail("fab deploy failed:\n" + _deployed["output"][-6000:], pytrace=False)
    yield _deployed
