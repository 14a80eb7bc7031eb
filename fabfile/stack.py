"""The meta-task: components in dependency order, shared by `fab` and `inv` (same functions, same output).

Order: packages → redis → postgres → airflow (+ db migrate once) → dags → services → nginx → firewall
→ monitoring (exporters + Prometheus; only stops exporters when `cluster.monitoring` is off).
Every component runs on all selected hosts in parallel before the next one starts, which is what
makes cross-host ordering right (PostgreSQL and Redis are up before any Airflow process starts).
"""

from __future__ import annotations

from . import airflow, dags, dependencies, firewall, monitoring, nginx, packages, postgres, redis, services
from .core import inventory as inventory_mod
from .core.errors import UserError
from .core.runner import Options, execute, fail

COMPONENTS = [packages, redis, postgres, airflow, dags, services, nginx, firewall, monitoring]
BY_NAME = {c.NAME: c for c in COMPONENTS}


def run(components=None, hosts=None, inventory=None, check=False, verbose=False, quiet=False,
        serial=0, parallel=0) -> int:
    """Validate the inventory (before any connection), then converge `components` on `hosts`."""
    try:
        inv = inventory_mod.load(inventory)
        selected = inv.select(hosts)
        comps = components or COMPONENTS
        _ensure_local_artifacts(inv, comps)
        return execute(inv, selected, comps,
                       Options(check=check, verbose=verbose, quiet=quiet, serial=serial, parallel=parallel),
                       preflight=lambda run, hosts: dependencies.check(run, hosts, comps))
    except UserError as exc:
        fail(exc)


def _ensure_local_artifacts(inv, comps) -> None:
    """Everything built on the control machine exists before a host is touched."""
    if airflow in comps:
        airflow.ensure_constraints_local(inv)
        airflow.ensure_wheelhouse_local(inv)
    if dags in comps:
        dags.bundle(*dags.sources(inv))
