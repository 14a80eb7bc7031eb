"""The tasks `fab` and `inv` share, built once: deploy, health, a namespace per component, dags.rollback.

`inv` (tasks.py) adds its own tasks (lab, drills, tests, bench...) to `collection()`. Under `fab`, Fabric
would call each task once per -H host, one host after another (fabric#1809, #2173); `FabExecutor` (set in
fabric.yaml) calls it once, with every -H host as its `hosts` argument, so the parallel runner orders work
across hosts exactly like `inv deploy` (every component on every host before the next one).
"""

from __future__ import annotations

import sys

from fabric import Executor
from invoke import Call, Collection, Task, task

from . import dags as dags_mod
from . import health as health_mod
from . import stack
from .components import BY_NAME, COMPONENTS

HELP = {
    "hosts": "comma-separated inventory hosts (default: all)",
    "check": "dry run: print the plan and file diffs, change nothing",
    "verbose": "show every step and command output",
    "quiet": "print only the recap",
    "serial": "rolling: converge N hosts at a time",
    "inventory": "inventory file (default hosts.yaml or $AIRFLOW_HA_INVENTORY)",
    "parallel": "hosts worked on at once (default: inventory 'parallel')",
}


def exit_with(code: int) -> None:
    """A failed run ends the process with its exit code (0 returns)."""
    if code:
        sys.exit(code)


@task(help=HELP)
def deploy(c, hosts=None, check=False, verbose=False, quiet=False, serial=0, inventory=None, parallel=0):
    """Deploy the whole stack (packages, redis, postgres, airflow, dags, services, nginx, firewall)."""
    exit_with(stack.run(None, hosts, inventory, check, verbose, quiet, serial, parallel))


@task(help={"hosts": HELP["hosts"], "json": "print JSON only", "inventory": HELP["inventory"],
            "local": "only the hosts' own checks (no Redis/PostgreSQL/worker checks)"})
def health(c, hosts=None, json=False, inventory=None, local=False):
    """One verdict for the cluster: a table (or --json) of every check; exit 1 if anything failed."""
    exit_with(health_mod.run(hosts, inventory, as_json=json, local_only=local))


@task(name="health", help={"hosts": HELP["hosts"], "json": "print JSON only", "inventory": HELP["inventory"]})
def host_health(c, hosts=None, json=False, inventory=None):
    """Health checks of the -H hosts (host-local checks; `inv health` checks the whole cluster)."""
    exit_with(health_mod.run(hosts, inventory, as_json=json, local_only=True))


class ComponentDeploy:
    """`<component>.deploy`: one component only. A callable object, not a closure: invoke compares task
    bodies by their code, and would run `inv redis.deploy postgres.deploy` once; objects compare by identity."""

    def __init__(self, component):
        self.name = component.name          # not the component: invoke deep-copies task bodies
        self.__doc__ = f"Converge only {component.name}.\n\n{component.description}"

    def __call__(self, c, hosts=None, check=False, verbose=False, quiet=False, serial=0, inventory=None,
                 parallel=0):
        exit_with(stack.run([BY_NAME[self.name]], hosts, inventory, check, verbose, quiet, serial, parallel))


@task(name="rollback", help={"hosts": HELP["hosts"], "inventory": HELP["inventory"]})
def dags_rollback(c, hosts=None, inventory=None):
    """Switch every host's DAG folder back to the previous release."""
    exit_with(stack.run([dags_mod.ROLLBACK], hosts, inventory))


def collection(host_local_health: bool = False) -> Collection:
    """deploy, health and `<component>.deploy` (alias install) for every component, plus dags.rollback.

    `host_local_health`: `health` checks only the hosts' own state (fab: "the health of the -H hosts")."""
    ns = Collection(deploy, host_health if host_local_health else health)
    for component in COMPONENTS:
        sub = Collection(component.name, Task(ComponentDeploy(component), name="deploy", aliases=("install",),
                                              help=HELP))
        if component is dags_mod.COMPONENT:
            sub.add_task(dags_rollback)
        ns.add_collection(sub)
    return ns


class FabExecutor(Executor):
    """fab's executor (fabric.yaml `tasks.executor_class`): each task once, with all -H hosts as `hosts`.

    The -H value is read from `core`, the parsed core flags every invoke Executor is given (Fabric's own
    Executor reads it there). `fab -H x -- cmd` (remainder mode) keeps Fabric's per-host behaviour.
    """

    def expand_calls(self, calls, apply_hosts=True):
        if self.core.remainder or not calls:
            return super().expand_calls(calls, apply_hosts)
        hosts = self.core[0].args.hosts.value if apply_hosts else ""
        for call in calls:
            if hosts and isinstance(call, Call) and "hosts" in call.kwargs and not call.kwargs["hosts"]:
                call.kwargs["hosts"] = hosts
        return super().expand_calls(calls, apply_hosts=False)
