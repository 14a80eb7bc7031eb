"""Redis replication (1 master + replicas) and Sentinel: the Celery broker without a single point of failure.

Not Redis Cluster: kombu has no cluster transport (the inventory refuses `redis.mode: cluster`).
Ownership: our settings live in /etc/redis/airflow-ha.conf (managed, included); /etc/redis/redis.conf and
sentinel.conf are created once and then belong to Redis/Sentinel, which rewrite them on failover. So a
re-run asks the Sentinels who the master is now and never re-points a promoted master at its old one.
Log rotation: the distributions' redis packages ship /etc/logrotate.d rules for /var/log/redis.
"""

from __future__ import annotations

import hashlib
import shlex
from collections import Counter

from . import selinux
from .core.steps import Command, Directory, File, Preview, Service, Warn
from .core.templates import render

NAME = "redis"
MANAGED = "/etc/redis/airflow-ha.conf"
SENTINEL_STAMP = "/etc/redis/sentinel.airflow-ha.sha256"


def applies(inv, host) -> bool:
    return host.has("redis", "sentinel")


def settings(inv) -> dict:
    r, ports = inv.cluster["redis"], inv.cluster["ports"]
    return {"port": ports["redis"], "sentinel_port": ports["sentinel"], "master_name": r["master_name"],
            "down_after_ms": r["down_after_ms"], "failover_timeout_ms": r["failover_timeout_ms"],
            "quorum": len(inv.with_role("sentinel")) // 2 + 1}


def ask_master_script(run, sentinel_hosts) -> str:
    """Shell that prints `ip port` as seen by each reachable Sentinel (password via env, not argv)."""
    s = settings(run.inv)
    lines = [f"export REDISCLI_AUTH={shlex.quote(run.secrets['sentinel_password'])}"]
    for h in sentinel_hosts:
        lines.append(f"timeout 3 redis-cli --no-auth-warning -h {run.addresses[h.name]} -p {s['sentinel_port']} "
                     f"SENTINEL get-master-addr-by-name {s['master_name']} 2>/dev/null | tr '\\n' ' '; echo")
    return "\n".join(lines)


def current_master(run) -> tuple[str, str]:
    """(address, how it was found): the Sentinels' majority view, else the first redis host (fresh cluster)."""
    inv = run.inv
    sentinels = inv.with_role("sentinel")
    votes: Counter = Counter()
    for host in sentinels:
        if host.name in run.failed:
            continue
        try:
            out = run.remote(host.name).sh(ask_master_script(run, [host]), timeout=10).out
        except Exception:  # noqa: BLE001 - an unreachable sentinel host just does not vote
            continue
        words = out.split()
        if len(words) >= 2:
            votes[words[0]] += 1
    if votes:
        address, n = votes.most_common(1)[0]
        return address, f"{n} sentinel(s) agree"
    first = inv.with_role("redis")[0]
    return run.addresses[first.name], f"no sentinel answered: initial master {first.name}"


def prepare(run, hosts) -> None:
    if hosts:
        run.data["redis_master"], how = current_master(run)
        run.say(f"{'cluster':<10} redis      master is {run.data['redis_master']} ({how})")


def steps(ctx) -> list:
    inv, plat, host = ctx.inv, ctx.platform, ctx.host
    master = ctx.run.data.get("redis_master") or ctx.run.addresses[inv.with_role("redis")[0].name]
    user = plat.users["redis"]
    values = {**settings(inv), "address": ctx.address, "master": master,
              "redis_password": ctx.secrets["redis_password"],
              "sentinel_password": ctx.secrets["sentinel_password"],
              "resolve_hostnames": _at_least(plat.redis_version, (6, 2))}
    nofile = 16384 if ctx.facts.in_container else 65535
    out = [Directory("/etc/redis", owner=user, group=user, mode=0o2750)]
    out += selinux.steps_for_redis(ctx)   # port labels before the units start on them
    if ctx.facts.in_container:
        out.append(Warn(target="LimitNOFILE", message=f"capped at {nofile} (container limit)"))
    if host.has("redis"):
        unit = plat.units["redis"]
        out += [
            File(MANAGED, render("redis/redis-managed.conf.j2", **values), owner="root", group=user,
                 mode=0o640, notify=(unit,), secret=True),
            File(f"/etc/systemd/system/{unit}.service.d/{plat.paths['redis_dropin']}",
                 render("redis/limits.conf.j2", unit=unit, nofile=nofile, capped=ctx.facts.in_container),
                 notify=("daemon-reload", unit)),
            _owned_conf(plat.paths["redis_conf"], render("redis/redis.conf.j2", **values), user,
                        desc=f"create (replica of {master})" if master != ctx.address else "create (master)",
                        unless=f"grep -qx 'include {MANAGED}' {plat.paths['redis_conf']}", notify=(unit,)),
            Service(unit),
        ]
    if host.has("sentinel"):
        unit = plat.units["sentinel"]
        conf = render("redis/sentinel.conf.j2", **values)
        stamp = hashlib.sha256(render("redis/sentinel.conf.j2", **{**values, "master": "-"}).encode()).hexdigest()
        out += [
            File(f"/etc/systemd/system/{unit}.service.d/{plat.paths['redis_dropin']}",
                 render("redis/limits.conf.j2", unit=unit, nofile=nofile, capped=ctx.facts.in_container),
                 notify=("daemon-reload", unit)),
            _owned_conf(plat.paths["sentinel_conf"], conf, user, desc=f"generate (master {master})",
                        unless=f"[ \"$(cat {SENTINEL_STAMP})\" = {stamp} ]", notify=(unit,),
                        then=f"echo {stamp} > {SENTINEL_STAMP}"),
            Service(unit),
        ]
    return out


def _at_least(version: str, wanted: tuple) -> bool:
    """True if a 'major.minor' version is >= wanted (unknown versions count as new)."""
    try:
        return tuple(int(x) for x in version.split(".")[:2]) >= wanted
    except ValueError:
        return True


def _owned_conf(path: str, content: str, user: str, desc: str, unless: str, notify: tuple,
                then: str = "") -> Command:
    """Write a secret-bearing file the daemon owns afterwards (it rewrites it): 0640, atomically, only
    when `unless` fails. The whole file is replaced, so --check shows it against the host's copy."""
    script = File(path, content, owner=user, group=user, mode=0o640).write_script() + (f"\n{then}" if then else "")
    return Command(path, desc=desc, unless=unless, script=script, notify=notify, preview=Preview(path, content))
