"""`inv decommission HOST`: take a host out of a running cluster without losing a task.

Decision (issue #13): scale-in is a dedicated command, not "delete it from hosts.yaml and deploy" — a
deploy of an inventory that no longer lists a host cannot reach it to drain it. So, with HOST still in the
inventory:

1. refuse, before anything changes, when the cluster without HOST would be invalid (the last host of a
   required role, the database host, an even number of Sentinels: the inventory validator's error);
2. if HOST holds the Redis master, `SENTINEL FAILOVER` moves it away first;
3. drain HOST: its Celery worker gets a warm shutdown (running tasks finish), then its other Airflow
   units, keepalived, nginx, Redis and Sentinel are stopped and disabled;
4. converge every other host with the inventory without HOST (firewall peers, pg_hba, nginx upstreams,
   trusted proxies, Sentinel lists), rolling as usual;
5. `SENTINEL RESET` on the remaining Sentinels, so they forget HOST as a replica and as a Sentinel.

Then remove HOST from the inventory file (the command says so); until then a deploy would add it back.
"""

from __future__ import annotations

import time

from . import redis, stack
from .core import inventory as inventory_mod
from .core.errors import PreconditionError, UserError
from .core.inventory import Inventory
from .core.runner import Options, Run, execute, fail
from .services import UNITS


def without(inv: Inventory, name: str) -> Inventory:
    """The inventory minus `name`, validated (an InventoryError says why the cluster would break)."""
    rest = Inventory(path=inv.path, cluster=inv.cluster, hosts={n: h for n, h in inv.hosts.items() if n != name})
    try:
        inventory_mod.validate(rest)
    except UserError as exc:
        raise PreconditionError(f"cannot decommission {name}: without it, {exc.what}", exc.where,
                                exc.fix or "add a host that takes over its roles first") from None
    return rest


def _stop_script(run, host) -> str:
    """Worker first (warm shutdown: waits for running tasks), then everything else on the host."""
    plat = run.facts[host.name].platform
    airflow = [UNITS[r] for r in UNITS if host.has(r) and r != "worker"]
    others = [plat.units[k] for k in ("keepalived", "nginx", "sentinel", "redis") if k in plat.units]
    lines = ["systemctl disable --now airflow-worker 2>/dev/null || true"] if host.has("worker") else []
    lines += [f"systemctl disable --now {u} 2>/dev/null || true" for u in airflow + others]
    return "\n".join(lines) + "\n"


def _sentinel_reset(run, hosts) -> None:
    name = redis.settings(run.inv)["master_name"]
    for host in hosts:
        run.remote(host.name).sh(redis.sentinel_cli(run, host, f"SENTINEL RESET {name}"), timeout=15)
        time.sleep(1)   # one Sentinel at a time: the others keep the quorum while it rediscovers


def run(name: str, inventory=None) -> int:
    """Decommission `name` (see the module docstring); 0 when the cluster converged without it."""
    try:
        inv = inventory_mod.load(inventory)
        host = inv.select([name])[0]
        rest = without(inv, name)
        r = Run(inv, list(inv.hosts.values()), Options())
    except UserError as exc:
        fail(exc)
    try:
        r.connect()
        if name in r.failed:
            fail(PreconditionError(f"{name} is unreachable: {r.failed[name]}", f"{inv.path}: hosts.{name}",
                                   "power it on to drain it, or take it out of the inventory and deploy"))
        if host.has("redis"):
            redis.prepare(r, [host])
            if r.data.get("redis_master") == r.addresses[name] and (why := redis.failover(r)):
                fail(PreconditionError(f"the Redis master {name} could not be failed over: {why}",
                                       f"{inv.path}: hosts.{name}", "check `inv health`, then try again"))
        print(f"{name:<10} decommission stopping its services (worker: warm shutdown)", flush=True)
        res = r.remote(name).sh(_stop_script(r, host), timeout=inv.cluster["worker_stop_timeout"] + 120)
        if not res.ok:
            print(res.out + res.err)
            return 1
    finally:
        r.close()
    rc = execute(rest, list(rest.hosts.values()), stack.COMPONENTS, Options(quiet=True),
                 finish=stack.ends_healthy)
    if rc == 0 and host.has("sentinel", "redis"):
        r = Run(rest, list(rest.hosts.values()), Options(quiet=True, silent=True))
        try:
            _sentinel_reset(r, rest.with_role("sentinel"))
        finally:
            r.close()
    print(f"{name} is out of the cluster" if rc == 0 else f"{name}: the other hosts did not converge",
          f"— now remove it from {inv.path}" if rc == 0 else "", flush=True)
    return rc
