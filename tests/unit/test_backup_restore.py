"""`inv restore` in Patroni mode against fake hosts: the order of what it does on which host, what it never
touches when a step fails, the etcd reset that keeps the dynamic configuration, and archive_mode per member."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from fabfile import backup, backup_tasks, patroni
from fabfile.components import load_inventory
from fabfile.core import inventory
from fabfile.core.facts import platform_from_os_release

SPEC = Path(__file__).resolve().parents[1] / "spec"
PLATFORM = platform_from_os_release((SPEC / "os-release" / "debian-12").read_text())
LAYOUT = """
hosts:
  node1: {address: 10.0.0.11, roles: [redis, sentinel, postgres, api_server, scheduler, triggerer, worker, nginx]}
  node2: {address: 10.0.0.12, roles: [redis, sentinel, postgres, api_server, scheduler, dag_processor, worker, nginx]}
  node3: {address: 10.0.0.13, roles: [redis, sentinel, postgres, worker, flower, nginx]}
  node4: {address: 10.0.0.14, roles: [backup]}
"""
TARGET = "2026-06-01 12:00:00+00"


@dataclass
class Result:
    ok: bool = True
    rc: int = 0
    out: str = ""
    err: str = ""


@dataclass
class FakeRun:
    """Records (host, script) in order; a script matching `fail` exits 1."""

    inv: inventory.Inventory
    fail: str = "$^"
    calls: list = field(default_factory=list)

    def __post_init__(self):
        self.addresses = {h.name: h.address for h in self.inv.hosts.values()}
        self.facts = {name: SimpleNamespace(platform=PLATFORM) for name in self.inv.hosts}

    def remote(self, host):
        def sh(script, timeout=None):
            self.calls.append((host, script))
            if re.search(self.fail, script):
                return Result(ok=False, rc=1, err="boom")
            return Result(out="FERNET_OK\n" if "FERNET_CHECK" in script or "get_fernet" in script else "")
        return SimpleNamespace(sh=sh)

    def parallel(self, fn, items):
        return [fn(i) for i in items]

    def mask(self, text):
        return text

    def on(self, host, pattern) -> list[int]:
        """Indexes of the calls on `host` whose script matches `pattern`."""
        return [i for i, (h, s) in enumerate(self.calls) if h == host and re.search(pattern, s)]


@pytest.fixture
def run(tmp_path, monkeypatch):
    path = tmp_path / "hosts.yaml"
    path.write_text(textwrap.dedent(LAYOUT))
    healthy = []
    monkeypatch.setattr(backup_tasks, "Drill", lambda inv_path: SimpleNamespace(
        wait_healthy=lambda timeout: healthy.append(inv_path), close=lambda: None))
    fake = FakeRun(load_inventory(path))
    fake.healthy = healthy
    return fake


def restore(run, leader="node2", label="20260601-010002F"):
    backup_tasks.Restore(run, leader, TARGET, label).execute()


def first(run, host, pattern) -> int:
    hits = run.on(host, pattern)
    assert hits, f"nothing matching {pattern!r} ran on {host}"
    return hits[0]


def test_patroni_restore_runs_in_order_on_the_right_hosts(run):
    restore(run)
    airflow_stopped = max(first(run, h, r"systemctl stop airflow-") for h in ("node1", "node2", "node3"))
    patroni_stops = [first(run, h, r"systemctl stop patroni@15-main") for h in ("node1", "node3", "node2")]
    assert patroni_stops == sorted(patroni_stops), "replicas stop before the leader"
    restored = first(run, "node2", r"pgbackrest --stanza=airflow --delta --type=time")
    pg_ctl = first(run, "node2", r"pg_ctl .* start")
    reset = first(run, "node1", r"etcdctl")                       # the first etcd host
    leader_up = first(run, "node2", r"systemctl start patroni@15-main")
    recloned = [first(run, h, r"find /var/lib/postgresql/15/main -mindepth 1 -delete") for h in ("node1", "node3")]
    db_check = first(run, "node1", r"airflow.* db check")
    started = first(run, "node1", r"systemctl start airflow-")
    assert first(run, "node2", r"--log-level-console=warn check") < airflow_stopped < patroni_stops[0]
    assert patroni_stops[-1] < restored < pg_ctl < reset < leader_up < min(recloned)
    assert max(recloned) < db_check < started and run.healthy
    api = [first(run, h, r"systemctl start airflow-api-server") for h in ("node1", "node2")]
    schedulers = [first(run, h, r"systemctl start airflow-scheduler") for h in ("node1", "node2")]
    assert max(api) < min(schedulers), "the Execution API starts before any scheduler"


def test_restore_command_names_target_set_and_promotes(run):
    restore(run)
    cmd = run.calls[first(run, "node2", r"--delta")][1]
    assert "'--target=2026-06-01 12:00:00+00'" in cmd and "--target-action=promote" in cmd
    assert "--set=20260601-010002F" in cmd and cmd.startswith("runuser -u postgres -- pgbackrest")
    start = run.calls[first(run, "node2", r"pg_ctl .* start")][1]
    assert "-c config_file=/etc/postgresql/15/main/postgresql.conf" in start
    reset = run.calls[first(run, "node2", r"ALTER SYSTEM RESET restore_command")][1]
    assert "recovery_target_time" in reset and reset.rstrip().endswith("-m fast stop")


def test_the_leaders_data_dir_is_never_emptied(run):
    restore(run)
    assert not run.on("node2", r"-delete"), "the restored leader's data dir was removed"


@pytest.mark.parametrize("failing,step", [
    (r"--delta", "pgbackrest restore on node2"), (r"pg_ctl .* start", "pg_ctl start on node2"),
    (r"etcdctl", "reset Patroni's cluster state in etcd on node1"), (r"/primary", "wait for the restored leader"),
])
def test_a_failed_step_stops_before_the_replicas_are_wiped(run, failing, step):
    run.fail = failing
    with pytest.raises(RuntimeError, match=step):
        restore(run)
    assert not any("-delete" in s for _, s in run.calls), "a replica was emptied after a failed step"
    assert not run.on("node1", r"systemctl start airflow-"), "Airflow started on a failed restore"


def test_dcs_reset_keeps_the_dynamic_configuration():
    script = backup_tasks.dcs_reset_script(["10.0.0.11:2379", "10.0.0.12:2379"], "airflow")
    lines = script.splitlines()
    ctl = "etcdctl --endpoints=http://10.0.0.11:2379,http://10.0.0.12:2379"
    assert lines[:2] == ["set -e", "export ETCDCTL_API=3"]
    assert lines[2] == f"config=$({ctl} get --print-value-only /service/airflow/config)"
    assert lines[3].startswith(f"{ctl} del --prefix /service/airflow/ ")
    assert lines[4] == f"[ -z \"$config\" ] || printf '%s' \"$config\" | {ctl} put /service/airflow/config >/dev/null"


def test_restore_plan_names_what_patroni_loses(run):
    info = {"backups": [backup.BackupRow("20260601-010002F", "full", 1780275602, 1780275610, 1, 1, "", "")]}
    lines = backup_tasks.restore_plan(run.inv, info, TARGET, "node2")
    assert any("DESTROY the data dirs of node1, node3" in line for line in lines)
    assert any("dynamic configuration kept" in line for line in lines)


def _ctx(inv, name):
    return SimpleNamespace(inv=inv, platform=PLATFORM, host=inv.hosts[name])


def test_archive_mode_step_follows_the_repository(run, tmp_path):
    step = patroni.archive_mode_step(_ctx(run.inv, "node3"))
    assert step.restart and "[ \"$v\" = on ] && exit 0" in step.script
    assert "restart --force --pending airflow node3" in step.script
    assert step.unless.startswith("[ ! -e /etc/patroni/15-main.yml ] ||")   # not under Patroni yet: nothing to do
    plain = tmp_path / "plain.yaml"
    plain.write_text(textwrap.dedent(LAYOUT).replace("  node4: {address: 10.0.0.14, roles: [backup]}\n", ""))
    off = patroni.archive_mode_step(_ctx(load_inventory(plain), "node3"))
    assert "[ \"$v\" = off ] && exit 0" in off.script and "= off ]" in off.unless


def test_a_restart_command_is_rolled_like_a_unit_restart():
    step = patroni.archive_mode_step(_ctx(load_inventory(SPEC / "hosts-patroni.yaml"), "node1"))
    change = step.plan("run\n", set())
    assert change.restart and step.plan("done\n", set()) is None
