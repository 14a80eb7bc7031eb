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


#: wall time per test module (first test's start to last test's end, fixtures included), for the suite's budget
_module_times: dict[str, list[float]] = {}


def pytest_runtest_logstart(nodeid, location):
    import time
    _module_times.setdefault(nodeid.split("::")[0], [time.monotonic(), time.monotonic()])


def pytest_runtest_logfinish(nodeid, location):
    import time
    _module_times[nodeid.split("::")[0]][1] = time.monotonic()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """One line at the very end (CI logs keep their tail): the e2e modules' minutes, slowest first."""
    e2e = {m.rsplit("/", 1)[-1].removesuffix(".py"): (b - a) / 60 for m, (a, b) in _module_times.items()
           if "/e2e/" in m}
    if e2e:
        terminalreporter.write_line("e2e module minutes: " + ", ".join(
            f"{name} {mins:.1f}" for name, mins in sorted(e2e.items(), key=lambda kv: -kv[1])))
