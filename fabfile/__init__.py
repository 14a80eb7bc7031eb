"""`fab` entry point: one namespace per component plus `deploy` and `health`.

Fabric runs a task once per `-H` host, one host after another (fabric#1809, #2173). Our tasks instead
run the phased, parallel runner once over *all* the `-H` hosts on the first call and do nothing on the
later calls of the same fab invocation, so `fab -H node1,node2,node3 deploy` orders work across hosts
exactly like `inv deploy` (every component on every host before the next component). Without `-H`, the
whole inventory is used. Hosts must be inventory names (validated before any connection).
"""

from __future__ import annotations

import os
import sys

# Fabric puts this package's own folder first on sys.path, so `import redis` (redis-py, used by health)
# would load fabfile/redis.py instead. Keep only the folder `fabfile` itself is imported from.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from fabric import task  # noqa: E402
from invoke import Collection  # noqa: E402

from . import dags as dags_mod  # noqa: E402
from . import health as health_mod  # noqa: E402
from . import stack as deploy_mod  # noqa: E402

_done: set = set()


def _fab_hosts(c) -> list | None:
    """All hosts given to this fab invocation with -H (not just the current one)."""
    try:
        from fabric.main import program
        value = program.args.hosts.value
        if value:
            return [h.strip() for h in value.split(",") if h.strip()]
    except Exception:  # noqa: BLE001 - not run by `fab`
        pass
    host = getattr(c, "host", None)
    return [host] if host else None


def _once(name, c, fn) -> None:
    if name in _done:
        return
    _done.add(name)
    code = fn(_fab_hosts(c))
    if code:
        sys.exit(code)


def _component_task(component):
    def deploy_component(c, check=False, verbose=False, quiet=False):
        """Converge this component on the -H hosts (all inventory hosts without -H)."""
        _once(f"{component.NAME}.deploy", c, lambda hosts: deploy_mod.run(
            [component], hosts, check=check, verbose=verbose, quiet=quiet))
    deploy_component.__doc__ = f"Converge {component.NAME} on the -H hosts.\n\n{component.__doc__}"
    deploy_component.__code__ = deploy_component.__code__.replace(co_name=f"deploy_{component.NAME}")
    return task(name="deploy", aliases=("install",),
                help={"check": "dry run: show diffs, change nothing", "verbose": "show command output"})(deploy_component)


@task(name="deploy", help={"check": "dry run: show diffs, change nothing", "verbose": "show command output",
                          "serial": "rolling: N hosts at a time"})
def deploy_task(c, check=False, verbose=False, quiet=False, serial=0):
    """Deploy the whole stack on the -H hosts (all inventory hosts without -H), in dependency order."""
    _once("deploy", c, lambda hosts: deploy_mod.run(None, hosts, check=check, verbose=verbose, quiet=quiet,
                                                    serial=serial))


@task(name="health", help={"json": "print JSON only"})
def health_task(c, json=False):
    """Health checks of the -H hosts (host-local checks; `inv health` checks the whole cluster)."""
    _once("health", c, lambda hosts: health_mod.run(hosts, as_json=json, local_only=True))


@task(name="rollback")
def dags_rollback(c):
    """Switch the -H hosts' DAG folder back to the previous release."""
    _once("dags.rollback", c, lambda hosts: deploy_mod.run([dags_mod.Rollback], hosts))


ns = Collection(deploy_task, health_task)
for _component in deploy_mod.COMPONENTS:
    _sub = Collection(_component.NAME, _component_task(_component))
    if _component is dags_mod:
        _sub.add_task(dags_rollback)
    ns.add_collection(_sub)
