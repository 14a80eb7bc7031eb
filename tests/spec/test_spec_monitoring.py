"""Spec tests of the monitoring component (issue 9), planned offline (no host, no connection).

The spec inventory has monitoring off (the goldens stay as they are); here it is switched on, with node1
given the `monitoring` role, and the Debian 12 plan is checked: packages, files, units, listen addresses,
no secret on any command line, and the shipped Prometheus config / rules / StatsD mapping parse.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from fabfile import health, monitoring
from fabfile.components import load_inventory
from fabfile.core.errors import PlatformError
from fabfile.core.offline import fresh_run, synthetic_facts
from fabfile.core.secrets import GENERATORS
from fabfile.core.steps import Service
from tests.spec.plans import deploy_plan

pytestmark = pytest.mark.spec

HERE = Path(__file__).resolve().parent
FILES = HERE.parents[1] / "files" / "monitoring"
ADDR = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}


def os_release(name: str) -> str:
    return (HERE / "os-release" / name).read_text()


def monitored(inv):
    hosts = dict(inv.hosts)
    hosts["node1"] = dataclasses.replace(hosts["node1"], roles=hosts["node1"].roles | {"monitoring"})
    return dataclasses.replace(inv, settings=dataclasses.replace(inv.settings, monitoring=True), hosts=hosts)


@pytest.fixture(scope="module")
def inv():
    return monitored(load_inventory(HERE / "hosts.yaml"))


def monitoring_plan(inv) -> dict:
    """host -> the monitoring steps planned for a fresh Debian 12 host."""
    return {h: [s for s in steps if s.component == "monitoring"]
            for h, steps in deploy_plan(inv, os_release("debian-12")).items()}


@pytest.fixture(scope="module")
def plan(inv):
    return monitoring_plan(inv)


def step(plan, host, label):
    found = [s for s in plan[host] if s.label == label]
    assert found, f"{host}: no step {label!r} in {[s.label for s in plan[host]]}"
    return found[0]


def test_packages_per_host(plan):
    want = {"node1": "prometheus-node-exporter prometheus-redis-exporter prometheus",
            "node2": "prometheus-node-exporter prometheus-redis-exporter",
            "node3": "prometheus-node-exporter prometheus-redis-exporter prometheus-postgres-exporter"}
    for host, pkgs in want.items():
        assert step(plan, host, "packages monitoring packages").desc == f"install {pkgs}"
    assert "statsd" not in " ".join(s.script for steps in plan.values() for s in steps if s.label.startswith("packages"))


def test_units_started_where_they_belong(plan):
    started = {h: {s.label.split()[1] for s in steps if s.label.startswith("service") and "start" in s.desc}
               for h, steps in plan.items()}
    common = {"prometheus-node-exporter", "airflow-ha-statsd-exporter", "prometheus-redis-exporter"}
    assert started["node1"] == common | {"prometheus"}
    assert started["node2"] == common
    assert started["node3"] == common | {"prometheus-postgres-exporter"}


def test_every_exporter_listens_on_the_cluster_address(plan):
    for host, addr in ADDR.items():
        node = step(plan, host, "file /etc/default/prometheus-node-exporter").script
        assert f'ARGS="--web.listen-address={addr}:9100 --collector.textfile.directory=' in node
        unit = step(plan, host, "file /etc/systemd/system/airflow-ha-statsd-exporter.service").script
        assert "--statsd.listen-udp=127.0.0.1:9125" in unit and f"--web.listen-address={addr}:9102" in unit
        assert "/opt/airflow/venvs/current/bin/python /usr/local/lib/airflow-ha/statsd_exporter.py" in unit
        redis = step(plan, host, "file /etc/default/prometheus-redis-exporter").script
        assert f"-web.listen-address={addr}:9121 -redis.addr=redis://{addr}:6379" in redis
    pg = step(plan, "node3", "file /etc/default/prometheus-postgres-exporter").script
    assert 'ARGS="--web.listen-address=192.0.2.13:9187"' in pg
    assert "DATA_SOURCE_NAME='user=prometheus host=/run/postgresql port=5432 dbname=postgres sslmode=disable'" in pg
    prom = step(plan, "node1", "file /etc/default/prometheus").script
    assert 'ARGS="--config.file=/etc/prometheus/prometheus.yml --web.listen-address=192.0.2.11:9090"' in prom


def test_no_password_on_any_command_line(plan):
    placeholders = [f"<{k}>" for k in GENERATORS]
    lines = [ln for steps in plan.values() for s in steps for ln in s.script.splitlines()
             if re.search(r"ARGS=|ExecStart=|DATA_SOURCE_NAME=", ln)]
    assert len(lines) >= 12
    for ln in lines:
        assert not any(p in ln for p in placeholders), ln
        bare = re.sub(r"-redis\.password-file=[^\s\"]+", "", ln)   # the path of the 0640 file is fine
        assert not re.search(r"password|PASSWORD", bare), ln


def test_secret_files_are_private_and_complete(plan):
    for host, addr in ADDR.items():
        s = step(plan, host, "file /etc/prometheus/airflow-ha-redis-passwords.json").script
        head, body = s.split("\n", 1)
        assert head.endswith("(root:prometheus 640)")
        assert json.loads(body) == {f"redis://{addr}:6379": "<redis_password>",
                                    f"redis://{addr}:26379": "<sentinel_password>"}
    flower = step(plan, "node1", "file /etc/prometheus/airflow-ha-flower.password").script
    assert flower.startswith("write /etc/prometheus/airflow-ha-flower.password (root:prometheus 640)\n<flower_password>")


def test_postgres_role_by_peer_auth_no_password(plan):
    cmd = step(plan, "node3", "command postgres role prometheus")
    assert "GRANT pg_monitor TO prometheus;" in cmd.script and "PASSWORD" not in cmd.script.upper()
    assert "runuser -u postgres -- psql -p 5432" in cmd.script


def test_prometheus_config_validated_before_start(plan):
    labels = [s.label for s in plan["node1"]]
    check = labels.index("command prometheus-config")
    assert labels.index("file /etc/prometheus/prometheus.yml") < check < labels.index("service prometheus")
    script = plan["node1"][check].script
    assert "promtool check config /etc/prometheus/prometheus.yml" in script
    assert "promtool check rules /etc/prometheus/airflow-ha-alerts.yml" in script


def test_prometheus_scrapes_every_exporter_of_every_host(plan):
    text = step(plan, "node1", "file /etc/prometheus/prometheus.yml").script.split("\n", 1)[1]
    cfg = yaml.safe_load(text)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"prometheus", "node", "airflow", "redis", "postgres", "sentinel", "flower"}

    def targets(job):
        return sorted(t for sc in jobs[job]["static_configs"] for t in sc["targets"])
    assert targets("node") == [f"{a}:9100" for a in ADDR.values()]
    assert targets("airflow") == [f"{a}:9102" for a in ADDR.values()]
    assert targets("redis") == [f"{a}:9121" for a in ADDR.values()]
    assert targets("postgres") == ["192.0.2.13:9187"]
    assert targets("sentinel") == [f"redis://{a}:26379" for a in ADDR.values()]
    assert jobs["flower"]["basic_auth"]["password_file"] == "/etc/prometheus/airflow-ha-flower.password"
    assert cfg["rule_files"] == ["/etc/prometheus/airflow-ha-alerts.yml"]


def test_alert_rules_cover_the_issue():
    rules = [r for g in yaml.safe_load((FILES / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"AirflowNoSchedulerHeartbeat", "AirflowNoCeleryWorker", "RedisNoSingleMaster", "RedisSentinelsDisagree",
            "RedisReplicationBroken", "DiskAlmostFull"} <= names
    assert all(r["expr"] and r["labels"]["severity"] in ("warning", "critical") for r in rules)


def _bridge():
    spec = importlib.util.spec_from_file_location("statsd_bridge", FILES / "statsd_exporter.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_statsd_mapping_gives_labelled_airflow_metrics():
    bridge = _bridge()
    exporter = bridge.Exporter(str(FILES / "statsd_mapping.yml"), log=lambda message: None)
    for line in ("airflow.scheduler_heartbeat:1|c", "airflow.scheduler_heartbeat:1|c",
                 "airflow.dagrun.duration.success.test_ha_celery_workers:1500|ms",
                 "airflow.ti.finish.d1.t1.success:1|c", "airflow.ti.finish:1|c",
                 "airflow.pool.open_slots.default_pool:128|g", "airflow.pool.open_slots:128|g",
                 "airflow.dag_processing.processes:+1|g", "airflow.dag_processing.processes:+1|g",
                 "airflow.dag_processing.processes:-1|g", "airflow.SchedulerJob_start:1|c", "garbage"):
        exporter.datagram(line.encode())
    out = exporter.render()
    assert "airflow_scheduler_heartbeat 2.0" in out
    assert 'airflow_dagrun_duration_sum{dag_id="test_ha_celery_workers",state="success"} 1.5' in out
    assert 'airflow_dagrun_duration_count{dag_id="test_ha_celery_workers",state="success"} 1' in out
    assert 'airflow_ti_finish{dag_id="d1",state="success",task_id="t1"} 1.0' in out
    assert 'airflow_pool_open_slots{pool="default_pool"} 128.0' in out and "airflow_pool_open_slots 128" not in out
    assert "airflow_dag_processing_processes 1.0" in out
    assert 'airflow_job_start{job_name="SchedulerJob"} 1.0' in out
    assert "statsd_exporter_lines_invalid_total 1.0" in out


def test_health_probes_each_expected_exporter(inv):
    run = fresh_run(inv, os_release("debian-12"))
    node3 = health.host_script(run, inv.hosts["node3"])
    for port in (9100, 9102, 9121, 9187):
        assert f"http://192.0.2.13:{port}/metrics" in node3
    assert ":9090/metrics" in health.host_script(run, inv.hosts["node1"]) and ":9090" not in node3
    off = load_inventory(HERE / "hosts.yaml")
    run_off = fresh_run(off, os_release("debian-12"))
    assert "@@exporter" not in health.host_script(run_off, off.hosts["node3"])


def test_monitoring_refused_on_el9(inv):
    with pytest.raises(PlatformError, match="monitoring is not available on almalinux 9"):
        deploy_plan(inv, os_release("almalinux-9"))


def test_monitoring_off_stops_exporters_left_running():
    """Off: every exporter unit is planned absent; a fresh host plans nothing, a host that had them stops them."""
    off = load_inventory(HERE / "hosts.yaml")
    assert not [s for steps in deploy_plan(off, os_release("debian-12")).values() for s in steps
                if s.component == "monitoring"]
    from fabfile.core.runner import HostContext
    run = fresh_run(off, os_release("debian-12"))
    ctx = run.context(off.hosts["node3"])
    steps = monitoring.steps(ctx)
    assert all(isinstance(s, Service) and not s.present for s in steps)
    assert {s.target for s in steps} == {"prometheus-node-exporter", "airflow-ha-statsd-exporter",
                                         "prometheus-redis-exporter", "prometheus-postgres-exporter", "prometheus",
                                         "airflow-ha-patroni-metrics.timer"}
    change = steps[0].plan("enabled\nactive\n", set())
    assert change.script == "systemctl disable --now prometheus-node-exporter"
    ctx_el = HostContext(run, off.hosts["node3"], synthetic_facts(os_release("rocky-9"), "node3"))
    assert monitoring.steps(ctx_el) == []
