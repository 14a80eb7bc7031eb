"""The meta-task: components in dependency order, shared by `fab` and `inv` (same functions, same output).

Order: packages → redis → postgres → airflow (+ db migrate once) → dags → services → nginx → firewall
→ keepalived (after the firewall, which lets VRRP in; only with `cluster.vip`) → monitoring (exporters +
Prometheus; only stops exporters when `cluster.monitoring` is off).
`--check` ends with the inventory's single points of failure (fabfile/spof.py).
Every component runs on all selected hosts in parallel before the next one starts, which is what
makes cross-host ordering right (PostgreSQL and Redis are up before any Airflow process starts).
"""

from __future__ import annotations

from . import airflow, dags, dependencies, firewall, keepalived, monitoring, nginx, packages, postgres, redis, services, spof
from .core import inventory as inventory_mod
from .core.errors import UserError
from .core.runner import Options, execute, fail

COMPONENTS = [packages, redis, postgres, airflow, dags, services, nginx, firewall, keepalived, monitoring]
BY_NAME = {c.NAME: c for c in COMPONENTS}


def run(components=None, hosts=None, inventory=None, check=False, verbose=False, quiet=False,
        serial=0, parallel=0) -> int:
    """Validate the inventory (before any connection), then converge `components` on `hosts`."""
    try:
        inv = inventory_mod.load(inventory)
        selected = inv.select(hosts)
        comps = components or COMPONENTS
        _ensure_local_artifacts(inv, comps)
        rc = execute(inv, selected, comps,
                     Options(check=check, verbose=verbose, quiet=quiet, serial=serial, parallel=parallel),
                     preflight=lambda run, hosts: dependencies.check(run, hosts, comps))
        if check:
            print(spof_report(inv))
        return rc
    except UserError as exc:
        fail(exc)


def spof_report(inv) -> str:
    points = spof.single_points(inv)
    if not points:
        return "single points of failure: none"
    return "single points of failure (accepted layout):\n" + "\n".join(f"  {p}" for p in points)


def _ensure_local_artifacts(inv, comps) -> None:
    """Everything built on the control machine exists before a host is touched."""
    if airflow in comps:
        airflow.ensure_constraints_local(inv)
        airflow.ensure_wheelhouse_local(inv)
    if dags in comps:
        dags.bundle(*dags.sources(inv))
