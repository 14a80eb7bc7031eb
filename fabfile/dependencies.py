"""Before a `-H` subset is touched: what the selected hosts depend on is selected, or already up.

Airflow processes need the database, the broker (Redis through a majority of Sentinels) and an
api-server (the Execution API). `fab -H node1,node2 deploy` on fresh hosts whose database lives on node3
would install everything and then wait minutes for api-servers that cannot reach a database. So, after
connecting (read-only) and before any change, every host that holds such a dependency and is not selected
is probed over SSH: reachable, and its unit active. If not, the run stops with one error naming the
hosts, what is down and the fix. Hosts left out keep their place in every peer's config (the config is
always computed from the whole inventory) and nothing is removed from them.
"""

from __future__ import annotations

from . import pgsql, redis
from .airflow import ROLES as AIRFLOW_ROLES
from .core.errors import PreconditionError
from .core.facts import FACTS_SCRIPT, parse_facts
from .services import UNITS


def _unit(role: str, platform, patroni: bool = False) -> str:
    if role == "postgres":
        pg = pgsql.names(platform)
        return pg.patroni_unit if patroni else pg.unit
    return UNITS.get(role) or redis.names(platform).unit_of(role)


#: components that start or migrate Airflow processes (they need the database, broker and api-servers)
AIRFLOW_COMPONENTS = ("airflow", "services")


def needs(inv, selected, components) -> list[tuple[str, int]]:
    """(role, how many of its hosts must be up) that the selected hosts depend on in this run."""
    starts_airflow = any(c.name in AIRFLOW_COMPONENTS for c in components)
    if not starts_airflow or not any(h.has(*AIRFLOW_ROLES) for h in selected):
        return []
    sentinels = len(inv.with_role("sentinel"))
    # Patroni mode: one running member is enough (the others may be replicas still catching up)
    return [("postgres", 1 if pgsql.patroni_mode(inv) else len(inv.with_role("postgres"))), ("redis", 1),
            ("sentinel", sentinels // 2 + 1), ("api_server", 1)]


def _is_up(run, host, role) -> str:
    """'' when `role`'s unit is active on `host`, else why not (read-only: facts + systemctl)."""
    try:
        rem = run.remote(host.name)
        if host.name not in run.facts:   # a host probed for two roles reads its facts once
            run.facts[host.name] = parse_facts(rem.sh(FACTS_SCRIPT, timeout=30).out)
        unit = _unit(role, run.facts[host.name].platform, pgsql.patroni_mode(run.inv))
        state = rem.sh(f"systemctl is-active {unit}", timeout=30).out.strip() or "unknown"
    except Exception as exc:  # any failure means "not usable", reported below
        return f"unreachable ({type(exc).__name__}: {str(exc)[:60]})"
    return "" if state == "active" else f"{unit} {state}"


def check(run, selected, components) -> None:
    """Raise one PreconditionError when a dependency of the selected hosts is neither selected nor up."""
    chosen = {h.name for h in selected}
    if chosen == set(run.inv.hosts):
        return
    problems = []
    for role, required in needs(run.inv, selected, components):
        holders = run.inv.with_role(role)
        ok = [h for h in holders if h.name in chosen]
        down = []
        for host in holders:
            if host.name in chosen or len(ok) >= required:
                continue
            why = _is_up(run, host, role)
            if why:
                down.append(f"{host.name} ({role}: {why})")
            else:
                ok.append(host)
        if len(ok) < required:
            problems += down
    if problems:
        names = sorted({p.split()[0] for p in problems})
        raise PreconditionError(
            f"the selected hosts ({', '.join(sorted(chosen))}) depend on hosts that are neither selected nor "
            f"up: {'; '.join(problems)}", f"{run.inv.path}: -H / --hosts",
            f"add {', '.join(names)} to the selected hosts (e.g. -H {','.join(sorted(chosen | set(names)))}), "
            "or deploy those hosts first")
