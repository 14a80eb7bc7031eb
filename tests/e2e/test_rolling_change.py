"""End-to-end (issue #13): a config change that restarts every Airflow service rolls one host at a time.

`parallelism` 32 -> 24 and `api_workers` 1 -> 2 change airflow.cfg and the api-server units, so every
Airflow process on every host must restart (api-servers, schedulers, triggerers, the dag-processor,
workers, flower). Each api-server is drained from every nginx before its restart and taken back once it
answers (uvicorn with 2 workers binds its port before the app is loaded).
With a probe through the VIP (5 req/s) and load DAG runs
triggered all through the deploy: 0 failed probe requests, 0 failed tasks. `postgres.max_connections` is
pinned to its current value so PostgreSQL itself does not restart (that one is a DOWNTIME item, shown by
--check). The default inventory is deployed again afterwards (another rolling change).
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from fabfile.drills import Probe
from tests.e2e.test_health import wait_healthy
from tests.e2e.util import ROOT, Airflow, inv, ssh, triggered_throughout

pytestmark = pytest.mark.e2e


def _changed_inventory(tmp_path):
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    current = int(ssh("node3", "runuser -u postgres -- psql -tAc 'show max_connections'", check=True).stdout)
    data["cluster"].update(parallelism=24, api_workers=2, postgres={"max_connections": current},
                           secrets=str(ROOT / ".secrets" / "hosts.yaml"), ssh_config=str(ROOT / ".lab" / "ssh_config"),
                           dags_dir=str(ROOT / "files" / "dags"))
    path = tmp_path / "hosts-rolling.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_config_change_rolls_with_no_failed_request_or_task(deployed, tmp_path):
    changed = _changed_inventory(tmp_path)
    check = inv("deploy", "--check", inventory=changed)
    assert check.returncode == 0, check.stdout[-3000:]
    plan = check.stdout.split("restarts (in this order):")[-1]
    assert re.search(r"node1\s+services\s+drain: every nginx stops sending requests to this api-server.*\n"
                     r"\s*node1\s+services\s+restart airflow-api-server \(rolling 1/\d\)", plan), plan
    assert "DOWNTIME" not in plan, plan

    vip = yaml.safe_load((ROOT / "hosts.yaml").read_text())["cluster"]["vip"]
    api = Airflow()
    api.wait_dag_loaded("ha_load")
    probe = Probe(f"http://{vip}/api/v2/monitor/health", rate=5, timeout=10)   # 2 cores, 3 hosts + load
    t0 = time.monotonic()
    try:
        res, runs = triggered_throughout(api, "ha_load", lambda: inv("deploy", timeout=2400, inventory=changed), every=15)
        took = time.monotonic() - t0
        failed_requests, sent = probe.failed()
    finally:
        probe.close()
    print(f"\nrolling change: {took:.0f}s, probe {failed_requests}/{sent} failed, {len(runs)} load runs")
    assert res.returncode == 0, res.stdout[-4000:]
    order = res.stdout.split("restarted (in this order):")[-1]
    api_restarts = re.findall(r"(node\d)\s+services\s+restart airflow-api-server", order)
    assert api_restarts == ["node1", "node2"], order
    assert failed_requests == 0, (f"{failed_requests}/{sent} probe requests failed: {probe.failures()}\n"
                                  + res.stdout[-4000:])
    assert None not in runs and len(runs) >= 3, runs
    for run_id in runs:
        assert api.wait_run("ha_load", run_id, timeout=900) == "success", run_id
        failed = [ti["task_id"] for ti in api.task_instances("ha_load", run_id) if ti["state"] != "success"]
        assert not failed, (run_id, failed)

    back = inv("deploy", timeout=2400)
    assert back.returncode == 0, back.stdout[-3000:]
    wait_healthy()
