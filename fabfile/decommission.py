"""`inv decommission HOST[,HOST...]`: take hosts out of a running cluster without losing a task.

Decision (issue #13): scale-in is a dedicated command, not "delete it from hosts.yaml and deploy" — a
deploy of an inventory that no longer lists a host cannot reach it to drain it. So, with HOST still in the
inventory (several hosts at once when they must leave together, e.g. two of five Sentinels):

1. refuse, before anything changes, when the cluster without HOST would be invalid (the last host of a
   required role, the database host, an even number of Sentinels: the inventory validator's error), and
   in Patroni mode any postgres or etcd member (their membership is not changed here);
2. if HOST holds the Redis master, `SENTINEL FAILOVER` moves it away first (the leaving hosts' Redis get
   `replica-priority 0` before, so the master never moves to another leaving host);
3. drain HOST: its Celery worker gets a warm shutdown (running tasks finish), then its other Airflow
   units, keepalived, nginx, Redis and Sentinel are stopped and disabled;
4. converge every other host with the inventory without HOST (firewall peers, pg_hba, nginx upstreams,
   trusted proxies, Sentinel lists), rolling as usual;
5. `SENTINEL RESET` on the remaining Sentinels, so they forget HOST as a replica and as a Sentinel.

Then remove HOST from the inventory file (the command says so); until then a deploy would add it back.
"""

from __future__ import annotations

import dataclasses
import time

from . import keepalived, nginx, pgsql, redis, stack
from .components import COMPONENTS, load_inventory
from .core import inventory as inventory_mod
from .core.errors import PreconditionError, UserError
from .core.inventory import Inventory
from .core.runner import Options, Run, execute, fail
from .services import UNITS


def without(inv: Inventory, names: list[str]) -> Inventory:
    """The inventory minus `names`, validated (an InventoryError says why the cluster would break).

    Patroni mode: a host with the `postgres` or `etcd` role is refused whatever remains. Patroni members and
    etcd members are not drained by this command (their membership is fixed: `etcdctl member remove`,
    Patroni's member key), and leaving one postgres host would silently switch the rest to single mode.
    """
    if pgsql.patroni_mode(inv):
        members = [f"{h.name} ({', '.join(r for r in ('postgres', 'etcd') if h.has(r))})"
                   for h in inv.select(names) if h.has("postgres", "etcd")]
        if members:
            raise PreconditionError(
                f"cannot decommission {', '.join(names)}: {'; '.join(members)} "
                f"{'is a member' if len(members) == 1 else 'are members'} of the Patroni/etcd cluster, whose "
                "membership this command does not change", f"{inv.path}: hosts",
                "keep the host, or move its postgres/etcd role by hand (README \"High availability\": etcdctl "
                "member remove, patronictl remove) before decommissioning it")
    rest = dataclasses.replace(inv, hosts={n: h for n, h in inv.hosts.items() if n not in names})
    try:
        inventory_mod.validate(rest)
    except UserError as exc:
        raise PreconditionError(f"cannot decommission {', '.join(names)}: without {'it' if len(names) == 1 else 'them'}, "
                                f"{exc.what}", exc.where, exc.fix or "add a host that takes over its roles first") from None
    return rest


def _no_promotion_script(run, host) -> str:
    """A leaving Redis must never be promoted by the failover (Sentinel skips replica-priority 0)."""
    return redis.redis_cli(run, host, "CONFIG SET replica-priority 0")


def _stop_script(run, host) -> str:
    """Worker first (warm shutdown: waits for running tasks), then everything else on the host."""
    plat = run.facts[host.name].platform
    airflow = [UNITS[r] for r in UNITS if host.has(r) and r != "worker"]
    cache = redis.names(plat)
    others = [keepalived.UNIT, nginx.names(plat).unit, cache.sentinel_unit, cache.unit]
    lines = ["systemctl disable --now airflow-worker 2>/dev/null || true"] if host.has("worker") else []
    lines += [f"systemctl disable --now {u} 2>/dev/null || true" for u in airflow + others]
    return "\n".join(lines) + "\n"


def _sentinel_reset(run, hosts) -> None:
    name = run.inv.settings.redis.master_name
    for host in hosts:
        run.remote(host.name).sh(redis.sentinel_cli(run, host, f"SENTINEL RESET {name}"), timeout=15)
        time.sleep(1)   # one Sentinel at a time: the others keep the quorum while it rediscovers


def run(names: list[str] | str, inventory=None) -> int:
    """Decommission `names` (see the module docstring); 0 when the cluster converged without them."""
    names = names.split(",") if isinstance(names, str) else names
    try:
        inv = load_inventory(inventory)
        hosts = inv.select(names)
        rest = without(inv, names)
        r = Run(inv, list(inv.hosts.values()), Options())
    except UserError as exc:
        fail(exc)
    try:
        r.connect()
        if down := [n for n in names if n in r.failed]:
            fail(PreconditionError(f"{', '.join(down)} unreachable: {r.failed[down[0]]}",
                                   f"{inv.path}: hosts.{down[0]}",
                                   "power it on to drain it, or take it out of the inventory and deploy"))
        _fail_master_over(r, inv, [h for h in hosts if h.has("redis")])
        for host in hosts:
            print(f"{host.name:<10} decommission stopping its services (worker: warm shutdown)", flush=True)
        results = r.parallel(lambda h: r.remote(h.name).sh(_stop_script(r, h),
                                                            timeout=inv.settings.worker_stop_timeout + 120), hosts)
        if bad := [res for res in results if not res.ok]:
            print("\n".join(res.out + res.err for res in bad))
            return 1
    finally:
        r.close()
    rc = execute(rest, list(rest.hosts.values()), COMPONENTS, Options(quiet=True),
                 finish=stack.ends_healthy)
    if rc == 0 and any(h.has("sentinel", "redis") for h in hosts):
        r = Run(rest, list(rest.hosts.values()), Options(quiet=True, silent=True))
        try:
            _sentinel_reset(r, rest.with_role("sentinel"))
        finally:
            r.close()
    who = ", ".join(names)
    print(f"{who} {'is' if len(names) == 1 else 'are'} out of the cluster" if rc == 0
          else f"{who}: the other hosts did not converge",
          f"— now remove {'it' if len(names) == 1 else 'them'} from {inv.path}" if rc == 0 else "", flush=True)
    return rc


def _fail_master_over(r, inv, leaving: list) -> None:
    """If a leaving host holds the Redis master, fail it over to a staying replica (or stop, saying why)."""
    if not leaving:
        return
    redis.prepare(r, leaving)
    if r.data.get("redis_master") not in [r.addresses[h.name] for h in leaving]:
        return
    for host in leaving:
        r.remote(host.name).sh(_no_promotion_script(r, host), timeout=15)
    if why := redis.failover(r):
        fail(PreconditionError(f"the Redis master could not be failed over: {why}",
                               f"{inv.path}: hosts", "check `inv health`, then try again"))
