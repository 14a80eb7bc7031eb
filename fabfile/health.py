"""`inv health`: one verdict for the whole cluster — a table (or JSON), and exit 1 if anything failed.

Per host, in parallel, one round trip gathers units (+ restart counts), disk, clock and the Airflow
health JSON of its api-server and nginx (with `cluster.monitoring` on, also each exporter's /metrics status:
one row per exporter). Redis, Sentinel and PostgreSQL are checked with redis-py and psycopg2 from the
control machine through SSH port forwarding over the same connection (no port is opened for the control
machine). Every check has a timeout (`check_timeout`), so a hung host only
fails its own rows; a host that does not answer SSH costs `connect_timeout` (the connections open in parallel).
With `cluster.vip`: a keepalived unit row per nginx host and one "vip" row (exactly one holder = ok).
Patroni mode (`postgres` on >= 2 hosts): each postgres member answers its own REST `GET /cluster` and
`GET /primary` in the same round trip, each etcd member `etcdctl endpoint health`; from those answers come
a row per Patroni member (role, state, lag), "patroni leader" (exactly one member answers /primary 200 and
every /cluster view names the same leader; two = split brain, a failure), "replication lag"
(LAG_WARN_BYTES / LAG_FAIL_BYTES), "sync standby" (synchronous_mode only) and "etcd quorum". A member
that did not answer is named, never counted as fine. The database row connects through a libpq
multi-host conninfo (one SSH forward per member, target_session_attrs=read-write): it reaches the leader.
Every single point of failure of the inventory (fabfile/spof.py) is a "warn" row of host "cluster".
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass

from . import backup, keepalived, monitoring, nginx, postgres, spof
from .core import inventory as inventory_mod
from .core import profile
from .core.errors import UserError
from .core.runner import Options, Run, fail
from .services import UNITS

DISK_WARN_PCT = 15
SKEW_WARN_S = 1.0
#: replica lag (bytes behind the leader, Patroni's /cluster `lag`): warn at Patroni's
#: maximum_lag_on_failover (1 MiB, files/patroni/patroni.yml.j2: beyond it the replica is no failover
#: candidate); fail at 64 MiB (a replica that far behind is not keeping up)
LAG_WARN_BYTES = 1024 * 1024
LAG_FAIL_BYTES = 64 * 1024 * 1024


@dataclass
class Check:
    """One health check's verdict on one host (or the cluster)."""

    host: str
    check: str
    status: str   # ok | warn | fail
    detail: str = ""


def expected_units(run, host) -> list[str]:
    plat = run.facts[host.name].platform if host.name in run.facts else None
    units = []
    if plat:
        pg = "patroni" if run.inv.patroni else "postgres"
        for role, key in (("redis", "redis"), ("sentinel", "sentinel"), ("postgres", pg), ("etcd", "etcd")):
            if host.has(role) and (role != "etcd" or run.inv.patroni):
                units.append(plat.units[key])
        if nginx.runs_nginx(host):
            units.append(plat.units["nginx"])
        if keepalived.applies(run.inv, host):
            units.append(plat.units["keepalived"])
    units += [u for role, u in UNITS.items() if host.has(role)]
    return units


def host_script(run, host) -> str:
    ports = run.inv.cluster["ports"]
    lines = ['echo "@@now $(date +%s.%N)"', "echo \"@@disk $(df -P / | awk 'NR==2{print $4, $2}')\""]
    for unit in expected_units(run, host):
        lines.append(f'echo "@@unit {unit} $(systemctl show -p ActiveState --value {unit}) '
                     f'$(systemctl show -p NRestarts --value {unit})"')
    if host.has("api_server"):
        lines.append(f'echo "@@api $(curl -s -m 4 http://{run.addresses[host.name]}:{ports["api"]}'
                     '/api/v2/monitor/health)"')
    if nginx.runs_nginx(host):
        lines.append(f'echo "@@nginx $(curl -s -m 4 http://127.0.0.1:{ports["http"]}/api/v2/monitor/health)"')
    if keepalived.applies(run.inv, host):
        lines.append(f'echo "@@vip $(ip -o -4 addr show to {run.inv.cluster["vip"]}/32 | wc -l)"')
    lines += _patroni_lines(run, host)
    if run.inv.cluster["monitoring"]:
        for exporter in monitoring.exporters(run.inv, host):
            lines.append(f"echo \"@@exporter {exporter} $(curl -s -m 2 -o /dev/null -w '%{{http_code}}' "
                         f"http://{run.addresses[host.name]}:{ports[exporter]}/metrics)\"")
    return "\n".join(lines)


def _patroni_lines(run, host) -> list[str]:
    """Patroni mode: this member's own /cluster view and /primary code; this etcd member's health."""
    if not run.inv.patroni:
        return []
    from . import etcd, patroni
    out = []
    if host.has("postgres"):
        cluster, primary = patroni.api_url(run, host, "cluster"), patroni.api_url(run, host, "primary")
        out += [f"echo \"@@pcluster $(curl -s -m 3 {cluster} | tr -d '\\n')\"",
                f"echo \"@@pprimary $(curl -s -m 3 -o /dev/null -w '%{{http_code}}' {primary})\""]
    if host.has("etcd"):
        out.append(f'echo "@@etcd $({etcd.health_script(run, host)})"')
    return out


def check_host(run, host) -> list[Check]:
    name, out = host.name, []
    t0 = time.time()
    res = run.remote(name).sh(host_script(run, host), timeout=run.inv.cluster["check_timeout"])
    t1 = time.time()
    out.append(Check(name, "ssh", "ok", f"{(t1 - t0) * 1000:.0f} ms round trip"))
    for line in res.out.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "@@now":
            run.data.setdefault("clock", {})[name] = float(rest) - (t0 + t1) / 2
        elif tag == "@@disk":
            avail, total = (int(x) for x in rest.split())
            pct = 100 * avail / total if total else 0
            out.append(Check(name, "disk /", "ok" if pct >= DISK_WARN_PCT else "warn", f"{pct:.0f}% free"))
        elif tag == "@@unit":
            unit, state, restarts = (rest.split() + ["?", "?"])[:3]
            out.append(Check(name, f"unit {unit}", "ok" if state == "active" else "fail",
                             f"{state}, {restarts} restarts"))
        elif tag == "@@exporter":
            exporter, code = (rest.split() + [""])[:2]
            out.append(Check(name, f"exporter {exporter}", "ok" if code == "200" else "fail",
                             "up" if code == "200" else f"down (HTTP {code or 'no answer'})"))
        elif tag == "@@vip":
            run.data.setdefault("vip", {})[name] = rest.strip() not in ("", "0")
        elif tag in ("@@pcluster", "@@pprimary", "@@etcd"):
            run.data.setdefault(tag[2:], {})[name] = rest.strip()
        elif tag in ("@@api", "@@nginx"):
            out.append(_airflow_health(name, "api-server health" if tag == "@@api" else "health via nginx", rest))
    return out


AIRFLOW_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def _airflow_health(host, check, body) -> Check:
    """The verdict of /api/v2/monitor/health from what it answered: a missing component is a failure."""
    try:
        data = jsonlib.loads(body)
    except ValueError:
        return Check(host, check, "fail", "no answer" if not body.strip() else body.strip()[:80])
    if not isinstance(data, dict):
        return Check(host, check, "fail", f"not a JSON object: {body.strip()[:60]}")
    bad, healthy = _component_states(data)
    if bad:
        return Check(host, check, "fail", ", ".join(bad))
    return Check(host, check, "ok", f"{', '.join(healthy)} healthy")


def _component_states(data: dict) -> tuple[list[str], list[str]]:
    """(problems, healthy components): each expected component must be present and healthy."""
    bad, healthy = [], []
    names = list(AIRFLOW_COMPONENTS) + sorted(k for k in data if k not in AIRFLOW_COMPONENTS)
    for name in names:
        if name not in data:
            bad.append(f"{name} missing")
            continue
        value = data[name]
        status = value.get("status") if isinstance(value, dict) else None
        if status == "healthy":
            healthy.append(name)
        elif isinstance(value, dict) or name in AIRFLOW_COMPONENTS:
            bad.append(f"{name}={status}")
    return bad, healthy


def _redis(run, host, port_key: str, secret_key: str):
    """A redis-py client to `host`'s Redis or Sentinel through an SSH forward (context manager)."""
    from contextlib import contextmanager

    import redis as redislib

    @contextmanager
    def client():
        with run.remote(host.name).forward(run.addresses[host.name], run.inv.cluster["ports"][port_key]) as port:
            yield redislib.Redis(port=port, password=run.secrets[secret_key],
                                 socket_timeout=run.inv.cluster["check_timeout"])
    return client()


def check_redis(run) -> list[Check]:
    import redis as redislib
    inv, out = run.inv, []
    master_name = inv.cluster["redis"]["master_name"]
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
        except Exception as exc:  # noqa: BLE001
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
        except Exception as exc:  # noqa: BLE001
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


REPLICA_ROLES = ("replica", "sync_standby")
#: a replica's nominal state: "running" up to Patroni 3.0.3 (Debian 12 ships 3.0.2), "streaming" from 3.0.4
REPLICA_STATES = ("running", "streaming")


def patroni_checks(members: list[str], views: dict, primaries: dict, sync_mode: bool) -> list[Check]:
    """Pure: the Patroni rows from each member's answers.

    `views`: host -> its GET /cluster body ("" or missing: no answer); `primaries`: host -> the HTTP code
    of its GET /primary. `members`: the inventory's postgres hosts. Missing data is named, never ok.
    """
    parsed = {h: _members(views.get(h, "")) for h in members}
    answered = {h: m for h, m in parsed.items() if m is not None}
    out = [leader_check(members, answered, primaries)]
    if not answered:
        return out + [Check(h, "patroni member", "fail", "no /cluster answer from any member") for h in members]
    leader = next((h for h in members if primaries.get(h) == "200"), None)
    view = answered.get(leader) or next(iter(answered.values()))
    by_name = {m.get("name"): m for m in view}
    out += [member_check(h, by_name.get(h), h in answered) for h in members]
    out.append(lag_check(view))
    if sync_mode:
        out.append(sync_check(view))
    return out


def _members(body: str) -> list[dict] | None:
    """The `members` list of a /cluster body; None when there was no (JSON object) answer."""
    try:
        data = jsonlib.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        return None
    return [m for m in data["members"] if isinstance(m, dict)]


def leader_check(members: list[str], views: dict, primaries: dict) -> Check:
    """Exactly one member answers /primary 200 and every /cluster view names that same leader."""
    said = [h for h in members if primaries.get(h) == "200"]
    silent = [h for h in members if not primaries.get(h) or primaries.get(h) == "000"]
    named = {m.get("name") for ms in views.values() for m in ms if m.get("role") == "leader"}
    if len(said) > 1 or len(named) > 1:
        return Check("cluster", "patroni leader", "fail", "SPLIT BRAIN: " + (
            f"{' and '.join(said)} all answer /primary 200" if len(said) > 1
            else f"members' views name different leaders: {', '.join(sorted(map(str, named)))}"))
    if not said:
        why = f"; no answer from {', '.join(silent)}" if silent else ""
        return Check("cluster", "patroni leader", "fail", f"no member answers /primary 200{why}")
    if named and named != {said[0]}:
        return Check("cluster", "patroni leader", "fail",
                     f"{said[0]} answers /primary 200 but /cluster names {named.pop()}")
    detail = f"{said[0]}" + (f" (no answer from {', '.join(silent)})" if silent else "")
    return Check("cluster", "patroni leader", "warn" if silent else "ok", detail)


def member_check(host: str, m: dict | None, answered: bool) -> Check:
    """One member's row from the leader's /cluster view (a member missing from it is down)."""
    if m is None:
        return Check(host, "patroni member", "fail", "not in /cluster (Patroni down or never joined)"
                     + ("" if answered else "; its REST API did not answer"))
    role, state, tl = m.get("role"), m.get("state"), m.get("timeline")
    ok = (role == "leader" and state == "running") or (role in REPLICA_ROLES and state in REPLICA_STATES)
    lag = "" if role == "leader" else f", lag {m.get('lag', 'unknown')}"
    return Check(host, "patroni member", "ok" if ok else "fail", f"{role}, {state}, TL {tl}{lag}")


def lag_check(view: list[dict]) -> Check:
    """The worst replica lag (bytes) against LAG_WARN_BYTES / LAG_FAIL_BYTES; "unknown" lag is a warning."""
    replicas = [m for m in view if m.get("role") in REPLICA_ROLES]
    if not replicas:
        return Check("cluster", "replication lag", "fail", "no replica in /cluster")
    unknown = [str(m.get("name")) for m in replicas if not isinstance(m.get("lag"), int)]
    lags = {str(m.get("name")): m["lag"] for m in replicas if isinstance(m.get("lag"), int)}
    worst = max(lags.values(), default=0)
    status = "fail" if worst >= LAG_FAIL_BYTES else "warn" if worst >= LAG_WARN_BYTES or unknown else "ok"
    detail = ", ".join(f"{n} {b} B" for n, b in sorted(lags.items()))
    if unknown:
        detail += (", " if detail else "") + f"lag unknown: {', '.join(unknown)}"
    return Check("cluster", "replication lag", status, detail)


def sync_check(view: list[dict]) -> Check:
    """synchronous_mode: a running sync standby must exist, else commits are not on a second host."""
    syncs = [str(m.get("name")) for m in view if m.get("role") == "sync_standby"
             and m.get("state") in REPLICA_STATES]
    if syncs:
        return Check("cluster", "sync standby", "ok", ", ".join(syncs))
    return Check("cluster", "sync standby", "fail", "none: commits are acknowledged by the leader alone")


def etcd_checks(members: list[str], answers: dict) -> list[Check]:
    """A row per etcd member (`etcdctl endpoint health`) and the quorum: healthy > half the members."""
    out, healthy = [], 0
    for h in members:
        line = answers.get(h)
        ok = bool(line) and "is healthy" in line and "unhealthy" not in line
        healthy += ok
        out.append(Check(h, "etcd", "ok" if ok else "fail", (line or "no answer")[:90]))
    quorum = len(members) // 2 + 1
    status = "fail" if healthy < quorum else "warn" if healthy < len(members) else "ok"
    out.append(Check("cluster", "etcd quorum", status, f"{healthy}/{len(members)} healthy, quorum {quorum}"))
    return out


def patroni_rows(run) -> list[Check]:
    """Patroni mode: the member/leader/lag/sync/etcd rows from what check_host gathered."""
    if not run.inv.patroni:
        return []
    inv = run.inv
    return (patroni_checks([h.name for h in inv.with_role("postgres")], run.data.get("pcluster", {}),
                           run.data.get("pprimary", {}), bool(inv.cluster["postgres"]["synchronous_mode"]))
            + etcd_checks([h.name for h in inv.with_role("etcd")], run.data.get("etcd", {})))


def check_postgres(run) -> list[Check]:
    """SELECT 1, connection use and scheduler heartbeats, on the primary (Patroni: whichever member leads)."""
    from contextlib import ExitStack
    inv = run.inv
    hosts = [h for h in inv.with_role("postgres") if h.name not in run.failed]
    if not hosts or (not inv.patroni and hosts[0] != inv.with_role("postgres")[0]):
        return []
    out, ports = [], {}
    try:
        with ExitStack() as stack:
            for h in hosts:
                try:
                    ports[stack.enter_context(run.remote(h.name).forward(
                        run.addresses[h.name], inv.cluster["ports"]["postgres"]))] = h.name
                except Exception:  # noqa: BLE001 - that member is named by its own rows
                    continue
            if not ports:
                return [Check("cluster", "postgres", "fail", "no SSH forward to any postgres host")]
            out += _query_primary(run, ports)
    except Exception as exc:  # noqa: BLE001
        name = next(iter(ports.values()), hosts[0].name) if not inv.patroni else "cluster"
        out.append(Check(name, "postgres", "fail", f"{type(exc).__name__}: {str(exc).strip()[:80]}"))
    return out


def conninfo(ports: list[int], patroni: bool) -> dict:
    """psycopg2 keywords: one forwarded port, or all of them as a libpq multi-host list (read-write)."""
    if not patroni:
        return {"host": "127.0.0.1", "port": ports[0]}
    return {"host": ",".join("127.0.0.1" for _ in ports), "port": ",".join(str(p) for p in ports),
            "target_session_attrs": "read-write"}


def connect_primary(run, ports: list[int]):
    """A psycopg2 connection to the writable member through the forwarded ports.

    The multi-host conninfo first; if it fails, each port alone (read-write): a forward to a member whose
    PostgreSQL is stopped accepts the TCP connection and then closes it during the startup, and libpq
    (seen with a stopped first member) gives up there instead of trying the next host.
    """
    import psycopg2
    inv = run.inv
    kw = {"user": postgres.USER, "dbname": postgres.DB, "password": run.secrets["postgres_password"],
          "connect_timeout": inv.cluster["check_timeout"]}
    try:
        return psycopg2.connect(**kw, **conninfo(ports, inv.patroni))
    except psycopg2.OperationalError:
        if not inv.patroni or len(ports) < 2:
            raise
    last = None
    for port in ports:
        try:
            return psycopg2.connect(**kw, **conninfo([port], True))
        except psycopg2.OperationalError as exc:
            last = exc
    raise last


def _query_primary(run, ports: dict) -> list[Check]:
    inv = run.inv
    conn = connect_primary(run, list(ports))
    try:
        name = ports.get(int(conn.info.port), "?")
        cur = conn.cursor()
        cur.execute("SELECT pg_is_in_recovery()")
        if cur.fetchone()[0]:
            return [Check(name, "postgres", "fail", "connected, but it is in recovery (a replica)")]
        cur.execute("SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity")
        used, limit = cur.fetchone()
        via = " (the writable member)" if inv.patroni else ""
        out = [Check(name, "postgres", "ok" if used < 0.8 * limit else "warn",
                     f"SELECT 1 ok{via}, {used}/{limit} connections")]
        if backup.enabled(inv):
            cur.execute("SELECT archived_count, failed_count, last_archived_time, last_failed_time "
                        "FROM pg_stat_archiver")
            out.append(backup.archiver_check(cur.fetchone()))
        return out + _schedulers(run, cur)
    finally:
        conn.close()


def _schedulers(run, cur) -> list[Check]:
    """What `airflow jobs check --job-type SchedulerJob --allow-multiple` checks, per scheduler host."""
    try:
        cur.execute("SELECT hostname, max(extract(epoch FROM now() - latest_heartbeat)) FROM job "
                    "WHERE job_type = 'SchedulerJob' AND state = 'running' GROUP BY hostname")
        beats = {h: age for h, age in cur.fetchall()}
    except Exception as exc:  # noqa: BLE001 - before the first migrate
        return [Check("cluster", "schedulers", "fail", f"no job table: {str(exc)[:60]}")]
    out = []
    for host in run.inv.with_role("scheduler"):
        age = beats.get(host.name)
        ok = age is not None and age < 30
        out.append(Check(host.name, "scheduler alive", "ok" if ok else "fail",
                         f"heartbeat {age:.0f}s ago" if age is not None else "no running SchedulerJob"))
    return out


def check_workers(run) -> list[Check]:
    """Celery workers online (flower API with its basic-auth secret) vs the hosts with the worker role."""
    import base64
    import urllib.request
    inv = run.inv
    flower = inv.with_role("flower")
    if not flower or flower[0].name in run.failed:
        return []
    host = flower[0]
    auth = base64.b64encode(f"flower:{run.secrets['flower_password']}".encode()).decode()
    expected = {h.name for h in inv.with_role("worker")}
    try:
        with run.remote(host.name).forward(run.addresses[host.name], inv.cluster["ports"]["flower"]) as port:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/flower/api/workers?refresh=1",
                                         headers={"Authorization": f"Basic {auth}"})
            for attempt in range(3):   # a worker busy at the moment of flower's broadcast may miss one ping
                with urllib.request.urlopen(req, timeout=inv.cluster["check_timeout"]) as resp:
                    workers = jsonlib.loads(resp.read())
                if expected <= {_celery_host(k) for k in workers} or attempt == 2:
                    break
                time.sleep(1)
    except Exception as exc:  # noqa: BLE001
        return [Check(host.name, "celery workers", "fail", f"flower: {type(exc).__name__}: {str(exc)[:60]}")]
    return [_worker_check(h.name, workers, inv.var(h, "worker_queues")) for h in inv.with_role("worker")]


def _celery_host(node: str) -> str:
    """The inventory host of a Celery node name (`celery@node3` or `celery@node3.example`)."""
    return node.split("@", 1)[-1].split(".")[0]


def _worker_check(name: str, workers: dict, expected: list) -> Check:
    """One worker's row from flower's /api/workers: online, and consuming exactly its configured queues."""
    info = next((v for k, v in workers.items() if _celery_host(k) == name), None)
    if info is None:
        return Check(name, "celery worker online", "fail", "not online in flower")
    queues = info.get("active_queues") if isinstance(info, dict) else None
    if not isinstance(queues, list):
        return Check(name, "celery worker online", "fail", "online, but flower sent no queue list")
    serving = sorted(q.get("name", "?") for q in queues if isinstance(q, dict))
    if serving != sorted(expected):
        return Check(name, "celery worker online", "fail",
                     f"serves queues {','.join(serving) or 'none'}, inventory says {','.join(sorted(expected))}")
    return Check(name, "celery worker online", "ok", f"answers ping, queues {','.join(serving)}")


def _connect_and_check(run, host) -> list[Check]:
    """One host's own checks, right after its own connection: no host waits for another's connect."""
    run.connect([host])
    if host.name in run.failed:
        return [Check(host.name, "ssh", "fail", run.failed[host.name][:90])]
    return check_host(run, host)


def collect(run, local_only=False) -> list[Check]:
    timeout = run.inv.cluster["check_timeout"] + run.inv.cluster["connect_timeout"] + 5
    checks: list[Check] = []
    hosts = run.hosts
    with ThreadPoolExecutor(max_workers=max(4, len(hosts) + 3)) as pool:
        futures = [(h.name, pool.submit(_connect_and_check, run, h)) for h in hosts]
        if not local_only:
            futures += [("cluster", pool.submit(f, run)) for f in (check_redis, check_postgres, check_workers,
                                                                    backup.health_rows)]
        for name, fut in futures:
            try:
                checks += fut.result(timeout=timeout)
            except FutureTimeout:
                checks.append(Check(name, "timeout", "fail", f"no answer within {timeout}s"))
            except Exception as exc:  # noqa: BLE001
                checks.append(Check(name, "error", "fail", f"{type(exc).__name__}: {str(exc)[:80]}"))
    clock = run.data.get("clock", {})
    if len(clock) > 1:
        skew = max(clock.values()) - min(clock.values())
        checks.append(Check("cluster", "clock skew", "ok" if skew <= SKEW_WARN_S else "warn", f"{skew:.2f}s"))
    if not local_only:
        checks += patroni_rows(run)
    if run.inv.cluster["vip"] and not local_only:
        checks.append(vip_check(run.inv.cluster["vip"], run.data.get("vip", {})))
    if not local_only:
        checks += spof_checks(run.inv)
    order = {h: i for i, h in enumerate(run.inv.hosts)}
    checks.sort(key=lambda c: (order.get(c.host, 99), c.check))
    return checks


def vip_check(vip: str, held: dict) -> Check:
    """The VIP row from each nginx host's answer (host -> holds it): exactly one holder is ok."""
    holders = [h for h, has in held.items() if has]
    if len(holders) == 1:
        return Check("cluster", "vip", "ok", f"{vip} on {holders[0]}")
    detail = f"{vip} on {' and '.join(holders)}" if holders else f"{vip} on no host ({len(held)} answered)"
    return Check("cluster", "vip", "fail", detail)


def spof_checks(inv) -> list[Check]:
    return [Check("cluster", "single point of failure", "warn", p) for p in spof.single_points(inv)]


def run(hosts=None, inventory=None, as_json=False, local_only=False) -> int:
    """Check the cluster (or only the given hosts' own checks); print a table or JSON; 0 if nothing failed."""
    profile.started()
    try:
        inv = inventory_mod.load(inventory)
        selected = inv.select(hosts)
        r = Run(inv, selected if local_only or hosts else list(inv.hosts.values()), Options(quiet=True, silent=True))
    except UserError as exc:
        fail(exc)
    try:
        checks = collect(r, local_only=local_only)
    finally:
        r.close()
    ok = not any(c.status == "fail" for c in checks)
    print(render(checks, r.mask, as_json, time.monotonic() - r.started))
    return 0 if ok else 1


def render(checks: list[Check], mask, as_json: bool = False, seconds: float = 0.0) -> str:
    """The table (or JSON) of the checks, every string passed through the secret masker `mask`."""
    ok = not any(c.status == "fail" for c in checks)
    rows = [{k: mask(v) if isinstance(v, str) else v for k, v in asdict(c).items()} for c in checks]
    if as_json:
        return jsonlib.dumps({"ok": ok, "checks": rows})
    from tabulate import tabulate  # only the table needs it (start-up time)
    table = tabulate([list(row.values()) for row in rows], headers=["host", "check", "status", "detail"])
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    return (f"{table}\n{'HEALTHY' if ok else 'UNHEALTHY'}: {counts['ok']} ok, {counts['warn']} warn, "
            f"{counts['fail']} fail ({seconds:.1f}s)")
