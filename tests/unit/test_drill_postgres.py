"""drill.postgres verdicts and drill.node's host choice in both PostgreSQL modes (no lab needed)."""

from __future__ import annotations

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
