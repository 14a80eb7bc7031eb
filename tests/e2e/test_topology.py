"""End-to-end on a 5-host layout (issues #13 items 4-5, #19 item 5): scale-out, power loss, scale-in.

node4 [redis, sentinel, worker, nginx] (a worker+nginx host) and node5 [redis, sentinel, worker] (no nginx:
its worker's Execution API is a local-only balancer) join the running 3-host cluster in ONE `inv deploy`.
The Sentinel count stays odd (3 -> 5). Every peer's firewall and the api-servers' trusted proxies take them
in before their services start, the api-servers restart one at a time, and the five Sentinels agree.
Then the host carrying the Redis master, an api-server and a scheduler (which node4's and node5's processes
talk to) loses power while a load DAG runs: 0 failed tasks. Finally both leave together with
`inv decommission node4,node5` (one alone is refused: 4 Sentinel hosts), and every peer forgets them.

The default layout is Patroni, where etcd follows the Sentinels when no host names it: the copy names
`etcd` on node1-3 explicitly, so etcd keeps its 3 members (etcd membership is fixed at the first start;
growing it needs `etcdctl member add`, which the deploy does not do) and node4/node5 stay out of it.

This was two modules until 2026-12-01 (a 4-host one with a worker-only host, and this 5-host one): one
module boots, deploys and removes the extra hosts once: 11.2 min on the slower 2-core machine, against
6.8 + 6.6 min for the two.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

import lab as labapi
from tests.e2e.test_health import wait_healthy
from tests.e2e.util import ROOT, inv, ssh

pytestmark = pytest.mark.e2e
NEW = {"node4": ["redis", "sentinel", "worker", "nginx"], "node5": ["redis", "sentinel", "worker"]}


@pytest.fixture(scope="module")
def five_hosts(deployed, tmp_path_factory):
    """hosts.yaml plus node4 and node5, both booted pristine. Yields the inventory copy's path."""
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["cluster"].update(secrets=str(ROOT / ".secrets" / "hosts.yaml"), ssh_config=str(ROOT / ".lab" / "ssh_config"),
                           dags_dir=str(ROOT / "files" / "dags"))
    for name in ("node1", "node2", "node3"):          # etcd stays where it runs (3 members)
        data["hosts"][name]["roles"].append("etcd")
    data["hosts"].update({name: {"roles": roles} for name, roles in NEW.items()})
    path = tmp_path_factory.mktemp("topology5") / "hosts-5.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    labapi.up(list(NEW), fresh=True)
    try:
        yield path
    finally:
        for name in NEW:
            labapi.stop_node(name)
        res = inv("deploy", "-q")          # back to the 3-host configuration whatever happened above
        assert res.returncode == 0, res.stdout[-3000:]
        wait_healthy()


def _checks(inventory) -> list[dict]:
    res = inv("health", "--json", inventory=inventory)
    data = json.loads(res.stdout)
    assert res.returncode == 0, [c for c in data["checks"] if c["status"] == "fail"]
    return data["checks"]


def test_scale_out_worker_nginx_host_and_two_sentinel_hosts_in_one_run(five_hosts):
    res = inv("deploy", timeout=2400, inventory=five_hosts)
    assert res.returncode == 0, res.stdout[-4000:]
    order = res.stdout.split("restarted (in this order):")[-1]
    api = re.findall(r"(node\d)\s+services\s+restart airflow-api-server \(rolling (\d+)/\d+\)", order)
    assert [n for n, _ in api] == ["node1", "node2"] and len({k for _, k in api}) == 2, order   # one at a time
    new = {name: labapi.node_address(name) for name in NEW}
    for node in ("node1", "node2", "node3"):
        rules = ssh(node, "ufw show added", check=True).stdout
        assert all(addr in rules for addr in new.values()), (node, rules)
    assert new["node4"] in ssh("node1", "cat /etc/systemd/system/airflow-api-server.service").stdout
    site = ssh("node4", "cat /etc/nginx/sites-enabled/*airflow*", check=True).stdout
    assert re.search(r"^\s*listen 80 default_server;", site, re.M), site      # public nginx, not local-only
    conf = ssh("node5", "grep -h execution_api_server_url /etc/airflow/airflow.cfg; "
                        "cat /etc/nginx/sites-enabled/*airflow* 2>/dev/null | grep -E 'listen|server 10'").stdout
    assert "http://127.0.0.1:80/execution/" in conf, conf
    assert re.search(r"listen 127\.0\.0\.1:80", conf), conf        # local-only: no public port on node5

    checks = _checks(five_hosts)
    quorum = {c["host"]: c["detail"] for c in checks if c["check"] == "sentinel quorum"}
    assert sorted(quorum) == [f"node{i}" for i in range(1, 6)], quorum
    assert all("5 usable sentinels" in d for d in quorum.values()), quorum
    assert any(c["check"] == "redis" and "4/4 replicas" in c["detail"] for c in checks), checks
    for name in NEW:
        assert any(c["host"] == name and c["check"] == "celery worker online" and c["status"] == "ok"
                   for c in checks), (name, checks)
    assert inv("deploy", "-q", inventory=five_hosts).stdout.count(" 0 changed,") == 1
    etcd = {c["host"] for c in checks if c["check"] == "etcd"}
    assert etcd == {"node1", "node2", "node3"}, etcd
    assert next(c for c in checks if c["check"] == "etcd quorum")["detail"].startswith("3/3 healthy"), checks


def test_power_loss_of_a_host_the_new_hosts_talk_to_loses_no_task(five_hosts):
    res = inv("drill.node", timeout=1800, inventory=five_hosts)
    print(res.stdout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    row = re.search(r"^node\s+.*$", res.stdout, re.M)
    assert row and row.group(0).rstrip().endswith("PASS"), res.stdout


def test_two_sentinel_hosts_leave_together(five_hosts):
    """Scale-in: both hosts are drained and every peer forgets them; the 3-host cluster is healthy."""
    one = inv("decommission", "node5", inventory=five_hosts)
    assert one.returncode != 0 and "4 sentinel hosts" in one.stdout + one.stderr, one.stdout + one.stderr
    res = inv("decommission", "node4,node5", timeout=2400, inventory=five_hosts)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "node4, node5 are out of the cluster" in res.stdout, res.stdout[-2000:]
    for name in NEW:
        assert ssh(name, "systemctl is-active airflow-worker").stdout.strip() != "active", name
    gone = [labapi.node_address(name) for name in NEW]
    for node in ("node1", "node2", "node3"):
        rules = ssh(node, "ufw show added").stdout
        assert not any(addr in rules for addr in gone), (node, rules)
    for _ in range(12):                 # SENTINEL RESET: each Sentinel rediscovers its peers (seconds)
        checks = _checks(None)
        quorum = [c["detail"] for c in checks if c["check"] == "sentinel quorum"]
        if len(quorum) == 3 and all("3 usable sentinels" in d for d in quorum):
            break
        time.sleep(5)
    assert len(quorum) == 3 and all("3 usable sentinels" in d for d in quorum), quorum
    assert any(c["check"] == "redis" and "2/2 replicas" in c["detail"] for c in checks), checks
