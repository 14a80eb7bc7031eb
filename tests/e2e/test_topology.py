"""End-to-end on a layout other than hosts.yaml (issues #19 item 5, #13 item 4): a 4th host with only the
`worker` role (no nginx: it gets a local-only balancer) is added to the running cluster and converges in
one `inv deploy`; then the host carrying the Redis master, an api-server and a scheduler (which node4's
processes talk to) loses power while a load DAG runs: 0 failed tasks. Finally node4 is powered off and the
default inventory converges the cluster back to 3 hosts.
"""

from __future__ import annotations

import re

import pytest
import yaml

import lab as labapi
from tests.e2e.test_health import wait_healthy
from tests.e2e.util import ROOT, inv, ssh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def four_hosts(deployed, tmp_path_factory):
    """hosts.yaml plus node4 [worker]; node4 booted pristine. Yields the inventory copy's path."""
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["cluster"].update(secrets=str(ROOT / ".secrets" / "hosts.yaml"), ssh_config=str(ROOT / ".lab" / "ssh_config"),
                           dags_dir=str(ROOT / "files" / "dags"))
    data["hosts"]["node4"] = {"roles": ["worker"]}
    path = tmp_path_factory.mktemp("topology") / "hosts-4.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    labapi.up(["node4"], fresh=True)
    try:
        yield path
    finally:
        labapi.stop_node("node4")
        res = inv("deploy", "-q")          # back to the 3-host configuration (peers drop node4)
        assert res.returncode == 0, res.stdout[-3000:]
        wait_healthy()


def test_scale_out_worker_only_host_in_one_run(four_hosts):
    res = inv("deploy", timeout=2400, inventory=four_hosts)
    assert res.returncode == 0, res.stdout[-4000:]
    conf = ssh("node4", "grep -h execution_api_server_url /etc/airflow/airflow.cfg; "
                        "cat /etc/nginx/sites-enabled/*airflow* 2>/dev/null | grep -E 'listen|server 10'").stdout
    assert "http://127.0.0.1:80/execution/" in conf, conf
    assert re.search(r"listen 127\.0\.0\.1:80", conf), conf        # local-only: no public port on node4
    assert inv("deploy", "-q", inventory=four_hosts).stdout.count(" 0 changed,") == 1
    health = inv("health", inventory=four_hosts)
    assert re.search(r"^node4\s+celery worker online\s+ok", health.stdout, re.M), health.stdout


def test_power_loss_of_a_host_node4_talks_to_loses_no_task(four_hosts):
    res = inv("drill.node", timeout=1800, inventory=four_hosts)
    print(res.stdout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    row = re.search(r"^node\s+.*$", res.stdout, re.M)
    assert row and row.group(0).rstrip().endswith("PASS"), res.stdout


def test_decommission_drains_and_removes_the_host(four_hosts):
    """Scale-in: the worker-only host is drained and every peer forgets it; the 3-host cluster is healthy."""
    addr = labapi.node_address("node4")
    res = inv("decommission", "node4", timeout=2400, inventory=four_hosts)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "node4 is out of the cluster" in res.stdout, res.stdout[-2000:]
    assert ssh("node4", "systemctl is-active airflow-worker").stdout.strip() != "active"
    for node in ("node1", "node2", "node3"):
        assert addr not in ssh(node, "ufw show added").stdout, node
    wait_healthy()
