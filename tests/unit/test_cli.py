"""`fab` and `inv` share one task builder (fabfile/cli.py); no run reaches a host here (stack.run is replaced)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from invoke import Config, Executor

from fabfile import cli, stack

ROOT = Path(__file__).resolve().parents[2]

FAB = """import sys
from fabfile import stack
stack.run = lambda components, hosts, *a, **k: print("run", [c.name for c in components or []], hosts) or 0
from fabric.main import program
program.run(["fab", *sys.argv[1:]], exit=False)
"""


def fab(*args: str) -> list[str]:
    res = subprocess.run([sys.executable, "-c", FAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def test_fab_runs_each_task_once_over_every_h_host():
    assert fab("-H", "node1,node2", "redis.deploy", "deploy", "--check") == [
        "run ['redis'] node1,node2", "run [] node1,node2"]


def test_fab_without_h_means_the_whole_inventory_and_hosts_given_to_the_task_win():
    assert fab("nginx.deploy") == ["run ['nginx'] None"]
    assert fab("-H", "node1", "nginx.deploy", "--hosts", "node3") == ["run ['nginx'] node3"]


def test_inv_runs_two_component_deploys_in_one_call(monkeypatch):
    """invoke dedupes calls whose task bodies compare equal: one body per component keeps both."""
    ran = []
    monkeypatch.setattr(stack, "run", lambda components, *a, **k: ran.append(components[0].name) or 0)
    Executor(cli.collection(), Config()).execute("redis.deploy", "postgres.deploy")
    assert ran == ["redis", "postgres"]


def test_fab_health_checks_the_hosts_own_state_inv_health_the_cluster():
    assert cli.collection(host_local_health=True)["health"].body is cli.host_health.body
    assert cli.collection()["health"].body is cli.health.body
    assert "local" in cli.collection()["health"].argspec(cli.health.body).parameters


def test_inv_operations_parse_as_documented(monkeypatch):
    """inv's own tasks beside the shared ones: `inv backup [--type]` (the namespace's default), backup.list,
    restore, upgrade, patch (their modules' entry points replaced: nothing is reached)."""
    from invoke import Program

    import tasks
    from fabfile import backup_tasks, patch, upgrade
    ran = []
    monkeypatch.setattr(backup_tasks, "backup_now", lambda inventory, type: ran.append(("backup", type)) or 0)
    monkeypatch.setattr(backup_tasks, "list_backups", lambda inventory: ran.append(("list",)) or 0)
    monkeypatch.setattr(backup_tasks, "restore", lambda inventory, time, yes: ran.append(("restore", time, yes)) or 0)
    monkeypatch.setattr(upgrade, "run", lambda *a: ran.append(("upgrade", *a)) or 0)
    monkeypatch.setattr(patch, "run", lambda hosts, inventory, check, reboot: ran.append(("patch", hosts, reboot)) or 0)
    Program(namespace=tasks.ns).run(["inv", "backup", "--type", "diff", "backup.list", "restore", "--yes",
                                     "upgrade", "--airflow-version", "3.3.1", "--check", "patch", "--no-reboot"],
                                    exit=False)
    assert ran == [("backup", "diff"), ("list",), ("restore", None, True),
                   ("upgrade", "3.3.1", False, None, True, False), ("patch", None, False)]
