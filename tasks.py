"""`inv` entry point: deploy, health, per-component deploys, DAGs, the lab, tests and benchmarks.

Same functions as `fab` (fabfile/), over the inventory: `--hosts a,b` limits, `--check` is a dry run,
`--inventory` (or AIRFLOW_HA_INVENTORY) picks the inventory file.
"""

from __future__ import annotations

import sys

from invoke import Collection, Task, task

from fabfile import drills as drills_mod
from fabfile.cli import HELP, collection, exit_with
from lab.tasks import ns as lab_ns


@task(help={"k": "only tests matching this expression", "e2e": "include end-to-end tests on the lab (default)",
            "keep": "leave the lab running afterwards"})
def test(c, k="", e2e=True, keep=False):
    """Run the whole test suite (unit, spec and end-to-end on the lab)."""
    args = ["-m", "not e2e"] if not e2e else []
    if k:
        args += ["-k", k]
    env = {"AIRFLOW_HA_LAB_KEEP": "1"} if keep else {}
    c.run(" ".join([".venv/bin/pytest", *args]), env=env, pty=False)


@task(name="now", help={"type": "full | diff | incr (default full)", "inventory": HELP["inventory"]})
def backup_now(c, type="full", inventory=None):  # shadows the builtin: the documented flag is --type
    """Take a pgBackRest backup now (on the repo host, or the primary), then list the backups."""
    from fabfile import backup_tasks
    exit_with(backup_tasks.backup_now(inventory, type))


@task(name="list", help={"inventory": HELP["inventory"]})
def backup_list(c, inventory=None):
    """The backups in the repository: type, start, stop, size, WAL range (pgbackrest info --output=json)."""
    from fabfile import backup_tasks
    exit_with(backup_tasks.list_backups(inventory))


@task(help={"time": "target 'YYYY-MM-DD HH:MM:SS[+HH]' (UTC without an offset); default: the latest",
            "yes": "really restore (without it: show what would be destroyed, change nothing)",
            "inventory": HELP["inventory"]})
def restore(c, time=None, yes=False, inventory=None):
    """Point-in-time restore of the metadata database: stops Airflow, restores, re-creates replicas, checks."""
    from fabfile import backup_tasks
    exit_with(backup_tasks.restore(inventory, time, yes))


ns = collection()
ns.add_task(test)
# `inv backup [--type diff]` runs a backup, `inv backup.list` lists them; backup.deploy (shared with fab) converges
ns.collections["backup"].add_task(backup_now, default=True)
ns.collections["backup"].add_task(backup_list)
ns.add_task(restore)
ns.add_collection(lab_ns, "lab")


def _lab_power():
    """The lab's power switch, for the drills that pull a host's plug (imported only when a drill runs)."""
    from lab import Power
    return Power()


class DrillTask:
    """`drill.<name>`: one failover drill. A callable object (see fabfile.cli.ComponentDeploy: invoke would
    otherwise take every drill task for the same one)."""

    def __init__(self, name: str):
        self.name = name
        self.__doc__ = f"Failover drill: {drills_mod.DRILLS[name].__doc__.splitlines()[0]}"

    def __call__(self, c, inventory=None):
        exit_with(drills_mod.run([self.name], inventory, _lab_power()))


@task(name="all", help={"inventory": HELP["inventory"], "skip": "comma-separated drills to leave out"})
def drill_all(c, inventory=None, skip=""):
    """Run every failover drill in sequence and print the table (postgres: NOT COVERED with one database)."""
    left_out = {s.strip() for s in skip.split(",") if s.strip()}
    unknown = left_out - set(drills_mod.DRILLS)
    if unknown:
        print(f"error: unknown drill {', '.join(sorted(unknown))}; drills: {', '.join(drills_mod.DRILLS)}",
              file=sys.stderr)
        sys.exit(2)
    exit_with(drills_mod.run([d for d in drills_mod.DRILLS if d not in left_out], inventory, _lab_power()))


@task(name="rolling-restart", help={"hosts": HELP["hosts"], "inventory": HELP["inventory"]})
def rolling_restart(c, hosts=None, inventory=None):
    """Restart Airflow one host at a time: warm-stop the worker, restart, wait for health, next host."""
    exit_with(drills_mod.rolling_restart(inventory, hosts))


@task(help={"host": "the inventory host to take out", "inventory": HELP["inventory"]})
def decommission(c, host, inventory=None):
    """Take hosts (HOST or HOST,HOST) out of the running cluster: fail Redis over, drain, stop, converge the rest."""
    from fabfile import decommission as decommission_mod
    exit_with(decommission_mod.run(host, inventory))


@task(help={"airflow_version": "target Airflow version (a constraints file for it must exist)",
            "rollback": "back to the other installed version (only while the schema is unchanged)",
            "check": "print the upgrade plan and the deploy's --check, change nothing",
            "verbose": HELP["verbose"], "inventory": HELP["inventory"]})
def upgrade(c, airflow_version=None, rollback=False, check=False, verbose=False, inventory=None):
    """Set airflow_version in the inventory and deploy: new venv beside the old, backup, db migrate once, then
    per role across hosts: api-servers -> triggerers/dag-processors -> workers -> schedulers (README "Upgrades")."""
    from fabfile import upgrade as upgrade_mod
    exit_with(upgrade_mod.run(airflow_version, rollback, inventory, check, verbose))


@task(help={"hosts": HELP["hosts"], "check": "list the pending updates per host, change nothing",
            "inventory": HELP["inventory"], "no_reboot": "never reboot (report hosts that need one)"})
def patch(c, hosts=None, check=False, inventory=None, no_reboot=False):
    """OS package updates one host at a time: drained (Redis master failed over, api-server out of nginx,
    worker warm shutdown), upgraded, rebooted if the OS says so, health-gated, next host."""
    from fabfile import patch as patch_mod
    exit_with(patch_mod.run(hosts, inventory, check, reboot=not no_reboot))


drill_ns = Collection("drill", drill_all, *[Task(DrillTask(n), name=n, help={"inventory": HELP["inventory"]})
                                            for n in drills_mod.DRILLS])
ns.add_collection(drill_ns)
ns.add_task(rolling_restart)
ns.add_task(upgrade)
ns.add_task(patch)
ns.add_task(decommission)


@task(help={"runs": "runs per figure (median; the floor is measured as often, paired)",
            "fresh_runs": "fresh deploys (each resets the lab; 0 = skip)",
            "six": "also measure 6 hosts (boots node4-6)",
            "rolling_runs": "rolling changes of every Airflow service (2 deploys each; 0 = skip)",
            "readme": "also time README command 1 in a fresh clone (needs a bare machine; takes the lab down)"})
def bench(c, runs=7, fresh_runs=3, six=True, rolling_runs=1, readme=False):
    """Benchmark on the lab, every figure a ratio to the SSH floor of the same run; bench/results/*.json."""
    from bench.bench import main
    exit_with(main(runs, fresh_runs, six, rolling_runs, readme))
ns.add_task(bench)
