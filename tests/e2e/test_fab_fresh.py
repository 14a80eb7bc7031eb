"""End-to-end: `fab -H node1,node2,node3 deploy` on pristine hosts ends in a healthy cluster, and nothing
internal is reachable from outside at any moment of it (issue #13: firewall first).

The deploy is the session's shared one (tests/e2e/fresh.py, run by the `deployed` fixture in
tests/conftest.py): hosts.yaml is the Patroni layout, so it is also a fresh Patroni bootstrap (etcd first,
then one member initializes, the others clone) and the outsider tries etcd's 2379/2380 and Patroni's 8008.
On a reused, already-deployed lab (AIRFLOW_HA_LAB_KEEP=1) the deploy changes nothing and this test skips:
there is no fresh deploy to judge.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e


def test_fab_deploy_on_fresh_hosts_is_healthy_and_never_open_to_outsiders(deployed):
    out, log, health = deployed["output"], deployed["watch_log"], deployed["health"]
    recap = re.search(r"(\d+) host\(s\), (\d+) failed, (\d+) changed", out)
    assert recap, out[-3000:]
    if int(recap.group(3)) < 100:
        pytest.skip(f"the lab was reused (deploy changed {recap.group(3)}): not a fresh deploy")
    print(f"fab fresh deploy: {deployed['seconds']:.0f}s; outsider: {log.count('round')} rounds over "
          f"{len(deployed['targets'])} ports")
    assert deployed["rc"] == 0, out[-5000:]
    assert out.count("host(s), 0 failed") == 1, "the runner must run once for all -H hosts"
    assert log.count("round") >= deployed["seconds"] / 5, f"the outsider probed too rarely: {log.count('round')}"
    opened = [line for line in log if " open " in line]
    assert not opened, f"internal ports reachable from outside during the deploy: {opened[:10]}"
    assert health.returncode == 0, health.stdout[-3000:]
    assert re.search(r"^cluster\s+patroni leader\s+ok", health.stdout, re.M), health.stdout[-3000:]
    assert re.search(r"^cluster\s+etcd quorum\s+ok\s+3/3 healthy", health.stdout, re.M), health.stdout[-3000:]
