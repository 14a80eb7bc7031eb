"""End-to-end (issue #13): config changes roll one host at a time, with no failed task and failed requests counted.

1. `parallelism` 32 -> 24 and `api_workers` 1 -> 2 change airflow.cfg and the api-server units, so every
   Airflow process on every host must restart (api-servers, schedulers, triggerers, the dag-processor,
   workers, flower). Each api-server is drained from every nginx before its restart and taken back once
   it answers (uvicorn with 2 workers binds its port before the app is loaded).
2. `redis.maxmemory` changes redis.conf on every Redis host: the replicas restart first, then Sentinel
   fails the master over and the old master restarts last.

Both in ONE deploy (one change and one way back, to save the suite's time), with a probe through the VIP (5
req/s) and load DAG runs triggered all through the deploy: 0 failed tasks, probe failures reported and at most
PROBE_SLACK (0.5 %, tests/e2e/util.py says why).
`postgres.max_connections` (derived from api_workers) is pinned to its current value, read on node3 (any
Patroni member answers SHOW), so PostgreSQL itself does not restart: in the default Patroni layout a new value
goes to the DCS and `patronictl restart --pending` restarts every member, the leader included; with one
database (hosts-single.yaml) it is a DOWNTIME item in --check. Neither change here touches a Patroni or etcd
file, so the plan shows no DOWNTIME. The default inventory is deployed again after it (another rolling change,
the way back).
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.e2e.test_health import health_json, wait_healthy
from tests.e2e.util import PROBE_SLACK, ROOT, inv, inv_under_load, ssh

pytestmark = pytest.mark.e2e


def _changed_inventory(tmp_path, **cluster):
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    current = int(ssh("node3", "runuser -u postgres -- psql -tAc 'show max_connections'", check=True).stdout)
    data["cluster"].update(postgres={"max_connections": current}, **cluster,
                           secrets=str(ROOT / ".secrets" / "hosts.yaml"), ssh_config=str(ROOT / ".lab" / "ssh_config"),
                           dags_dir=str(ROOT / "files" / "dags"))
    path = tmp_path / "hosts-rolling.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _redis_master() -> str:
    _, data = health_json()
    detail = next(c["detail"] for c in data["checks"] if c["check"] == "sentinels agree on master")
    return detail.split()[0]



def test_config_change_rolls_with_no_failed_request_or_task(deployed, tmp_path):
    master = _redis_master()
    changed = _changed_inventory(tmp_path, parallelism=24, api_workers=2, redis={"maxmemory": "512mb"})
    check = inv("deploy", "--check", inventory=changed)
    assert check.returncode == 0, check.stdout[-3000:]
    plan = check.stdout.split("restarts (in this order):")[-1]
    assert re.search(r"node1\s+services\s+drain: every nginx stops sending requests to this api-server.*\n"
                     r"\s*node1\s+services\s+restart airflow-api-server \(rolling 1/\d\)", plan), plan
    assert "DOWNTIME" not in plan, plan
    redis_lines = [line.split(None, 2) for line in plan.splitlines() if re.match(r"\s*node\d\s+redis\s", line)]
    assert [h for h, _, what in redis_lines if what.startswith("restart redis-server")][-1] == master, plan
    assert redis_lines[-2][0] == master and redis_lines[-2][2].startswith("SENTINEL FAILOVER"), plan

    try:
        # every 15 s, not LOAD_EVERY: the heavier load of every CI run so far. At 30 s this test failed 2 of 3
        # runs on a ~33-s stall of node1's api-server when node2's was drained: its Execution API building
        # its routers on the first request (services.warm_script, README "Tests"); warmed first, it passed at 30 s
        out = inv_under_load(["deploy"], changed, "rolling change (parallelism, api_workers, redis maxmemory)",
                             every=15, max_failed_share=PROBE_SLACK)
        order = out.split("restarted (in this order):")[-1]
        api_restarts = re.findall(r"(node\d)\s+services\s+restart airflow-api-server", order)
        assert api_restarts == ["node1", "node2"], order
        restarted = re.findall(r"(node\d)\s+redis\s+restart redis-server", order)
        assert sorted(restarted) == ["node1", "node2", "node3"] and restarted[-1] == master, order
        assert _redis_master() != master
        ssh("node1", "grep -x 'maxmemory 512mb' /etc/redis/airflow-ha.conf", check=True)
    finally:     # the way back runs even after a failure: the next modules expect hosts.yaml deployed
        back = inv("deploy", timeout=2400)
    assert back.returncode == 0, back.stdout[-3000:]
    wait_healthy()
