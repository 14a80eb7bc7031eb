"""End-to-end: `cluster.monitoring: true` on the lab (issue 9, item 3 and 4).

An inventory copy switches monitoring on and gives node1 the `monitoring` role (Prometheus). After
`inv deploy --inventory <copy>` and a run of the test_ha_celery_workers DAG, every exporter is scraped from
node2 (a cluster host, as Prometheus would): the StatsD bridge shows Airflow's scheduler heartbeat and a
dagrun duration, the redis exporter `redis_up 1` (and each Sentinel through /scrape), the postgres exporter
`pg_up 1`, the node exporter node_* metrics; Prometheus reports every target up; `inv health` has one ok
row per exporter; a second deploy changes nothing. In the default (Patroni) layout every postgres member
runs a postgres exporter, each member's Patroni REST /metrics reaches Prometheus through the node exporter's
textfile collector (patroni_primary of every member, exactly one leader, no NaN where a value is known) and
Prometheus loads the Patroni alert rules. Finally the normal inventory (monitoring off) is
deployed again, which stops and disables every exporter. Neither switch restarts an Airflow process: StatsD
is always on (fabfile/airflow.py config_values), so airflow.cfg does not change.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import yaml

from tests.e2e.util import NODES, ROOT, Airflow, address, inv, ssh

pytestmark = pytest.mark.e2e

DAG = "test_ha_celery_workers"
PORTS = {"node_exporter": 9100, "statsd_exporter": 9102, "redis_exporter": 9121, "postgres_exporter": 9187,
         "prometheus": 9090}
UNITS = ("prometheus-node-exporter", "airflow-ha-patroni-metrics.timer", "airflow-ha-statsd-exporter",
         "prometheus-redis-exporter", "prometheus-postgres-exporter", "prometheus")
AIRFLOW_ROLES = {"api_server", "scheduler", "dag_processor", "triggerer", "worker", "flower"}


def roles() -> dict:
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    return {name: set(spec["roles"]) for name, spec in data["hosts"].items()}


def hosts_with(*wanted) -> list[str]:
    return [n for n, r in roles().items() if r & set(wanted)]


def monitoring_inventory(tmp_path):
    """hosts.yaml with monitoring on and Prometheus on node1; secrets and DAGs next to it as the runner expects."""
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data.setdefault("cluster", {})["monitoring"] = True
    data["cluster"]["ssh_config"] = str(ROOT / ".lab" / "ssh_config")
    data["hosts"]["node1"]["roles"].append("monitoring")
    copy = tmp_path / "hosts-monitoring.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / ".secrets").mkdir()
    shutil.copy(ROOT / ".secrets" / "hosts.yaml", tmp_path / ".secrets" / f"{copy.stem}.yaml")
    shutil.copytree(ROOT / "files" / "dags", tmp_path / "files" / "dags")
    return copy


def scrape(host: str, port: int, path="/metrics", src="node2") -> str:
    """A scrape from a cluster host (the firewall admits peers only)."""
    res = ssh(src, f"curl -s -m 10 'http://{address(host)}:{port}{path}'", timeout=60)
    return res.stdout


def wait_for(fn, timeout, what):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        ok, last = fn()
        if ok:
            return last
        time.sleep(5)
    raise AssertionError(f"{what} not true within {timeout}s; last: {str(last)[-1500:]}")


@pytest.fixture(scope="module")
def monitored(deployed, tmp_path_factory):
    copy = monitoring_inventory(tmp_path_factory.mktemp("monitoring"))
    res = inv("deploy", timeout=2400, inventory=copy)
    state = {"inventory": copy, "deploy": res, "restored": False}
    try:
        yield state
    finally:
        if not state["restored"]:                 # the last test did not get to it: monitoring off again
            off = inv("deploy", timeout=2400)
            assert off.returncode == 0, (off.stdout + off.stderr)[-3000:]


@pytest.fixture(scope="module")
def dag_ran(monitored):
    assert monitored["deploy"].returncode == 0, (monitored["deploy"].stdout + monitored["deploy"].stderr)[-4000:]
    api = Airflow("node1")
    api.wait_dag_loaded(DAG)
    run_id = api.trigger(DAG)
    assert api.wait_run(DAG, run_id, timeout=600) == "success"
    return run_id


def test_deploy_with_monitoring_converged(monitored):
    res = monitored["deploy"]
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    for node in NODES:
        assert re.search(rf"^{node}\s+\d+\s+\d+\s+\d+\s+0\s", res.stdout, re.M), res.stdout[-2000:]
    assert not _airflow_restarts(res.stdout), res.stdout[-3000:]


def _airflow_restarts(out: str) -> list[str]:
    """The Airflow units a deploy restarted: none when monitoring is switched (StatsD is always on)."""
    _, _, order = out.partition("restarted (in this order):")
    return re.findall(r"restart (airflow-[a-z-]+)", order)


def test_statsd_exporter_has_airflow_metrics_after_a_dag_run(dag_ran):
    airflow_hosts = hosts_with(*AIRFLOW_ROLES)

    def check():
        text = "\n".join(scrape(h, PORTS["statsd_exporter"]) for h in airflow_hosts)
        ok = (re.search(r"^airflow_scheduler_heartbeat \d", text, re.M)
              and re.search(rf'^airflow_dagrun_duration_count{{dag_id="{DAG}",state="success"}} [1-9]', text, re.M))
        return bool(ok), text
    text = wait_for(check, 90, "scheduler heartbeat + dagrun duration in the StatsD exporters")
    assert all(ln.startswith(("airflow_", "#", "statsd_exporter_")) for ln in text.splitlines() if ln), text[:2000]
    for host in hosts_with("scheduler"):
        assert re.search(r"^airflow_scheduler_heartbeat \d", scrape(host, PORTS["statsd_exporter"]), re.M), host


def test_redis_and_sentinel_exporters(monitored):
    for host in hosts_with("redis"):
        assert re.search(r"^redis_up 1$", scrape(host, PORTS["redis_exporter"]), re.M), host
    for host in hosts_with("sentinel"):
        text = scrape(host, PORTS["redis_exporter"], f"/scrape?target=redis://{address(host)}:26379")
        assert re.search(r'^redis_sentinel_master_status{.*master_status="ok".*} 1$', text, re.M), (host, text[-800:])


def test_postgres_exporter(monitored):
    for host in hosts_with("postgres"):
        assert re.search(r"^pg_up 1$", scrape(host, PORTS["postgres_exporter"]), re.M), host


def test_node_exporter_on_every_host(monitored):
    for host in NODES:
        text = scrape(host, PORTS["node_exporter"])
        assert re.search(r"^node_load1 ", text, re.M) and len(re.findall(r"^node_", text, re.M)) > 20, (host, text[:300])


def test_no_secret_on_exporter_command_lines(monitored):
    pw = yaml.safe_load((ROOT / ".secrets" / "hosts.yaml").read_text())
    for host in NODES:
        out = ssh(host, "ps -eo args").stdout
        leaked = [k for k, v in pw.items() if isinstance(v, str) and len(v) >= 6 and v in out]
        assert not leaked, (host, leaked)
    mode = ssh("node1", "stat -c '%U:%G %a' /etc/prometheus/airflow-ha-redis-passwords.json").stdout.strip()
    assert mode == "root:prometheus 640", mode


def test_prometheus_scrapes_every_target_up(dag_ran):
    patroni = len(hosts_with("postgres")) >= 2          # Patroni /metrics via each member's node exporter
    expected = (1 + len(NODES) + len(hosts_with(*AIRFLOW_ROLES)) + len(hosts_with("redis"))
                + len(hosts_with("postgres")) + len(hosts_with("sentinel"))
                + len(hosts_with("flower")))

    def check():
        try:
            data = json.loads(scrape("node1", PORTS["prometheus"], "/api/v1/targets"))
        except ValueError as exc:
            return False, exc
        targets = data["data"]["activeTargets"]
        summary = sorted((t["labels"]["job"], t["labels"].get("host"), t["health"], t.get("lastError", ""))
                         for t in targets)
        return len(targets) == expected and all(t["health"] == "up" for t in targets), summary
    wait_for(check, 90, f"all {expected} Prometheus targets up")
    if patroni:
        def members():
            res = json.loads(scrape("node1", PORTS["prometheus"], "/api/v1/query?query=patroni_primary"))["data"]
            got = {r["metric"]["host"]: r["value"][1] for r in res["result"]}
            return sorted(got) == sorted(hosts_with("postgres")) and list(got.values()).count("1") == 1, got
        wait_for(members, 90, "patroni_primary of every member, one leader")
        up = json.loads(scrape("node1", PORTS["prometheus"], "/api/v1/query?query=airflow_ha_patroni_metrics_up"))
        assert sorted((r["metric"]["host"], r["value"][1]) for r in up["data"]["result"]) == \
            sorted((h, "1") for h in hosts_with("postgres")), up

    rules = json.loads(scrape("node1", PORTS["prometheus"], "/api/v1/rules"))
    names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"AirflowNoSchedulerHeartbeat", "RedisSentinelsDisagree", "DiskAlmostFull"} <= names
    if patroni:
        assert {"PatroniNoLeader", "PatroniSplitBrain", "PatroniNoSyncStandby", "PatroniReplicaLag"} <= names, names


def test_health_has_an_ok_row_per_exporter(dag_ran, monitored):
    res = inv("health", "--json", timeout=300, inventory=monitored["inventory"])
    checks = json.loads(res.stdout)["checks"]
    rows = [c for c in checks if c["check"].startswith("exporter ")]
    want = (len(NODES) + len(hosts_with(*AIRFLOW_ROLES)) + len(hosts_with("redis", "sentinel"))
            + len(hosts_with("postgres")) + 1)
    assert len(rows) == want, rows
    assert all(c["status"] == "ok" and c["detail"] == "up" for c in rows), rows


def test_second_deploy_with_monitoring_changes_nothing(dag_ran, monitored):
    res = inv("deploy", timeout=1800, inventory=monitored["inventory"])
    assert res.returncode == 0, res.stdout[-3000:]
    assert re.search(r", 0 changed,", res.stdout.strip().splitlines()[-1]), res.stdout[-3000:]


def test_zz_monitoring_off_stops_every_exporter(monitored):
    """Defined last, so it runs last here: the normal inventory stops and disables the exporters."""
    res = inv("deploy", timeout=2400)
    monitored["restored"] = res.returncode == 0
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for host in NODES:
        states = ssh(host, " ".join(f"systemctl is-active {u};" for u in UNITS)).stdout.split()
        assert "active" not in states, (host, states)
    assert not _airflow_restarts(res.stdout), res.stdout[-3000:]
