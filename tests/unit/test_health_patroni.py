"""Patroni-mode health rows: verdicts from recorded REST answers (shape of Patroni's GET /cluster docs).

samples/patroni_cluster_sync.json: a healthy 3-member cluster in synchronous_mode (Patroni 3.0.2 reports a
replica's state as "running"); samples/patroni_cluster_failover.json: after a failover, the old leader
stopped with lag "unknown", a replica in the 3.0.4+ "streaming" state.
"""

from __future__ import annotations

import json
from pathlib import Path

from fabfile import etcd, health, patroni, postgres
from fabfile.components import load_inventory

SAMPLES = Path(__file__).resolve().parent / "samples"
MEMBERS = ["node1", "node2", "node3"]
SYNC = (SAMPLES / "patroni_cluster_sync.json").read_text()
FAILOVER = (SAMPLES / "patroni_cluster_failover.json").read_text()


def rows(views, primaries, sync=True):
    return {(c.host, c.check): c for c in patroni.patroni_checks(MEMBERS, views, primaries, sync)}


def test_healthy_cluster_is_all_ok():
    r = rows(dict.fromkeys(MEMBERS, SYNC), {"node1": "200", "node2": "503", "node3": "503"})
    assert {c.status for c in r.values()} == {"ok"}
    assert r[("cluster", "patroni leader")].detail == "node1"
    assert r[("cluster", "sync standby")].detail == "node2"
    assert r[("node3", "patroni member")].detail == "replica, running, TL 3, lag 1024"


def test_two_primaries_is_split_brain():
    r = rows(dict.fromkeys(MEMBERS, SYNC), {"node1": "200", "node2": "200", "node3": "503"})
    c = r[("cluster", "patroni leader")]
    assert c.status == "fail" and "SPLIT BRAIN" in c.detail and "node1 and node2" in c.detail


def test_views_naming_different_leaders_is_split_brain():
    r = rows({"node1": SYNC, "node2": FAILOVER, "node3": FAILOVER}, {"node1": "503", "node2": "200", "node3": "503"})
    c = r[("cluster", "patroni leader")]
    assert c.status == "fail" and "different leaders" in c.detail


def test_no_primary_fails_and_names_the_silent():
    r = rows({"node2": SYNC}, {"node1": "", "node2": "503", "node3": "000"})
    c = r[("cluster", "patroni leader")]
    assert c.status == "fail" and "node1" in c.detail and "node3" in c.detail


def test_no_cluster_answer_at_all_fails_every_member():
    r = rows({}, {})
    assert all(r[(h, "patroni member")].status == "fail" for h in MEMBERS)
    assert ("cluster", "replication lag") not in r     # no verdict from missing data


def test_after_failover_the_stopped_old_leader_fails_and_lag_unknown_warns():
    r = rows({"node2": FAILOVER, "node3": FAILOVER}, {"node1": "", "node2": "200", "node3": "503"}, sync=False)
    assert r[("cluster", "patroni leader")].status == "warn"          # node1 did not answer
    assert r[("node1", "patroni member")].status == "fail"
    assert r[("node3", "patroni member")].status == "ok"              # "streaming" (3.0.4+)
    lag = r[("cluster", "replication lag")]
    assert lag.status == "warn" and "unknown: node1" in lag.detail
    assert ("cluster", "sync standby") not in r


def test_member_missing_from_view_fails():
    view = json.loads(SYNC)
    view["members"] = view["members"][:2]
    r = rows({h: json.dumps(view) for h in MEMBERS}, {"node1": "200", "node2": "503", "node3": ""})
    assert r[("node3", "patroni member")].status == "fail"


def test_lag_thresholds():
    def lag(n):
        return patroni.lag_check([{"name": "node2", "role": "replica", "state": "running", "lag": n}]).status
    assert lag(0) == "ok"
    assert lag(patroni.LAG_WARN_BYTES) == "warn"
    assert lag(patroni.LAG_FAIL_BYTES) == "fail"


def test_no_sync_standby_in_synchronous_mode_fails():
    view = json.loads(SYNC)
    view["members"][1]["role"] = "replica"
    r = rows({h: json.dumps(view) for h in MEMBERS}, {"node1": "200", "node2": "503", "node3": "503"})
    assert r[("cluster", "sync standby")].status == "fail"


def test_garbage_answer_is_no_answer():
    r = rows({"node1": "<html>", "node2": "[]", "node3": ""}, {"node1": "200"})
    assert all(r[(h, "patroni member")].status == "fail" for h in MEMBERS)


def test_etcd_quorum():
    ok = "http://192.0.2.11:2379 is healthy: successfully committed proposal: took = 2.1ms"
    bad = "http://192.0.2.12:2379 is unhealthy: failed to commit proposal: context deadline exceeded"
    all_ok = etcd.etcd_checks(MEMBERS, dict.fromkeys(MEMBERS, ok))
    assert {c.status for c in all_ok} == {"ok"}
    one_down = {(c.host, c.check): c for c in etcd.etcd_checks(MEMBERS, {"node1": ok, "node2": bad})}
    assert one_down[("node2", "etcd")].status == "fail"
    assert one_down[("node3", "etcd")].detail == "no answer"
    assert one_down[("cluster", "etcd quorum")].status == "fail"      # 1/3 < quorum 2
    two = etcd.etcd_checks(MEMBERS, {"node1": ok, "node3": ok})
    assert two[-1].status == "warn" and two[-1].detail == "2/3 healthy, quorum 2"


def test_conninfo_multi_host_targets_the_writable_member():
    assert postgres.conninfo([4001], False) == {"host": "127.0.0.1", "port": 4001}
    c = postgres.conninfo([4001, 4002, 4003], True)
    assert c["port"] == "4001,4002,4003" and c["host"].count(",") == 2
    assert c["target_session_attrs"] == "read-write"


def test_host_script_asks_patroni_and_etcd_in_patroni_mode_only():
    from fabfile.core.offline import fresh_run
    spec = Path(__file__).resolve().parents[1] / "spec"
    for name, patroni_mode in (("hosts-patroni.yaml", True), ("hosts.yaml", False)):
        inv = load_inventory(spec / name)
        run = fresh_run(inv, (spec / "os-release" / "debian-12").read_text())
        host = inv.with_role("postgres")[0]
        script = health.host_script(run, host)
        assert ("@@pcluster" in script and "/primary" in script) is patroni_mode
        assert ("ETCDCTL_API=3" in script) is (patroni_mode and host.has("etcd"))


def test_primary_is_found_port_by_port_when_the_multi_host_connect_fails(monkeypatch):
    """A forward to a stopped first member ends the libpq startup: each port is then tried alone."""
    import types

    import psycopg2

    from fabfile import postgres
    tried = []

    def connect(**kw):
        tried.append(kw["port"])
        if "," in kw["port"] or kw["port"] == "5001":
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return "conn"
    monkeypatch.setattr(psycopg2, "connect", connect)
    monkeypatch.setattr(postgres, "patroni_mode", lambda inv: True)
    run = types.SimpleNamespace(inv=types.SimpleNamespace(settings=types.SimpleNamespace(check_timeout=3)),
                                secrets={"postgres_password": "pw"})
    assert postgres.connect_primary(run, [5001, 5002, 5003]) == "conn"
    assert tried == ["5001,5002,5003", "5001", "5002"]
