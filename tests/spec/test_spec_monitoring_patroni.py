"""Spec tests of monitoring in Patroni mode (issue 15 item 7), planned offline on Debian 12.

postgres_exporter on every member, its role created on the leader only (a replica waits for it), each
member's Patroni /metrics copied every 15 s into the node exporter's textfile collector (None -> NaN: Patroni
3.0 prints None for a replica's unknown timeline and Prometheus would mark a direct scrape down), and the
Patroni alert rules: no leader, split brain,
no sync standby (only with synchronous_mode), replica lag. Metric names are those of Patroni's /metrics
(Patroni docs "Monitoring endpoint").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from fabfile import monitoring, patroni
from fabfile.components import load_inventory
from tests.spec.plans import deploy_plan

from .test_spec_monitoring import ADDR, monitored, monitoring_plan, os_release, step

pytestmark = pytest.mark.spec

HERE = Path(__file__).resolve().parent
#: the gauges of Patroni 3.0's GET /metrics the rules may use
PATRONI_METRICS = {"patroni_primary", "patroni_replica", "patroni_sync_standby", "patroni_postgres_running",
                   "patroni_xlog_location", "patroni_xlog_replayed_location", "patroni_xlog_received_location"}


@pytest.fixture(scope="module")
def inv():
    return monitored(load_inventory(HERE / "hosts-patroni.yaml"))


@pytest.fixture(scope="module")
def plan(inv):
    return monitoring_plan(inv)


def rules(inv) -> dict:
    return {r["alert"]: r for g in yaml.safe_load(monitoring.patroni_rules(inv))["groups"] for r in g["rules"]}


def test_exporter_on_every_member_role_on_the_leader_only(plan):
    for host in ADDR:
        cmd = step(plan, host, "command postgres role prometheus")
        assert "SELECT pg_is_in_recovery()" in cmd.script           # replicas are read-only: they wait
        assert cmd.script.index("CREATE ROLE prometheus") < cmd.script.index("for i in $(seq")
        assert "GRANT pg_monitor TO prometheus" in cmd.script
        step(plan, host, "service prometheus-postgres-exporter")


def test_patroni_metrics_through_the_textfile_collector_and_rules_file(plan):
    for host, addr in ADDR.items():
        script = step(plan, host, "file /usr/local/lib/airflow-ha/patroni-metrics.sh").script
        assert f"curl -sf -m 5 http://{addr}:8008/metrics" in script and "s/ (None|null)$/ NaN/" in script
        assert "/var/lib/prometheus/node-exporter" in script and "airflow_ha_patroni_metrics_up" in script
        step(plan, host, "service airflow-ha-patroni-metrics.timer")
        node = step(plan, host, "file /etc/default/prometheus-node-exporter").script
        assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in node
    text = step(plan, "node1", "file /etc/prometheus/prometheus.yml").script.split("\n", 1)[1]
    cfg = yaml.safe_load(text)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "patroni" not in jobs          # a direct scrape fails on a replica's `None`
    assert sorted(t for sc in jobs["postgres"]["static_configs"] for t in sc["targets"]) == \
        [f"{a}:9187" for a in ADDR.values()]
    assert cfg["rule_files"] == ["/etc/prometheus/airflow-ha-alerts.yml", "/etc/prometheus/airflow-ha-alerts-patroni.yml"]
    check = step(plan, "node1", "command prometheus-config").script
    assert "promtool check rules /etc/prometheus/airflow-ha-alerts.yml /etc/prometheus/airflow-ha-alerts-patroni.yml" \
        in check
    step(plan, "node1", "file /etc/prometheus/airflow-ha-alerts-patroni.yml")


def test_patroni_rules_cover_the_issue(inv):
    r = rules(inv)
    assert {"PatroniNoLeader", "PatroniSplitBrain", "PatroniNoSyncStandby", "PatroniReplicaLag"} <= set(r)
    assert all(x["expr"] and x["labels"]["severity"] in ("warning", "critical") for x in r.values())
    assert str(patroni.LAG_WARN_BYTES) in r["PatroniReplicaLag"]["expr"]
    used = {w for x in r.values() for w in _names(x["expr"]) if w.startswith("patroni_")}
    assert used and used <= PATRONI_METRICS
    assert 'job="patroni"' not in monitoring.patroni_rules(inv)


def test_no_sync_standby_rule_only_with_synchronous_mode(inv):
    postgres = dataclasses.replace(inv.settings.postgres, synchronous_mode=False)
    off = dataclasses.replace(inv, settings=dataclasses.replace(inv.settings, postgres=postgres))
    assert "PatroniNoSyncStandby" not in rules(off)


def test_single_mode_has_no_patroni_job():
    single = monitored(load_inventory(HERE / "hosts.yaml"))
    plan = deploy_plan(single, os_release("debian-12"))
    text = next(s for s in plan["node1"] if s.label == "file /etc/prometheus/prometheus.yml").script
    assert "patroni" not in text


def _names(expr: str) -> set[str]:
    import re
    return set(re.findall(r"[a-z_]+(?=\{|\)| )", expr))
