"""End-to-end, last: `fab -H node1,node2,node3 deploy` on pristine hosts ends in a healthy cluster.

Fabric calls a task once per -H host, one after another; our fab `deploy` runs the phased, parallel
runner over all -H hosts on its first call (README "Usage"), which is what this proves. Runs last
because it resets the lab (named test_zz_ for that).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.e2e.util import ROOT, inv

pytestmark = pytest.mark.e2e


def test_fab_deploy_on_fresh_hosts_is_healthy(deployed):
    import lab as labapi
    labapi.reset()
    t0 = time.monotonic()
    res = subprocess.run([str(ROOT / ".venv/bin/fab"), "-H", "node1,node2,node3", "deploy"], cwd=ROOT,
                         capture_output=True, text=True, timeout=2400)
    took = time.monotonic() - t0
    print(res.stdout[-3000:])
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    assert res.stdout.count("host(s), 0 failed") == 1, "the runner must run once for all -H hosts"
    print(f"fab fresh deploy: {took:.0f}s")
    for _ in range(24):                       # deploy waits for api-servers and workers; allow stragglers
        health = inv("health", timeout=300)
        if health.returncode == 0:
            break
        time.sleep(5)
    assert health.returncode == 0, health.stdout[-3000:]
