"""End-to-end, last: `fab -H node1,node2,node3 deploy` on pristine hosts ends in a healthy cluster, and
nothing internal is reachable from outside at any moment of it (issue #13: firewall first).

Fabric calls a task once per -H host, one after another; our fab `deploy` runs the phased, parallel
runner over all -H hosts on its first call (README "Usage"), which is what this proves. While it runs, the
lab's outsider (on the bridge, not in the inventory) tries every internal port of every node about once
a second; it must never connect. Right after the deploy returns, `inv health` passes on its first call
(every Celery worker answers flower's ping: no stale broker connection from a late firewall).
hosts.yaml is the Patroni layout, so this is also a fresh Patroni bootstrap (etcd first, then one member
initializes, the others clone), and the outsider tries etcd's 2379/2380 and Patroni's 8008 as well.
Runs last because it resets the lab (named test_zz_ for that).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from fabfile.core import inventory
from tests.e2e.util import NODES, ROOT, address, inv, ssh

pytestmark = pytest.mark.e2e

WATCH = """cat > /tmp/watch.sh <<'__EOF__'
rm -f /tmp/watch.stop /tmp/watch.log
while [ ! -e /tmp/watch.stop ]; do
  for t in {targets}; do
    (timeout 1 bash -c "</dev/tcp/${{t%:*}}/${{t#*:}}" 2>/dev/null && echo "$(date +%T) open $t") &
  done
  wait; echo round; sleep 0.5
done >> /tmp/watch.log
__EOF__
nohup bash /tmp/watch.sh >/dev/null 2>&1 &"""


def internal_targets() -> list[str]:
    """address:port of every port the inventory's hosts will listen on, except the public HTTP(S)."""
    inv_ = inventory.load(ROOT / "hosts.yaml")
    ports = inv_.cluster["ports"]
    out = []
    for host in inv_.hosts.values():
        names = set(inventory.listening(inv_, host)) | set(inventory.EXPORTERS["node_exporter"][1])
        out += [f"{address(host.name)}:{ports[n]}" for n in sorted(names - {"http", "https"})]
    return out


def test_fab_deploy_on_fresh_hosts_is_healthy_and_never_open_to_outsiders(deployed):
    import lab as labapi
    labapi.reset(outsider=True)
    targets = internal_targets()
    ssh("outsider", WATCH.format(targets=" ".join(targets)), check=True)
    try:
        t0 = time.monotonic()
        res = subprocess.run([str(ROOT / ".venv/bin/fab"), "-H", ",".join(NODES), "deploy"], cwd=ROOT,
                             capture_output=True, text=True, timeout=2400)
        took = time.monotonic() - t0
        health = inv("health", timeout=300)            # right after: no retries
        ssh("outsider", "touch /tmp/watch.stop; sleep 3", check=True)
        log = ssh("outsider", "cat /tmp/watch.log", check=True).stdout.splitlines()
    finally:
        labapi.stop_node("outsider")
    print(res.stdout[-3000:])
    print(f"fab fresh deploy: {took:.0f}s; outsider: {log.count('round')} rounds over {len(targets)} ports")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    assert res.stdout.count("host(s), 0 failed") == 1, "the runner must run once for all -H hosts"
    assert log.count("round") >= took / 5, f"the outsider probed too rarely: {log.count('round')} rounds"
    opened = [line for line in log if " open " in line]
    assert not opened, f"internal ports reachable from outside during the deploy: {opened[:10]}"
    assert health.returncode == 0, health.stdout[-3000:]
    assert re.search(r"^cluster\s+patroni leader\s+ok", health.stdout, re.M), health.stdout[-3000:]
    assert re.search(r"^cluster\s+etcd quorum\s+ok\s+3/3 healthy", health.stdout, re.M), health.stdout[-3000:]
