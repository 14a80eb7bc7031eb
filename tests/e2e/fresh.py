"""The session's first deploy: `fab -H node1,node2,node3 deploy` on the lab's pristine hosts, watched from outside.

fab calls our `deploy` once with every -H host (fabfile/cli.FabExecutor), which runs the phased, parallel runner
over all of them (README "Usage"). While it runs, the lab's outsider (on the bridge, not in the inventory) tries
every internal port of every node about once a second (issue #13: firewall first). Right after the deploy returns,
`inv health` runs once, with no retry. The record is asserted by tests/e2e/test_fab_fresh.py; doing this as the
suite's shared deploy (not a second fresh deploy at the end) saves a lab reset and a whole fresh deploy.
"""

from __future__ import annotations

import re
import subprocess
import time

from fabfile import monitoring
from fabfile.components import load_inventory
from tests.e2e.util import NODES, ROOT, address, inv, ssh

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
    inv_ = load_inventory(ROOT / "hosts.yaml")
    ports = inv_.ports
    out = []
    for host in inv_.hosts.values():
        names = set(inv_.registry.listening(inv_, host)) | set(monitoring.EXPORTERS["node_exporter"][1])
        out += [f"{address(host.name)}:{getattr(ports, n)}" for n in sorted(names - {"http", "https"})]
    return out


def _changed_nothing(output: str) -> bool:
    """The deploy's recap says 0 changed: a lab reused from an earlier session, not a first deploy."""
    return re.search(r"\b0 failed, 0 changed\b", output) is not None


def _health_after_boot(timeout: float = 180) -> subprocess.CompletedProcess:
    """`inv health` until it passes (bounded). Only for a lab that was already deployed and has just booted:
    a no-op deploy has no health gate (issue 18), so its units may still be starting (a local rerun after
    `lab.down`; CI's fresh hosts always get a first deploy, which ends healthy or fails)."""
    end = time.monotonic() + timeout
    while True:
        health = inv("health", timeout=300)
        if health.returncode == 0 or time.monotonic() > end:
            return health
        time.sleep(5)


def watched_fab_deploy() -> dict:
    """Run the fab deploy under the outsider's watch, then `inv health` once; return what happened."""
    import lab as labapi
    labapi.up([labapi.OUTSIDER])
    targets = internal_targets()
    ssh("outsider", WATCH.format(targets=" ".join(targets)), check=True)
    try:
        t0 = time.monotonic()
        res = subprocess.run([str(ROOT / ".venv/bin/fab"), "-H", ",".join(NODES), "deploy", "--verbose"],
                             cwd=ROOT, capture_output=True, text=True, timeout=2400, check=False)
        took = time.monotonic() - t0
        health = inv("health", timeout=300)
        if health.returncode != 0 and _changed_nothing(res.stdout):
            health = _health_after_boot()
        ssh("outsider", "touch /tmp/watch.stop; sleep 3", check=True)
        log = ssh("outsider", "cat /tmp/watch.log", check=True).stdout.splitlines()
    finally:
        labapi.stop_node(labapi.OUTSIDER)
    return {"output": res.stdout + res.stderr, "rc": res.returncode, "seconds": took, "health": health,
            "watch_log": log, "targets": targets}
