"""`inv` entry point: deploy, health, per-component deploys, DAGs, the lab, tests and benchmarks.

Same functions as `fab` (fabfile/), over the inventory: `--hosts a,b` limits, `--check` is a dry run,
`--inventory` (or AIRFLOW_HA_INVENTORY) picks the inventory file.
"""

from __future__ import annotations

import sys

from invoke import Collection, task

from fabfile import dags as dags_mod
from fabfile import drills as drills_mod
from fabfile import health as health_mod
from fabfile import stack as deploy_mod
from lab.tasks import ns as lab_ns

HELP = {
    "hosts": "comma-separated inventory hosts (default: all)",
    "check": "dry run: print the plan and file diffs, change nothing",
    "verbose": "show every step and command output",
    "quiet": "print only the recap",
    "serial": "rolling: converge N hosts at a time",
    "inventory": "inventory file (default hosts.yaml or $AIRFLOW_HA_INVENTORY)",
    "parallel": "hosts worked on at once (default: inventory 'parallel')",
}


def _exit(code: int) -> None:
    if code:
        sys.exit(code)


@task(help=HELP)
def deploy(c, hosts=None, check=False, verbose=False, quiet=False, serial=0, inventory=None, parallel=0):
    """Deploy the whole stack (packages, redis, postgres, airflow, dags, services, nginx, firewall)."""
    _exit(deploy_mod.run(None, hosts, inventory, check, verbose, quiet, serial, parallel))


@task(help={"hosts": HELP["hosts"], "json": "print JSON only", "inventory": HELP["inventory"],
            "local": "only the hosts' own checks (no Redis/PostgreSQL/worker checks)"})
def health(c, hosts=None, json=False, inventory=None, local=False):
    """One verdict for the cluster: a table (or --json) of every check; exit 1 if anything failed."""
    _exit(health_mod.run(hosts, inventory, as_json=json, local_only=local))


def _component_task(component):
    def component_deploy(c, hosts=None, check=False, verbose=False, quiet=False, serial=0, inventory=None,
                         parallel=0):
        _exit(deploy_mod.run([component], hosts, inventory, check, verbose, quiet, serial, parallel))
    component_deploy.__doc__ = f"Converge only {component.NAME}.\n\n{component.__doc__}"
    # a code object of its own: invoke dedupes tasks with equal code (`inv redis.deploy postgres.deploy`)
    component_deploy.__code__ = component_deploy.__code__.replace(co_name=f"deploy_{component.NAME}")
    return task(name="deploy", aliases=("install",), help=HELP)(component_deploy)


@task(name="rollback", help={"hosts": HELP["hosts"], "inventory": HELP["inventory"]})
def dags_rollback(c, hosts=None, inventory=None):
    """Switch every host's DAG folder back to the previous release."""
    _exit(deploy_mod.run([dags_mod.Rollback], hosts, inventory))


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
def backup_now(c, type="full", inventory=None):  # noqa: A002 - the documented flag is --type
    """Take a pgBackRest backup now (on the repo host, or the primary), then list the backups."""
    from fabfile import backup as backup_mod
    _exit(backup_mod.backup_now(inventory, type))


@task(name="list", help={"inventory": HELP["inventory"]})
def backup_list(c, inventory=None):
    """The backups in the repository: type, start, stop, size, WAL range (pgbackrest info --output=json)."""
    from fabfile import backup as backup_mod
    _exit(backup_mod.list_backups(inventory))


@task(help={"time": "target 'YYYY-MM-DD HH:MM:SS[+HH]' (UTC without an offset); default: the latest",
            "yes": "really restore (without it: show what would be destroyed, change nothing)",
            "inventory": HELP["inventory"]})
def restore(c, time=None, yes=False, inventory=None):
    """Point-in-time restore of the metadata database: stops Airflow, restores, re-creates replicas, checks."""
    from fabfile import backup as backup_mod
    _exit(backup_mod.restore(inventory, time, yes))


ns = Collection(deploy, health, test)
for _component in deploy_mod.COMPONENTS:
    _sub = Collection(_component.NAME, _component_task(_component))
    if _component is dags_mod:
        _sub.add_task(dags_rollback)
    if _component.NAME == "backup":   # `inv backup [--type diff]` runs a backup; backup.deploy converges
        _sub.add_task(backup_now, default=True)
        _sub.add_task(backup_list)
    ns.add_collection(_sub)
ns.add_task(restore)
ns.add_collection(lab_ns, "lab")


def _drill_task(name):
    def drill(c, inventory=None):
        _exit(drills_mod.run([name], inventory))
    drill.__doc__ = f"Failover drill: {drills_mod.DRILLS[name].__doc__.splitlines()[0]}"
    drill.__code__ = drill.__code__.replace(co_name=f"drill_{name.replace('-', '_')}")
    return task(name=name, help={"inventory": HELP["inventory"]})(drill)


@task(name="all", help={"inventory": HELP["inventory"], "skip": "comma-separated drills to leave out"})
def drill_all(c, inventory=None, skip=""):
    """Run every failover drill in sequence and print the table (postgres: NOT COVERED with one database)."""
    left_out = {s.strip() for s in skip.split(",") if s.strip()}
    unknown = left_out - set(drills_mod.DRILLS)
    if unknown:
        print(f"error: unknown drill {', '.join(sorted(unknown))}; drills: {', '.join(drills_mod.DRILLS)}",
              file=sys.stderr)
        sys.exit(2)
    _exit(drills_mod.run([d for d in drills_mod.DRILLS if d not in left_out], inventory))


@task(name="rolling-restart", help={"hosts": HELP["hosts"], "inventory": HELP["inventory"]})
def rolling_restart(c, hosts=None, inventory=None):
    """Restart Airflow one host at a time: warm-stop the worker, restart, wait for health, next host."""
    _exit(drills_mod.rolling_restart(inventory, hosts))


@task(help={"host": "the inventory host to take out", "inventory": HELP["inventory"]})
def decommission(c, host, inventory=None):
    """Take hosts (HOST or HOST,HOST) out of the running cluster: fail Redis over, drain, stop, converge the rest."""
    from fabfile import decommission as decommission_mod
    _exit(decommission_mod.run(host, inventory))


@task(help={"airflow_version": "target Airflow version (a constraints file for it must exist)",
            "rollback": "back to the other installed version (only while the schema is unchanged)",
            "check": "print the upgrade plan and the deploy's --check, change nothing",
            "verbose": HELP["verbose"], "inventory": HELP["inventory"]})
def upgrade(c, airflow_version=None, rollback=False, check=False, verbose=False, inventory=None):
    """Set airflow_version in the inventory and deploy: new venv beside the old, backup, db migrate once, then
    per role across hosts: api-servers -> triggerers/dag-processors -> workers -> schedulers (README "Upgrades")."""
    from fabfile import upgrade as upgrade_mod
    _exit(upgrade_mod.run(airflow_version, rollback, inventory, check, verbose))


@task(help={"hosts": HELP["hosts"], "check": "list the pending updates per host, change nothing",
            "inventory": HELP["inventory"], "no_reboot": "never reboot (report hosts that need one)"})
def patch(c, hosts=None, check=False, inventory=None, no_reboot=False):
    """OS package updates one host at a time: drained (Redis master failed over, api-server out of nginx,
    worker warm shutdown), upgraded, rebooted if the OS says so, health-gated, next host."""
    from fabfile import patch as patch_mod
    _exit(patch_mod.run(hosts, inventory, check, reboot=not no_reboot))


drill_ns = Collection("drill", drill_all, *[_drill_task(n) for n in drills_mod.DRILLS])
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
    _exit(main(runs, fresh_runs, six, rolling_runs, readme))
ns.add_task(bench)
