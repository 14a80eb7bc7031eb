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
import time
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
            "quorum": len(inv.with_role("sentinel")) // 2 + 1, "maxmemory": str(r["maxmemory"]).lower()}


def ask_master_script(run, sentinel_hosts) -> str:
    """Shell that prints `ip port` as seen by each reachable Sentinel (password via env, not argv)."""
    s = settings(run.inv)
    lines = [f"export REDISCLI_AUTH={shlex.quote(run.secrets['sentinel_password'])}"]
    for h in sentinel_hosts:
        lines.append(f"timeout 3 redis-cli --no-auth-warning -h {run.addresses[h.name]} -p {s['sentinel_port']} "
                     f"SENTINEL get-master-addr-by-name {s['master_name']} 2>/dev/null | tr '\\n' ' '; echo")
    return "\n".join(lines)


def sentinel_cli(run, host, command: str, timeout: int = 5) -> str:
    """Shell asking `host`'s Sentinel `command`; the password travels in REDISCLI_AUTH, never in argv."""
    return (f"export REDISCLI_AUTH={shlex.quote(run.secrets['sentinel_password'])}\n"
            f"timeout {timeout} redis-cli --no-auth-warning -h {run.addresses[host.name]} "
            f"-p {settings(run.inv)['sentinel_port']} {command}")


def sentinel_views(run, asked: dict | None = None) -> dict[str, str]:
    """sentinel host -> the master address it names (hosts that do not answer are left out).

    `asked`: answers already given (host -> `ask_master_script` output, e.g. at connect); the other
    Sentinels are asked in parallel (one round trip each, at once). Answers keep inventory order.
    """
    def ask(host) -> str:
        try:
            return run.remote(host.name).sh(ask_master_script(run, [host]), timeout=10).out
        except Exception:  # noqa: BLE001 - an unreachable sentinel host just does not vote
            return ""

    asked = asked or {}
    hosts = [h for h in run.inv.with_role("sentinel") if h.name not in run.failed]
    live = [h for h in hosts if h.name not in asked]
    outs = {**asked, **dict(zip([h.name for h in live],
                                run.parallel(ask, live) if len(live) > 1 else [ask(h) for h in live], strict=True))}
    views = {h.name: outs[h.name].split() for h in hosts}
    return {name: words[0] for name, words in views.items() if len(words) >= 2}


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
            Service(unit, config=MANAGED),
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
            Service(unit, config=SENTINEL_STAMP),
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


# -- rolling restarts (fabfile/core/runner.py: roll_order, before_restart, gate) ---------------------------


def roll_order(run, hosts) -> list:
    """The current master's host last: its replicas restart first, and it is failed over before its turn."""
    master = run.data.get("redis_master")
    return sorted(hosts, key=lambda h: run.addresses[h.name] == master)


def before_restart(run, host, units):
    """Restarting redis-server on the master: fail it over to a replica first (none: restart in place)."""
    unit = run.facts[host.name].platform.units["redis"]
    if unit not in units or run.addresses[host.name] != run.data.get("redis_master"):
        return None
    if len(run.inv.with_role("redis")) < 2 or not run.inv.with_role("sentinel"):
        return None
    name = settings(run.inv)["master_name"]
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
    name = settings(run.inv)["master_name"]
    for host in (h for h in run.inv.with_role("sentinel") if h.name not in run.failed):
        script = sentinel_cli(run, host, f"SENTINEL FAILOVER {name} 2>&1")
        try:
            return run.remote(host.name).sh(script, timeout=15).out.strip()
        except Exception:  # noqa: BLE001 - try the next sentinel
            continue
    return "no sentinel reachable"


def gate_script(run, host) -> str:
    """One round trip: this host's Redis replication role/link and its Sentinel's quorum check."""
    s, lines = settings(run.inv), []
    cli = f"timeout 5 redis-cli --no-auth-warning -h {run.addresses[host.name]}"
    if host.has("redis"):
        lines += [f"export REDISCLI_AUTH={shlex.quote(run.secrets['redis_password'])}", "echo @@redis",
                  f"{cli} -p {s['port']} INFO replication | tr -d '\\r' | grep -E '^(role|master_link_status):'"]
    if host.has("sentinel"):
        lines += [f"export REDISCLI_AUTH={shlex.quote(run.secrets['sentinel_password'])}", "echo @@sentinel",
                  f"{cli} -p {s['sentinel_port']} SENTINEL CKQUORUM {s['master_name']} 2>&1"]
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
