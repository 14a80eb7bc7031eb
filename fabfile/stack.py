"""The meta-task: components in dependency order, shared by `fab` and `inv` (same functions, same output).

Order: packages → firewall → redis → etcd (Patroni mode only) → postgres (single or Patroni) →
backup (pgBackRest; only with a repository) → airflow (+ db migrate once) → dags → services → nginx →
keepalived (only with `cluster.vip`) → monitoring (exporters + Prometheus; only stops exporters when
`cluster.monitoring` is off). The firewall comes first: its peers are every inventory host (hosts added
in this run included), so no service of the run listens unfirewalled, and no connection opened by a
service is cut later by enabling it. `--check` ends with the inventory's single points of failure
(fabfile/spof.py). Every component runs on all selected hosts before the next one starts, which is what
makes cross-host ordering right (PostgreSQL and Redis are up before any Airflow process starts).
A full deploy that changed something ends with a bounded health gate (`ends_healthy`).
"""

from __future__ import annotations

import dataclasses
import time

from . import dependencies, pgsql, repository, spof
from .components import COMPONENTS, load_inventory
from .core import profile
from .core.errors import UserError
from .core.runner import Options, execute, fail


def run(components=None, hosts=None, inventory=None, check=False, verbose=False, quiet=False,
        serial=0, parallel=0, overrides: dict | None = None) -> int:
    """Validate the inventory (before any connection), then converge `components` on `hosts`.

    `overrides`: cluster keys used instead of the file's (`inv upgrade --check`: the target version)."""
    profile.started()
    try:
        with profile.span("inventory (local)"):
            inv = load_inventory(inventory)
            inv.settings = dataclasses.replace(inv.settings, **(overrides or {}))
            selected = inv.select(hosts)
        comps = components or COMPONENTS
        with profile.span("local artifacts (constraints, wheelhouse, DAG bundle)"):
            for component in comps:
                component.local_artifacts(inv)
        rc = execute(inv, selected, comps,
                     Options(check=check, verbose=verbose, quiet=quiet, serial=serial, parallel=parallel),
                     preflight=lambda run, hosts: _preflight(run, hosts, comps),
                     finish=None if components or check else ends_healthy)
        if check:
            print(spof_report(inv))
            if not repository.enabled(inv):
                print("warning: no backups (no backup host, backup.repo_path or S3; README \"Backups\")")
        return rc
    except UserError as exc:
        fail(exc)


def _preflight(run, hosts, comps) -> None:
    """Before any change: a -H subset's dependencies are up; EL9 Patroni hosts have their repositories."""
    dependencies.check(run, hosts, comps)
    if pgsql.patroni_mode(run.inv):
        from . import patroni
        patroni.check_repos(run, hosts)


def spof_report(inv) -> str:
    points = spof.single_points(inv)
    if not points:
        return "single points of failure: none"
    return "single points of failure (accepted layout):\n" + "\n".join(f"  {p}" for p in points)


def ends_healthy(run, timeout: float = 180, interval: float = 1) -> None:
    """A deploy that changed something ends healthy or says why: wait (bounded) until the health checks
    of the hosts it touched (and the cluster-wide ones) pass; failing checks then fail the run.

    Every inventory host is asked even when the run touched a subset (`-H`, `inv patch --hosts`): the
    cluster-wide checks are computed from all hosts' answers."""
    from . import health
    if run.opts.check or run.failed or not any(c["changed"] for c in run.counts.values()):
        return
    names = {h.name for h in run.hosts} | {"cluster"}
    t0 = time.monotonic()
    waiting_for: set = set()
    while True:
        checks = health.collect(run, hosts=list(run.inv.hosts.values()))
        failing = [c for c in checks if c.status == "fail" and c.host in names]
        if not failing or time.monotonic() > t0 + timeout:
            break
        if (now := {f"{c.host} {c.check}" for c in failing}) != waiting_for:
            waiting_for = now
            run.say(f"{'cluster':<10} {'health':<10} waiting ({time.monotonic() - t0:.0f}s) for: "
                    f"{', '.join(sorted(now))}")
        time.sleep(interval)
    for c in failing:
        run.say(f"{c.host:<10} {'health':<10} {'failed':<12} {c.check}: {c.detail}", always=True)
        run.failed.setdefault(c.host, f"unhealthy after deploy: {c.check}")
    if not failing:
        run.say(f"{'cluster':<10} {'health':<10} ok           every check passes", always=True)
