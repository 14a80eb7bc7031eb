"""End-to-end for issue #20 on the deployed lab: `-H` subsets and their dependencies (item 11), a failing
`db migrate` reported as failed (item 13), and Celery queues per host (item 12).

The default layout is Patroni on node1-3: every host is a database member, so a subset always holds one
and the database is never the missing dependency (tests/unit/test_dependencies.py covers one database).
The refused subset here lacks the api-servers (the Execution API) instead. SQL that writes runs on the
Patroni leader (a replica is read-only).
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_health import wait_healthy
from tests.e2e.util import Airflow, inv, pg_leader, ssh

pytestmark = pytest.mark.e2e

PSQL = "runuser -u postgres -- psql -tAc"


def test_subset_with_its_api_servers_down_is_refused_then_converges_when_up(deployed):
    for node in ("node1", "node2"):
        ssh(node, "systemctl stop airflow-api-server", check=True)
    try:
        res = inv("deploy", "--hosts", "node3")
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert "node1 (api_server: airflow-api-server" in res.stderr, res.stderr
        assert "(postgres:" not in res.stderr, res.stderr        # node3 is a database member itself
        assert "-H node1,node2,node3" in res.stderr, res.stderr
        assert not re.search(r"^node\d\s+\S+\s+changed", res.stdout, re.M), res.stdout[-2000:]
    finally:
        for node in ("node1", "node2"):
            ssh(node, "systemctl start airflow-api-server", check=True)
    res = inv("deploy", "--hosts", "node3")
    assert res.returncode == 0, res.stdout[-3000:]
    # the hosts left out stay in every peer's config: the subset run rewrote no file (a service that died
    # while the api-servers were down may be started again)
    assert not re.search(r"^node\d\s+\S+\s+changed\s+(file|link|absent)", res.stdout, re.M), res.stdout[-2000:]
    wait_healthy()


def test_failing_db_migrate_fails_the_run_and_is_retried(deployed):
    """The database refuses the airflow role's new connections: migrate must fail loudly, not be 'changed'."""
    leader = pg_leader()
    ssh(leader, f"{PSQL} 'ALTER ROLE airflow CONNECTION LIMIT 0'", check=True)
    try:
        res = inv("airflow.deploy")
        assert res.returncode != 0, res.stdout[-2000:]
        assert re.search(r"airflow\s+failed\s+command db migrate", res.stdout), res.stdout[-3000:]
    finally:
        ssh(pg_leader(), f"{PSQL} 'ALTER ROLE airflow CONNECTION LIMIT -1'", check=True)
    res = inv("airflow.deploy")
    assert res.returncode == 0, res.stdout[-3000:]
    assert not re.search(r"(changed|failed)\s+command db migrate", res.stdout), res.stdout[-2000:]
    wait_healthy()


def test_heavy_queue_runs_only_where_it_is_served(deployed):
    """hosts.yaml: node3 serves [default, heavy]; the others only default."""
    api = Airflow()
    api.wait_dag_loaded("ha_queues")
    run_id = api.trigger("ha_queues")
    assert api.wait_run("ha_queues", run_id, timeout=600) == "success"
    tis = api.task_instances("ha_queues", run_id)
    heavy = {ti["hostname"] for ti in tis if ti["task_id"] == "heavy"}
    assert heavy == {"node3"}, [(ti["task_id"], ti.get("map_index"), ti["hostname"]) for ti in tis]
    assert len([ti for ti in tis if ti["task_id"] == "heavy"]) == 6
