"""`inv patch` (issue 16): one host at a time, drained the same way as a rolling restart, rebooted only when
the OS says so, gated; the order and the drains on fake hosts (no SSH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabfile import nginx, patch, redis
from fabfile.components import load_inventory
from fabfile.core.offline import facts_text, synthetic_facts
from fabfile.core.remote import Result
from tests.unit import test_rolling as rolling

SPEC = Path(__file__).resolve().parents[1] / "spec"
EL9 = (SPEC / "os-release" / "rocky-9").read_text()


class PatchHost:
    """Answers patch's scripts and logs them: stops/starts, the upgrade, the reboot question and the reboot."""

    def __init__(self, name, log, reboot=False, fail_upgrade=False):
        self.name, self.log, self.reboot, self.fail_upgrade = name, log, reboot, fail_upgrade
        self.round_trips, self.boot = 0, "boot-1"

    def close(self):
        pass

    def gather(self, questions):
        """Debian facts, no connect answers (no round trip: the counts are patch's own)."""
        return facts_text(rolling.DEBIAN, self.name), {}

    def sh(self, script, timeout=0):
        self.round_trips += 1
        if "upgrade" in script and ("apt-get" in script or "dnf" in script):
            self.log.append(("upgrade", self.name))
            return Result(1 if self.fail_upgrade else 0, "", "")
        if "reboot-required" in script or "needs-restarting" in script:
            return Result(0, "reboot\n" if self.reboot else "", "")
        if "systemctl reboot" in script:
            self.log.append(("reboot", self.name))
            self.boot = "boot-2"
            return Result(0, "", "")
        if "boot_id" in script:
            return Result(0, self.boot + "\n", "")
        if script.startswith(("systemctl stop", "systemctl start")):
            self.log.append((script.split()[1], self.name, " ".join(script.split()[2:])))
            return Result(0, "", "")
        if "apt list --upgradable" in script:
            return Result(0, "redis-server 5:7.0.15-1~deb12u2\nlibc6 2.36-9+deb12u9\n", "")
        return Result(0, "", "")


@pytest.fixture
def cluster(monkeypatch):
    """The spec inventory on fake hosts; the Redis master on node1; failover, drains and gates logged."""
    log: list = []
    inv = load_inventory(SPEC / "hosts.yaml")
    hosts = {n: PatchHost(n, log) for n in inv.hosts}
    run = rolling.FakeRun(inv, list(inv.hosts.values()), patch.Options(gate_timeout=0.05, gate_interval=0.01))
    run.remote = lambda name: hosts[name]
    run.connect()
    run.data["redis_master"] = run.addresses["node1"]

    def failover(r):
        log.append(("failover",))
        r.data["redis_master"] = r.addresses["node2"]
    monkeypatch.setattr(redis, "failover", failover)
    monkeypatch.setattr(nginx, "set_drained", lambda r, host, drained: log.append(
        ("drain" if drained else "undrain", host.name)))
    monkeypatch.setattr(patch, "gates", lambda r, host: [lambda r, h: log.append(("gate", h.name))])
    monkeypatch.setattr(patch.time, "sleep", lambda s: None)
    return run, hosts, log


def patch_all(run, hosts, reboot=True) -> list:
    done = []
    for host in patch.order(run, list(run.inv.hosts.values())):
        why = patch.patch_host(run, host, reboot)
        done.append((host.name, why))
        if why:
            break
    return done


def test_hosts_are_patched_one_at_a_time_api_servers_first_redis_master_last(cluster):
    run, hosts, log = cluster
    assert patch_all(run, hosts) == [("node2", None), ("node3", None), ("node1", None)]
    assert log == [
        ("drain", "node2"), ("stop", "node2", "keepalived airflow-worker"), ("upgrade", "node2"),
        ("start", "node2", "keepalived airflow-worker"), ("gate", "node2"), ("undrain", "node2"),
        ("stop", "node3", "keepalived airflow-worker"), ("upgrade", "node3"),
        ("start", "node3", "keepalived airflow-worker"), ("gate", "node3"),
        ("failover",), ("drain", "node1"), ("stop", "node1", "keepalived airflow-worker"), ("upgrade", "node1"),
        ("start", "node1", "keepalived airflow-worker"), ("gate", "node1"), ("undrain", "node1"),
    ]


def test_a_host_that_asks_for_it_is_rebooted_and_waited_for(cluster):
    run, hosts, log = cluster
    hosts["node3"].reboot = True
    patch_all(run, hosts)
    mine = [e for e in log if e[1:2] == ("node3",)]
    assert mine == [("stop", "node3", "keepalived airflow-worker"), ("upgrade", "node3"), ("reboot", "node3"),
                    ("gate", "node3")], "after a reboot systemd starts the units; the gate waits for them"


def test_no_reboot_leaves_it_and_starts_the_units_again(cluster):
    run, hosts, log = cluster
    hosts["node3"].reboot = True
    patch_all(run, hosts, reboot=False)
    assert ("reboot", "node3") not in log and ("start", "node3", "keepalived airflow-worker") in log


def test_a_failed_upgrade_stops_the_run_before_the_next_host(cluster):
    run, hosts, log = cluster
    hosts["node3"].fail_upgrade = True
    assert patch_all(run, hosts)[-1] == ("node3", "apt upgrade failed (exit 1)")
    assert not [e for e in log if e[1:2] == ("node1",)] and ("failover",) not in log


def test_check_lists_pending_updates_in_patch_order(cluster):
    run, _hosts, _ = cluster
    lines = patch.check_lines(run, list(run.inv.hosts.values()), patch.pending(run, list(run.inv.hosts.values())))
    assert lines[0].startswith("1. node2    2 update(s); VIP moved, api-server drained, worker warm shutdown")
    assert lines[1:3] == ["     redis-server 5:7.0.15-1~deb12u2", "     libc6 2.36-9+deb12u9"]
    assert "DOWNTIME: single database" in lines[3] and lines[3].startswith("2. node3")
    assert lines[6].startswith("3. node1    2 update(s); Redis master failed over")


def test_el9_scripts():
    assert patch.upgrade_script("dnf") == "timeout 1800 dnf -y -q upgrade"
    assert "needs-restarting -r" in patch.reboot_needed_script("dnf")
    assert "dnf -q check-update" in patch.refresh_script("dnf")
    assert synthetic_facts(EL9, "n").platform.pkg == "dnf"
