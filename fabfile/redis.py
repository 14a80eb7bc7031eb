"""Redis replication (1 master + replicas) and Sentinel: the Celery broker without a single point of failure.

Not Redis Cluster: kombu has no cluster transport (the inventory refuses `redis.mode: cluster`).
Ownership: our settings live in /etc/redis/airflow-ha.conf (managed, included); /etc/redis/redis.conf and
sentinel.conf are created once and then belong to Redis/Sentinel, which rewrite them on failover. So a
re-run asks the Sentinels who the master is now and never re-points a promoted master at its old one.
Log rotation: the distributions' redis packages ship /etc/logrotate.d rules for /var/log/redis.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field

from . import selinux
from .core.component import Check, Component, Role
from .core.errors import InventoryError
from .core.steps import Command, Directory, File, Preview, Service, Warn
from .core.templates import render

NAME = "redis"
@dataclass(frozen=True)
class RedisBlock:
    """`cluster.redis`: the broker's replication and its Sentinels' failover timing."""

    mode: str = "replication"
    master_name: str = "airflow"
    down_after_ms: int = 5000
    failover_timeout_ms: int = 60000
    maxmemory: str = "0"               # 0 = no limit (noeviction: a full broker refuses)


@dataclass(frozen=True)
class RedisSettings:
    redis: RedisBlock = field(default_factory=RedisBlock)
PORTS = {"redis": 6379, "sentinel": 26379}
MANAGED = "/etc/redis/airflow-ha.conf"
SENTINEL_STAMP = "/etc/redis/sentinel.airflow-ha.sha256"


@dataclass(frozen=True)
class RedisNames:
    """What Redis and Sentinel are called on one platform (docs/platforms.md: each entry and its source)."""

    packages: tuple[str, ...]
    sentinel_packages: tuple[str, ...]
    unit: str
    sentinel_unit: str
    conf: str
    sentinel_conf: str
    dropin: str        # file name of our systemd drop-in for both units (LimitNOFILE)
    user: str
    version: str       # major.minor of the packaged Redis (Sentinel options differ)

    def unit_of(self, role: str) -> str:
        """The unit of the `redis` or the `sentinel` role."""
        return self.sentinel_unit if role == "sentinel" else self.unit


NAMES = {
    "debian": RedisNames(packages=("redis-server", "redis-tools"), sentinel_packages=("redis-sentinel",),
                         unit="redis-server", sentinel_unit="redis-sentinel", conf="/etc/redis/redis.conf",
                         sentinel_conf="/etc/redis/sentinel.conf", dropin="airflow-ha.conf", user="redis",
                         version="7.0"),
    # one package holds redis-server, redis-sentinel and both units; redis >= 6 (Fedora 34 / EL9): /etc/redis/.
    # It ships <unit>.service.d/limit.conf (LimitNOFILE=10240): drop-ins apply in name order, ours sorts after it
    "rhel": RedisNames(packages=("redis",), sentinel_packages=("redis",), unit="redis", sentinel_unit="redis-sentinel",
                       conf="/etc/redis/redis.conf", sentinel_conf="/etc/redis/sentinel.conf",
                       dropin="zz-airflow-ha.conf", user="redis", version="6.2"),
}


def names(platform) -> RedisNames:
    return NAMES[platform.family]


def applies(inv, host) -> bool:
    return host.has("redis", "sentinel")


def conf_values(inv) -> dict:
    """What the redis.conf and sentinel.conf templates read from the inventory."""
    r, ports = inv.settings.redis, inv.ports
    return {"port": ports.redis, "sentinel_port": ports.sentinel, "master_name": r.master_name,
            "down_after_ms": r.down_after_ms, "failover_timeout_ms": r.failover_timeout_ms,
            "quorum": len(inv.with_role("sentinel")) // 2 + 1, "maxmemory": str(r.maxmemory).lower()}


def ask_master_script(run, sentinel_hosts) -> str:
    """Shell that prints `ip port` as seen by each reachable Sentinel (password via env, not argv)."""
    ports, r = run.inv.ports, run.inv.settings.redis
    lines = [f"export REDISCLI_AUTH={shlex.quote(run.secrets['sentinel_password'])}"]
    for h in sentinel_hosts:
        lines.append(f"timeout 3 redis-cli --no-auth-warning -h {run.addresses[h.name]} -p {ports.sentinel} "
                     f"SENTINEL get-master-addr-by-name {r.master_name} 2>/dev/null | tr '\\n' ' '; echo")
    return "\n".join(lines)


def sentinel_cli(run, host, command: str, timeout: int = 5) -> str:
    """Shell asking `host`'s Sentinel `command`; the password travels in REDISCLI_AUTH, never in argv."""
    return (f"export REDISCLI_AUTH={shlex.quote(run.secrets['sentinel_password'])}\n"
            f"timeout {timeout} redis-cli --no-auth-warning -h {run.addresses[host.name]} "
            f"-p {run.inv.ports.sentinel} {command}")


def redis_cli(run, host, command: str, timeout: int = 5) -> str:
    """Shell asking `host`'s Redis `command`; the password travels in REDISCLI_AUTH, never in argv."""
    return (f"export REDISCLI_AUTH={shlex.quote(run.secrets['redis_password'])}\n"
            f"timeout {timeout} redis-cli --no-auth-warning -h {run.addresses[host.name]} "
            f"-p {run.inv.ports.redis} {command}")


def sentinel_views(run, asked: dict | None = None) -> dict[str, str]:
    """sentinel host -> the master address it names (hosts that do not answer are left out).

    `asked`: answers already given (host -> `ask_master_script` output, e.g. at connect); the other
    Sentinels are asked in parallel (one round trip each, at once). Answers keep inventory order.
    """
    def ask(host) -> str:
        try:
            return run.remote(host.name).sh(ask_master_script(run, [host]), timeout=10).out
        except Exception:  # an unreachable sentinel host just does not vote
            return ""

    asked = asked or {}
    hosts = [h for h in run.inv.with_role("sentinel") if h.name not in run.failed]
    live = [h for h in hosts if h.name not in asked]
    outs = {**asked, **dict(zip([h.name for h in live],
                                run.parallel(ask, live) if len(live) > 1 else [ask(h) for h in live], strict=True))}
    views = {h.name: outs[h.name].split() for h in hosts}
    return {name: words[0] for name, words in views.items() if len(words) > 1}


def connect_probe(run, host) -> str:
    """Asked with the facts (same round trip): the master this host's Sentinel names, for `prepare`."""
    return ask_master_script(run, [host]) if host.has("sentinel") else ""


def current_master(run, asked: dict | None = None) -> tuple[str, str]:
    """(address, how it was found): the Sentinels' majority view, else the first redis host (fresh cluster)."""
    votes = Counter(sentinel_views(run, asked).values())
    if votes:
        address, n = votes.most_common(1)[0]
        return address, f"{n} sentinel(s) agree"
    first = run.inv.with_role("redis")[0]
    return run.addresses[first.name], f"no sentinel answered: initial master {first.name}"


def prepare(run, hosts) -> None:
    if hosts:
        # the Sentinels' answers given at connect serve the first prepare only: a later one (--serial batches)
        # comes after restarts that may have moved the master, and asks again
        run.data["redis_master"], how = current_master(run, getattr(run, "answers", {}).pop(NAME, None))
        run.say(f"{'cluster':<10} redis      master is {run.data['redis_master']} ({how})")


def steps(ctx) -> list:
    inv, host, redis = ctx.inv, ctx.host, names(ctx.platform)
    master = ctx.run.data.get("redis_master") or ctx.run.addresses[inv.with_role("redis")[0].name]
    user = redis.user
    values = {**conf_values(inv), "address": ctx.address, "master": master,
              "redis_password": ctx.secrets["redis_password"],
              "sentinel_password": ctx.secrets["sentinel_password"],
              "resolve_hostnames": _at_least(redis.version, (6, 2))}
    nofile = 16384 if ctx.facts.in_container else 65535
    out = [Directory("/etc/redis", owner=user, group=user, mode=0o2750)]
    out += selinux.steps_for_redis(ctx)   # port labels before the units start on them
    if ctx.facts.in_container:
        out.append(Warn(target="LimitNOFILE", message=f"capped at {nofile} (container limit)"))
    if host.has("redis"):
        unit = redis.unit
        out += [
            File(MANAGED, render("redis/redis-managed.conf.j2", **values), owner="root", group=user,
                 mode=0o640, notify=(unit,)),
            _limits(ctx, unit, nofile),
            _owned_conf(redis.conf, render("redis/redis.conf.j2", **values), user,
                        desc=f"create (replica of {master})" if master != ctx.address else "create (master)",
                        unless=f"grep -qx 'include {MANAGED}' {redis.conf}", notify=(unit,)),
            Service(unit, config=MANAGED),
        ]
    if host.has("sentinel"):
        unit = redis.sentinel_unit
        conf = render("redis/sentinel.conf.j2", **values)
        stamp = hashlib.sha256(render("redis/sentinel.conf.j2", **{**values, "master": "-"}).encode()).hexdigest()
        out += [
            _limits(ctx, unit, nofile),
            _owned_conf(redis.sentinel_conf, conf, user, desc=f"generate (master {master})",
                        unless=f"[ \"$(cat {SENTINEL_STAMP})\" = {stamp} ]", notify=(unit,),
                        then=f"echo {stamp} > {SENTINEL_STAMP}"),
            Service(unit, config=SENTINEL_STAMP),
        ]
    return out


def _limits(ctx, unit: str, nofile: int) -> File:
    """The unit's drop-in: LimitNOFILE (capped in a container) and a finite stop timeout."""
    return File(f"/etc/systemd/system/{unit}.service.d/{names(ctx.platform).dropin}",
                render("redis/limits.conf.j2", unit=unit, nofile=nofile, capped=ctx.facts.in_container),
                notify=("daemon-reload", unit))


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


# -- rolling restarts (fabfile/core/runner.py: roll_order, before_restart, gate) ---------------------------


def roll_order(run, hosts) -> list:
    """The current master's host last: its replicas restart first, and it is failed over before its turn."""
    master = run.data.get("redis_master")
    return sorted(hosts, key=lambda h: run.addresses[h.name] == master)


def before_restart(run, host, units):
    """Restarting redis-server on the master: fail it over to a replica first (none: restart in place)."""
    unit = names(run.facts[host.name].platform).unit
    if unit not in units or run.addresses[host.name] != run.data.get("redis_master"):
        return None
    if len(run.inv.with_role("redis")) <= 1 or not run.inv.with_role("sentinel"):
        return None
    name = run.inv.settings.redis.master_name
    return f"SENTINEL FAILOVER {name}: a replica takes over before the old master restarts", lambda: failover(run)


def failover(run, timeout: float = 60, interval: float = 1) -> str | None:
    """Ask a Sentinel to fail the master over (retried while it has no good replica yet), then wait until
    every answering Sentinel names one new master. None when done, else why not.

    The caller restarts the old master right after this, which closes its clients' connections; a publish
    to it in the second before is lost (Airflow re-sends the task after task_queued_timeout). Pausing
    writes and demoting the old master (REPLICAOF) was tried: the paused publishes then get READONLY,
    which kombu's queue declaration does not retry, and the task failed.
    """
    old = run.data.get("redis_master")
    deadline = time.monotonic() + timeout
    answer = _request_failover(run)
    while answer != "OK" and not answer.startswith("INPROG"):
        if time.monotonic() >= deadline:
            return f"SENTINEL FAILOVER answered {answer[:80] or 'nothing'}"
        time.sleep(interval)
        answer = _request_failover(run)
    while True:
        views = set(sentinel_views(run).values())
        if len(views) == 1 and old not in views:
            run.data["redis_master"] = views.pop()
            run.say(f"{'cluster':<10} redis      new master is {run.data['redis_master']} (was {old})")
            return None
        if time.monotonic() >= deadline:
            return f"sentinels did not agree on a new master within {timeout:.0f}s (views: {sorted(views)})"
        time.sleep(interval)


def _request_failover(run) -> str:
    """SENTINEL FAILOVER on the first reachable sentinel host: its answer ("OK", "NOGOODSLAVE ...")."""
    name = run.inv.settings.redis.master_name
    for host in (h for h in run.inv.with_role("sentinel") if h.name not in run.failed):
        script = sentinel_cli(run, host, f"SENTINEL FAILOVER {name} 2>&1")
        try:
            return run.remote(host.name).sh(script, timeout=15).out.strip()
        except Exception:  # try the next sentinel
            continue
    return "no sentinel reachable"


def gate_script(run, host) -> str:
    """One round trip: this host's Redis replication role/link and its Sentinel's quorum check."""
    ports, lines = run.inv.ports, []
    cli = f"timeout 5 redis-cli --no-auth-warning -h {run.addresses[host.name]}"
    if host.has("redis"):
        lines += [f"export REDISCLI_AUTH={shlex.quote(run.secrets['redis_password'])}", "echo @@redis",
                  f"{cli} -p {ports.redis} INFO replication | tr -d '\\r' | grep -E '^(role|master_link_status):'"]
    if host.has("sentinel"):
        lines += [f"export REDISCLI_AUTH={shlex.quote(run.secrets['sentinel_password'])}", "echo @@sentinel",
                  f"{cli} -p {ports.sentinel} SENTINEL CKQUORUM {run.inv.settings.redis.master_name} 2>&1"]
    return "\n".join(lines)


def gate(run, host) -> str | None:
    """Rolling restarts go on only when this host's Redis is the Sentinels' master or a replica with its
    link up, and its Sentinel reaches quorum (SENTINEL CKQUORUM)."""
    out = run.remote(host.name).sh(gate_script(run, host), timeout=30).out
    why = gate_verdict(out, run.addresses[host.name] == run.data.get("redis_master"))
    if why and "acts as master" in why:      # the Sentinels may have failed over on their own meanwhile
        run.data["redis_master"], _ = current_master(run)
        why = gate_verdict(out, run.addresses[host.name] == run.data["redis_master"])
    return why


def gate_verdict(out: str, is_master: bool) -> str | None:
    """None when healthy, else why not, from `gate_script` output."""
    parts = dict(_sections(out))
    bad = []
    if "redis" in parts:
        info = dict(line.split(":", 1) for line in parts["redis"].splitlines() if ":" in line)
        role, link = info.get("role", "down"), info.get("master_link_status")
        if role == "master" and not is_master:
            bad.append("redis acts as master but the sentinels name another")
        elif role == "slave" and link != "up":
            bad.append(f"redis replica link {link}")
        elif role not in ("master", "slave"):
            bad.append(f"redis {role}")
    if "sentinel" in parts and not parts["sentinel"].strip().startswith("OK"):
        bad.append(f"sentinel: {parts['sentinel'].strip()[:80] or 'no answer'}")
    return "; ".join(bad) or None


def _sections(out: str):
    name, buf = None, []
    for line in out.splitlines():
        if line.startswith("@@"):
            if name:
                yield name, "\n".join(buf)
            name, buf = line[2:].strip(), []
        else:
            buf.append(line)
    if name:
        yield name, "\n".join(buf)


def validate(inv) -> None:
    """Replication only (kombu has no Redis Cluster transport), a memory size Redis reads, an odd number of
    Sentinels."""
    path, r = inv.path, inv.settings.redis
    if r.mode == "cluster":
        raise InventoryError(
            "redis.mode 'cluster' is not supported: Celery/kombu has no Redis Cluster transport (CROSSSLOT/"
            "MovedError; kombu offers redis, rediss and sentinel only), and a 3-master Redis Cluster without "
            "replicas is not HA either", f"{path}: cluster.redis.mode",
            "use 'replication' (the default): 1 master + replicas, failover by 3 Sentinels, sentinel:// broker URLs")
    if r.mode != "replication":
        raise InventoryError(f"unknown redis.mode {r.mode!r}", f"{path}: cluster.redis.mode", "use 'replication'")
    if not re.fullmatch(r"\d+(kb|mb|gb)?", str(r.maxmemory).lower()):
        raise InventoryError(f"redis.maxmemory {r.maxmemory!r} is not a Redis memory size",
                             f"{path}: cluster.redis.maxmemory", "write e.g. 0 (no limit), 512mb or 2gb")
    sentinels = len(inv.with_role("sentinel"))
    if sentinels % 2 == 0:
        raise InventoryError(
            f"{sentinels} sentinel hosts: an {'empty' if not sentinels else 'even'} number of Sentinels cannot "
            "form a safe majority", f"{path}: hosts",
            "give the 'sentinel' role to an odd number of hosts (3 recommended)")


# -- `inv health`: Sentinels and Redis, asked with redis-py through SSH forwards --------------------------
def _redis(run, host, port_key: str, secret_key: str):
    """A redis-py client to `host`'s Redis or Sentinel through an SSH forward (context manager)."""
    from contextlib import contextmanager

    import redis as redislib  # only health needs it (start-up time)

    @contextmanager
    def client():
        with run.remote(host.name).forward(run.addresses[host.name], getattr(run.inv.ports, port_key)) as port:
            yield redislib.Redis(port=port, password=run.secrets[secret_key],
                                 socket_timeout=run.inv.settings.check_timeout)
    return client()


def health_checks(run) -> list[Check]:
    import redis as redislib
    inv, out = run.inv, []
    master_name = inv.settings.redis.master_name
    masters = {}
    for host in inv.with_role("sentinel"):
        if host.name in run.failed:
            continue
        try:
            with _redis(run, host, "sentinel", "sentinel_password") as s:
                addr = s.execute_command("SENTINEL", "get-master-addr-by-name", master_name)
                masters[host.name] = addr[0].decode() if addr else None
                try:
                    ok = s.execute_command("SENTINEL", "CKQUORUM", master_name)
                    usable = re.search(rb"(\d+) usable", ok if isinstance(ok, bytes) else str(ok).encode())
                    out.append(Check(host.name, "sentinel quorum", "ok", f"master {masters[host.name]}"
                                     + (f", {usable.group(1).decode()} usable sentinels" if usable else "")))
                except redislib.ResponseError as exc:
                    out.append(Check(host.name, "sentinel quorum", "fail", str(exc)[:80]))
        except Exception as exc:
            out.append(Check(host.name, "sentinel", "fail", f"unreachable: {type(exc).__name__}"))
    views = set(masters.values())
    by_addr = {a: n for n, a in run.addresses.items()}
    if views:
        agreed = len(views) == 1 and None not in views
        master = next(iter(views))
        out.append(Check("cluster", "sentinels agree on master", "ok" if agreed else "fail",
                         f"{by_addr.get(master, master)} ({master})" if agreed else f"views: {masters}"))
        run.data["redis_master"] = master if agreed else None
    for host in inv.with_role("redis"):
        if host.name in run.failed:
            continue
        try:
            with _redis(run, host, "redis", "redis_password") as r:
                info = r.info("replication")
            out.append(_replication_check(host.name, info, len(inv.with_role("redis")) - 1,
                                          run.addresses[host.name], run.data.get("redis_master")))
        except Exception as exc:
            out.append(Check(host.name, "redis", "fail", f"down: {type(exc).__name__}: {str(exc)[:60]}"))
    return out


def _replication_check(name, info, replicas_expected, address, sentinel_master) -> Check:
    role = info.get("role")
    if role == "master" and sentinel_master and address != sentinel_master:
        return Check(name, "redis", "fail", f"acts as master but the sentinels name {sentinel_master} "
                                            "(old master not yet converted to a replica?)")
    if role == "master":
        slaves = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        offset = info.get("master_repl_offset", 0)
        lags = [offset - s.get("offset", 0) for s in slaves]
        status = "ok" if len(slaves) >= replicas_expected else "warn"
        return Check(name, "redis", status, f"master, {len(slaves)}/{replicas_expected} replicas, "
                                            f"max lag {max(lags, default=0)} bytes")
    link = info.get("master_link_status")
    return Check(name, "redis", "ok" if link == "up" else "fail",
                 f"replica of {info.get('master_host')}, link {link}")



class Redis(Component):
    """Asks the Sentinels for the master before planning; rolls the master last, failed over first."""

    name = NAME
    roles = (Role("redis", ("redis",), required="give one or more hosts (3 recommended) the 'redis' role"),
             Role("sentinel", ("sentinel",)))
    settings = RedisSettings
    default_ports = PORTS
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    names = staticmethod(names)
    validate = staticmethod(validate)
    connect_probe = staticmethod(connect_probe)
    prepare = staticmethod(prepare)
    roll_order = staticmethod(roll_order)
    before_restart = staticmethod(before_restart)
    gate = staticmethod(gate)
    health_checks = staticmethod(health_checks)

    def units(self, run, host) -> list[str]:
        redis = names(run.facts[host.name].platform)
        return [redis.unit_of(role.name) for role in self.roles if host.has(role.name)]


COMPONENT = Redis()
