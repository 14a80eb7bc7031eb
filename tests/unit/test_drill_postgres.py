"""drill.postgres verdicts and drill.node's host choice in both PostgreSQL modes (no lab needed)."""

from __future__ import annotations

import typing
from pathlib import Path

from fabfile import drills
from fabfile.components import load_inventory

SPEC = Path(__file__).resolve().parents[1] / "spec"


def row(power_off=True, write=12.0, first=20.0, rejoin=40.0, rejoined="replica, streaming", state="success",
        failed=0, lost=()):
    times = (100.0, 100.0 + write if write is not None else None, 100.0 + first if first is not None else None,
             rejoin)
    return drills.pg_row("node1", "node2", power_off, times, rejoined, state, failed, 3, list(lost))


def test_pass_reports_every_figure():
    r = row()
    assert r.verdict == "PASS"
    assert "writes again after 12.0s on node2" in r.recovery and "first task done 20.0s" in r.recovery
    assert "3 retries" in r.recovery and "node1 back as replica, streaming after 40s" in r.recovery


def test_missing_figure_fails():
    assert row(write=None).verdict == "FAIL"
    assert row(first=None).verdict == "FAIL"
    assert row(rejoin=None, rejoined="not in /cluster").verdict == "FAIL"


def test_lost_success_or_failed_run_fails():
    assert row(lost=["load_03"]).verdict == "FAIL"
    assert row(state="failed", failed=1).verdict == "FAIL"


def test_old_leader_must_come_back_as_replica_after_power_off_only():
    assert row(rejoined="leader, running").verdict == "FAIL"
    assert row(power_off=False, rejoined="leader, running").verdict == "PASS"   # restarted in place


def test_retries_and_successes():
    tis = [{"task_id": "a", "state": "success", "try_number": 2}, {"task_id": "b", "state": "failed", "try_number": 1},
           {"task_id": "c", "state": "success", "try_number": None}]
    assert drills.retries(tis) == 1
    assert drills.succeeded(tis) == {("a", -1), ("c", -1)}


def test_single_mode_postgres_drill_is_not_covered_with_the_reason():
    class D:
        inv = load_inventory(SPEC / "hosts.yaml")
    [r] = drills.postgres(D())
    assert r.verdict == "NOT COVERED" and "single mode" in r.recovery


def test_node_drill_avoids_only_the_database_primary():
    single = load_inventory(SPEC / "hosts.yaml")
    assert all(not single.hosts[h].has("postgres") for h in drills.node_candidates(single, None))
    patroni = load_inventory(SPEC / "hosts-patroni.yaml")
    cands = drills.node_candidates(patroni, "node1")
    assert cands and "node1" not in cands
    assert drills.node_candidates(patroni, None) == []    # leader unknown: touch no postgres host


def test_kill_postmaster_reads_the_pid_from_the_data_dir_patroni_names():
    assert "postmaster.pid" in drills.KILL_POSTMASTER and "kill -9" in drills.KILL_POSTMASTER
    assert "data_dir:" in drills.KILL_POSTMASTER


class SentinelLab:
    """Fake hosts for move_master_to: a failover promotes the replica with the highest replica-priority
    above 0, ties going the way the real lab went (node3 -> node1 -> node3 ...: node2 never chosen)."""

    PREFERS: typing.ClassVar = {"node3": ["node1", "node2"], "node1": ["node3", "node2"], "node2": ["node1", "node3"]}

    def __init__(self, inv, master):
        from types import SimpleNamespace
        self.inv, self.master, self.log = inv, master, []
        self.priority = {h.name: "100" for h in inv.with_role("redis")}
        self.in_file = dict(self.priority)          # redis.conf: what a restart comes back with
        addresses = {n: f"10.0.0.{i}" for i, n in enumerate(inv.hosts, 11)}
        self.run = SimpleNamespace(inv=inv, addresses=addresses,
                                   secrets={"redis_password": "r", "sentinel_password": "s"})

    def sh(self, host, script, timeout=60):
        if "SET replica-priority" in script:
            self.priority[host] = script.split("SET replica-priority ")[1].split()[0]
            self.log.append(("priority", host, self.priority[host]))
            if "CONFIG REWRITE" in script:
                self.in_file[host] = self.priority[host]
            return "OK"
        if "GET replica-priority" in script:
            return f"replica-priority\n{self.priority[host]}\n"
        if "SENTINEL FAILOVER" in script:
            order = self.PREFERS[self.master]
            self.master = next(n for n in order if int(self.priority[n]) > 0)
            self.log.append(("failover", self.master))
            self.in_file = dict(self.priority)      # Sentinel's CONFIG REWRITE on every host it reconfigures
        return ""

    def redis_master(self, asking):
        return self.run.addresses[self.master]

    def wait_healthy(self, timeout=300):
        pass


def test_move_master_reaches_the_eligible_host_and_restores_priorities(monkeypatch):
    """Seen on the lab: from node3, failovers went node1 <-> node3 and never to node2 (the only eligible)."""
    monkeypatch.setattr(drills.time, "sleep", lambda s: None)
    lab = SentinelLab(load_inventory(SPEC / "hosts.yaml"), master="node3")
    assert drills.move_master_to(lab, ["node2"]) == "node2"
    assert lab.log[:2] == [("priority", "node1", "0"), ("priority", "node3", "0")]
    assert [e for e in lab.log if e[0] == "failover"] == [("failover", "node2")]
    assert lab.priority == {"node1": "100", "node2": "100", "node3": "100"}
    assert lab.in_file == lab.priority, "a priority 0 left in redis.conf returns at the next restart"


def test_move_master_raises_an_eligible_host_left_at_priority_0(monkeypatch):
    """A 0 left in redis.conf by an earlier move (before the fix) made node2 unpromotable in CI."""
    monkeypatch.setattr(drills.time, "sleep", lambda s: None)
    lab = SentinelLab(load_inventory(SPEC / "hosts.yaml"), master="node3")
    lab.priority["node2"] = lab.in_file["node2"] = "0"
    assert drills.move_master_to(lab, ["node2"]) == "node2"
    assert lab.in_file == lab.priority == {"node1": "100", "node2": "100", "node3": "100"}
