"""Failover drills: inject a fault while a load DAG runs, measure recovery, check nothing was lost.

Each drill triggers a load DAG (files/dags-ha-test/ha_load.py, shipped by `ensure_load_dags`), injects its
fault, waits for the DAG run, restores
the fault and waits for `inv health` to pass again, then returns one row: drill, fault, recovery metric,
tasks failed, verdict. `ha_load` has retries=0, so any lost task shows as failed. The worker and node
drills use `ha_load_retry` instead: a task whose worker is SIGKILLed cannot finish; Airflow detects it
after [scheduler] task_instance_heartbeat_timeout and retries it on another worker (README "HA").

`drill.node`, `drill.vip` and the second half of `drill.postgres` power a host off and on: they need a
`PowerSwitch`, which the caller passes in (`inv drill.*` passes the lab's; real servers have none here).
`drill.vip` pulls the plug on the VIP holder while a probe (<= 10 req/s) runs through the VIP.
`drill.postgres` (Patroni mode; single mode: NOT COVERED, with the reason) runs `ha_load_retry` twice: (a)
SIGKILL the leader's postmaster, (b) pull the plug on the leader's host; it reports seconds until a write
succeeds again through the multi-host URL, until the first task after the fault completes, the retries,
and seconds until the old leader shows in /cluster as a replica again (no deploy).
"""

from __future__ import annotations

import dataclasses
import shlex
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

from . import health, redis
from .airflow_api import Airflow, http
from .components import load_inventory
from .core.runner import Options, Run
from .pgsql import patroni_mode

LOAD, LOAD_RETRY = "ha_load", "ha_load_retry"
MASTER_ELECTION_WAIT = 120   # seconds the sentinels get to elect a new Redis master


@dataclass
class Row:
    """One drill's line in the drills table."""

    drill: str
    fault: str
    recovery: str
    failed: str
    verdict: str

    def as_list(self):
        return [self.drill, self.fault, self.recovery, self.failed, self.verdict]


class PowerSwitch(Protocol):
    """Turns a host off (the plug pulled: no clean shutdown) and on again, waiting until it is up."""

    def off(self, host: str) -> None: ...

    def on(self, host: str) -> None: ...


class Drill:
    """Shared plumbing: SSH to any host, the REST API through a live nginx, health gates, the power switch."""

    def __init__(self, inventory=None, power: PowerSwitch | None = None):
        self.inv = load_inventory(inventory)
        self.run = Run(self.inv, list(self.inv.hosts.values()), Options(quiet=True, silent=True))
        self.power = power
        self.api = None

    def power_off(self, host: str) -> None:
        """Pull the plug on `host`; its connection is dropped (a new one is opened once it is back)."""
        self._switch().off(host)
        self.run.remotes.pop(host, None)

    def power_on(self, host: str) -> None:
        self._switch().on(host)
        self.run.remotes.pop(host, None)

    def _switch(self) -> PowerSwitch:
        if self.power is None:
            raise RuntimeError("this drill powers a host off: it needs a power switch (`inv drill.*` gives the lab's)")
        return self.power

    def sh(self, host: str, script: str, timeout=60) -> str:
        return self.run.remote(host).sh(script, timeout=timeout).out

    def nginx_url(self, avoid=()) -> str:
        host = next(h for h in self.inv.with_role("nginx") if h.name not in avoid)
        return f"http://{self.run.addresses[host.name]}:{self.inv.ports.http}"

    def login(self, avoid=()) -> Airflow:
        self.api = Airflow(self.nginx_url(avoid), self.inv.settings.admin_user, self.run.secrets["admin_password"])
        return self.api

    def start_load(self, dag_id=LOAD, avoid=()) -> str:
        api = self.login(avoid)
        api.wait_dag_loaded(dag_id)
        run_id = api.trigger(dag_id)
        self.wait_running(dag_id, run_id)
        return run_id

    def polled_task_instances(self, dag_id, run_id) -> list:
        """The run's task instances, [] while the API does not answer: a poll through a fault waits on."""
        try:
            return self.api.task_instances(dag_id, run_id)
        except (OSError, RuntimeError):
            return []

    def wait_running(self, dag_id, run_id, timeout=120, host=None) -> list:
        """Wait until at least one task instance is running (on `host` if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tis = [t for t in self.polled_task_instances(dag_id, run_id) if t["state"] == "running"
                   and (host is None or t.get("hostname") == host)]
            if tis:
                return tis
            time.sleep(1)
        raise RuntimeError(f"no task of {dag_id} running{' on ' + host if host else ''} after {timeout}s")

    def finish(self, dag_id, run_id, timeout=900) -> tuple[str, int, list]:
        state = self.api.wait_run(dag_id, run_id, timeout)
        tis = self.api.task_instances(dag_id, run_id)
        failed = [t for t in tis if t["state"] != "success"]
        return state, len(failed), tis

    def redis_master(self, asking: list[str]) -> str | None:
        """The master address the sentinels on `asking` hosts agree on (None when they disagree)."""
        from .redis import ask_master_script
        views = set()
        for name in asking:
            try:
                out = self.sh(name, ask_master_script(self.run, [self.inv.hosts[name]]), timeout=5).split()
            except Exception:  # a dead host does not vote
                continue
            views.add(out[0] if out else None)
        return views.pop() if len(views) == 1 else None

    def wait_healthy(self, timeout=300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            r = Run(self.inv, list(self.inv.hosts.values()), Options(quiet=True, silent=True))
            try:
                r.connect()
                checks = health.collect(r)
            finally:
                r.close()
            bad = [c for c in checks if c.status == "fail"]
            if not bad:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("cluster not healthy again: " + "; ".join(f"{c.host} {c.check}" for c in bad[:5]))
            time.sleep(2)       # one health round costs ~1 s on 3 hosts

    def close(self):
        self.run.close()


def verdict(state, failed) -> str:
    return "PASS" if state == "success" and failed == 0 else "FAIL"


def redis_master(d: Drill) -> Row:
    """SIGKILL the Redis master, keep it stopped; sentinels elect a new one; the DAG run must succeed."""
    sentinels = [h.name for h in d.inv.with_role("sentinel")]
    old = d.redis_master(sentinels)
    old_host = next(n for n, a in d.run.addresses.items() if a == old)
    run_id = d.start_load()
    d.sh(old_host, "mkdir -p /run/systemd/system/redis-server.service.d && printf '[Service]\\nRestart=no\\n' "
                   "> /run/systemd/system/redis-server.service.d/drill.conf && systemctl daemon-reload && "
                   "systemctl kill -s KILL redis-server")
    t_kill = time.time()
    new, t_new = None, None
    others = [s for s in sentinels if s != old_host]
    while time.time() - t_kill < MASTER_ELECTION_WAIT:
        new = d.redis_master(others)
        if new and new != old:
            t_new = time.time()
            break
        time.sleep(0.2)
    first_done = _first_task_done_after(d, LOAD, run_id, t_kill)
    state, failed, _ = d.finish(LOAD, run_id)
    d.sh(old_host, "rm -f /run/systemd/system/redis-server.service.d/drill.conf && systemctl daemon-reload && "
                   "systemctl start redis-server")
    d.wait_healthy()
    rejoined = "rejoined as replica" if d.redis_master(sentinels) != old else "old master is master again"
    recovery = (f"new master {t_new - t_kill:.1f}s" if t_new else f"no new master in {MASTER_ELECTION_WAIT}s") + \
        (f", first task done {first_done - t_kill:.1f}s" if first_done else "") + f"; {rejoined}"
    return Row("redis-master", f"SIGKILL redis-server on {old_host} (master)", recovery, str(failed),
               verdict(state, failed) if t_new else "FAIL")


def _first_task_done_after(d: Drill, dag_id, run_id, t0, timeout=300) -> float | None:
    from datetime import datetime
    deadline = time.time() + timeout
    while time.time() < deadline:
        for t in d.polled_task_instances(dag_id, run_id):
            end = t.get("end_date")
            if t["state"] == "success" and end and datetime.fromisoformat(end).timestamp() > t0:
                return datetime.fromisoformat(end).timestamp()
        time.sleep(1)
    return None


def scheduler(d: Drill) -> Row:
    """Stop one scheduler; the other keeps scheduling and the DAG run succeeds."""
    host = d.inv.with_role("scheduler")[0].name
    run_id = d.start_load()
    t0 = time.time()
    d.sh(host, "systemctl stop airflow-scheduler")
    state, failed, _ = d.finish(LOAD, run_id)
    took = time.time() - t0
    d.sh(host, "systemctl start airflow-scheduler")
    d.wait_healthy()
    return Row("scheduler", f"stop airflow-scheduler on {host}", f"run finished {took:.0f}s after the stop",
               str(failed), verdict(state, failed))


def api_server(d: Drill, seconds=30, rate=10) -> Row:
    """Stop one api-server; a probe loop through nginx must see 0 failed requests; the DAG run succeeds."""
    host = d.inv.with_role("api_server")[0].name
    run_id = d.start_load()
    d.sh(host, "systemctl stop airflow-api-server")
    url = d.nginx_url() + "/api/v2/monitor/health"
    sent = errors = 0
    t_end = time.time() + seconds
    while time.time() < t_end:
        t = time.time()
        try:
            status, _ = http(url, timeout=5)
            errors += status != HTTPStatus.OK
        except OSError:
            errors += 1
        sent += 1
        time.sleep(max(0.0, 1 / rate - (time.time() - t)))
    state, failed, _ = d.finish(LOAD, run_id)
    d.sh(host, "systemctl start airflow-api-server")
    d.wait_healthy()
    ok = state == "success" and failed == 0 and errors == 0
    return Row("api-server", f"stop airflow-api-server on {host}", f"{errors}/{sent} probe requests failed",
               str(failed), "PASS" if ok else "FAIL")


def worker(d: Drill) -> Row:
    """SIGKILL a worker's main process while it runs tasks; the killed tasks are retried and succeed."""
    run_id = d.start_load(LOAD_RETRY)
    running = d.wait_running(LOAD_RETRY, run_id)
    host = running[0]["hostname"]
    victims = {t["task_id"] for t in d.wait_running(LOAD_RETRY, run_id, host=host)}
    d.sh(host, "systemctl kill -s KILL --kill-whom=main airflow-worker")
    t_kill = time.time()
    state, failed, tis = d.finish(LOAD_RETRY, run_id)
    from datetime import datetime
    ends = [datetime.fromisoformat(t["end_date"]).timestamp() for t in tis
            if t["task_id"] in victims and t.get("end_date") and t["state"] == "success"]
    retried = sum(1 for t in tis if t["task_id"] in victims and (t.get("try_number") or 1) > 1)
    d.wait_healthy()
    recovery = f"killed tasks done {max(ends) - t_kill:.0f}s after the kill" if ends else "killed tasks never done"
    return Row("worker", f"SIGKILL celery worker on {host} ({len(victims)} running)",
               f"{recovery}; {retried} retried", str(failed), verdict(state, failed))


def replica_priority(d: Drill, host: str, value: str | None = None, persist: bool = False) -> str:
    """Read (`value` None) or set the replica-priority of `host`'s Redis (Sentinel never promotes 0).

    `persist` also writes it to redis.conf (CONFIG REWRITE). A value set only at run time does not stay
    there: Sentinel's own CONFIG REWRITE on a failover writes whatever runs, so a priority 0 set for the
    move would come back at the next Redis restart (seen in CI: the only eligible host was never promoted).
    """
    h = d.inv.hosts[host]
    if value is None:
        return (d.sh(host, redis.redis_cli(d.run, h, "CONFIG GET replica-priority")).split() or ["100"])[-1]
    script = redis.redis_cli(d.run, h, f"CONFIG SET replica-priority {value}")
    if persist:
        script = f"set -e\n{script}\n{redis.redis_cli(d.run, h, 'CONFIG REWRITE')}"
    return d.sh(host, script)


#: Sentinel reads a replica's priority from its INFO, asked every 10 s
SENTINEL_INFO_PERIOD = 10


def move_master_to(d: Drill, eligible: list[str], tries=4) -> str:
    """SENTINEL FAILOVER until the master sits on one of the `eligible` hosts; returns that host.

    Meanwhile the other Redis hosts get replica-priority 0: without it the failover may bounce between two
    hosts that are not eligible (seen on the lab: node3 <-> node1, 4 times). Their own value is back after,
    in redis.conf too (`replica_priority`). An eligible host found at 0 is a leftover (only a host leaving
    the inventory is set to 0, by `inv decommission`): it gets 100 and keeps it.
    """
    sentinels = [h.name for h in d.inv.with_role("sentinel")]
    master_name = d.inv.settings.redis.master_name
    redis_hosts = [h.name for h in d.inv.with_role("redis")]
    saved = {n: replica_priority(d, n) for n in redis_hosts}
    wanted = {n: ("100" if saved[n] == "0" else None) if n in eligible else "0" for n in redis_hosts}
    try:
        for n, value in wanted.items():
            if value is not None and value != saved[n]:
                replica_priority(d, n, value)
        for _ in range(tries):
            master = d.redis_master(sentinels)
            host = next((n for n, a in d.run.addresses.items() if a == master), None)
            if host in eligible:
                return host
            time.sleep(SENTINEL_INFO_PERIOD + 1)
            d.sh(sentinels[0], redis.sentinel_cli(d.run, d.inv.hosts[sentinels[0]], f"SENTINEL FAILOVER {master_name}"))
            deadline = time.time() + 60
            while time.time() < deadline and d.redis_master(sentinels) in (master, None):
                time.sleep(1)
            d.wait_healthy()
        raise RuntimeError(f"could not move the Redis master to one of {eligible} (replica-priority before: "
                           f"{saved})")
    finally:
        for n, value in saved.items():
            if wanted[n] is not None and wanted[n] != value:
                replica_priority(d, n, wanted[n] if n in eligible else value, persist=True)


def node(d: Drill) -> Row:
    """Power off the host holding the Redis master, an api-server and a scheduler; DAGs keep running.

    The Redis master is first moved (SENTINEL FAILOVER) to a host that also runs an api-server and a
    scheduler but not the database's primary: the single PostgreSQL host (single mode) or the Patroni
    leader; losing that is drill.postgres. A Patroni replica may go down with the node.
    """
    eligible = node_candidates(d.inv, pg_leader(d))
    host = move_master_to(d, eligible)
    run_id = d.start_load(LOAD_RETRY, avoid=(host,))
    t_off = time.time()
    d.power_off(host)
    state, failed, _ = d.finish(LOAD_RETRY, run_id, timeout=1200)
    took = time.time() - t_off
    r = Run(d.inv, list(d.inv.hosts.values()), Options(quiet=True, silent=True))
    r.connect()
    named = any(c.host == host and "unreachable" in c.detail for c in health.collect(r))
    r.close()
    d.power_on(host)
    t_on = time.time()
    d.wait_healthy(timeout=600)
    healed = time.time() - t_on
    ok = state == "success" and failed == 0 and named
    return Row("node", f"pull the plug on {host} (redis master, api-server, scheduler)",
               f"run done {took:.0f}s after power-off; health named it: {named}; healed {healed:.0f}s after power-on",
               str(failed), "PASS" if ok else "FAIL")


def node_candidates(inv, leader: str | None) -> list[str]:
    """Hosts drill.node may power off: Redis + api-server + scheduler, and not the database primary."""
    def primary(h):
        return h.has("postgres") and (not patroni_mode(inv) or h.name == leader or leader is None)
    return [h.name for h in inv.hosts.values() if h.has("redis") and h.has("api_server")
            and h.has("scheduler") and not primary(h)]


def pg_leader(d: Drill) -> str | None:
    """Patroni mode: the member answering /primary 200 (None in single mode or when none does)."""
    if not patroni_mode(d.inv):
        return None
    from . import patroni
    host = patroni.leader(d.run)
    return host.name if host else None


@dataclass
class Probe:
    """GET `url` at most `rate` times a second in a thread; every answer is (time, ok, what failed)."""

    url: str
    rate: float = 10
    timeout: float = 2        # seconds; a slower answer counts as failed
    results: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            t = time.time()
            try:
                status = http(self.url, timeout=self.timeout)[0]
                why = "" if status == HTTPStatus.OK else f"HTTP {status}"
            except OSError as exc:
                why = f"{type(exc).__name__}: {exc}"
            self.results.append((t, not why, why))
            self.stop.wait(max(0.0, 1 / self.rate - (time.time() - t)))

    def failed(self, since=0.0, until=float("inf")) -> tuple[int, int]:
        """(failed, sent) among the requests started in [since, until)."""
        window = [ok for t, ok, _ in list(self.results) if since <= t < until]
        return window.count(False), len(window)

    def failures(self) -> list[str]:
        """Each failed request: when (wall clock) and what failed."""
        return [f"{time.strftime('%H:%M:%S', time.localtime(t))}.{int(t % 1 * 1000):03d} {why}"
                for t, ok, why in list(self.results) if not ok]

    def longest_outage(self) -> float:
        """Seconds from the first failed request of the longest failing stretch to the next answer."""
        worst, start = 0.0, None
        for t, ok, _ in list(self.results):
            if not ok and start is None:
                start = t
            elif ok and start is not None:
                worst, start = max(worst, t - start), None
        return worst if start is None else max(worst, time.time() - start)

    def first_ok(self, since: float) -> float | None:
        return next((t for t, ok, _ in list(self.results) if t >= since and ok), None)

    def close(self):
        self.stop.set()
        self.thread.join()


def vip_holders(d: Drill, skip=()) -> list[str]:
    """The nginx hosts whose `ip -o addr show` lists the VIP (a host that does not answer holds nothing)."""
    vip, out = d.inv.settings.vip, []
    for h in d.inv.with_role("nginx"):
        if h.name in skip:
            continue
        try:
            if f" {vip}/" in d.sh(h.name, "ip -o -4 addr show", timeout=5):
                out.append(h.name)
        except Exception:  # a dead host holds nothing
            pass
    return out


def wait_vip_moved(d: Drill, old: str, timeout=60) -> tuple[str | None, float | None]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        holders = vip_holders(d, skip=(old,))
        if len(holders) == 1:
            return holders[0], time.time()
        time.sleep(0.5)
    return None, None


def _vip_off_single_points(d: Drill, holder: str) -> str | None:
    """The host to fail: the holder, unless it also carries a role no other host has (the database, say),
    whose loss no VIP can hide; then the VIP is moved first (restarting keepalived there hands it over)."""
    host = d.inv.hosts[holder]
    if not any(len(d.inv.with_role(r)) == 1 for r in host.roles):
        return holder
    d.sh(holder, "systemctl restart keepalived")
    new, _ = wait_vip_moved(d, holder)
    return new


def vip(d: Drill) -> Row:
    """Pull the plug on the VIP holder under a probe through the VIP; it moves, nothing is lost, it stays put."""
    if not d.inv.settings.vip:
        return Row("vip", "-", "no cluster.vip in the inventory", "-", "FAIL")
    holders = vip_holders(d)
    if len(holders) != 1:
        return Row("vip", "-", f"VIP held by {holders or 'no host'} before the fault", "-", "FAIL")
    old = _vip_off_single_points(d, holders[0])
    if old is None:
        return Row("vip", "-", "could not move the VIP off a host with a single-host role", "-", "FAIL")
    run_id = d.start_load(LOAD_RETRY, avoid=(old,))   # tasks on the holder's worker are retried
    probe = Probe(f"http://{d.inv.settings.vip}:{d.inv.ports.http}/api/v2/monitor/health")
    try:
        time.sleep(3)
        t_off = time.time()
        d.power_off(old)
        new, t_moved = wait_vip_moved(d, old)
        state, failed, _ = d.finish(LOAD_RETRY, run_id)
        t_answer = probe.first_ok(t_off)   # after the run: read right at the move, it often had no answer yet
        t_on = time.time()
        lost = probe.failed(t_off, t_on)
        before_on = vip_holders(d, skip=(old,))
        d.power_on(old)
        d.wait_healthy(timeout=600)
        time.sleep(5)
        after = probe.failed(t_on)
        stays = vip_holders(d)
    finally:
        probe.close()
    return vip_row(old, new, (t_off, t_moved, t_answer), lost, after, before_on, stays, state, failed)


def vip_row(old, new, times, lost, after, before_on, stays, state, failed) -> Row:
    """The vip drill's row. "Stays" is nopreempt: the holder when `old` is powered on keeps the VIP. While
    the database fails over too (the holder was also the Patroni leader), every nginx's track script may
    fail at once and the VIP may move a second time before the power-on: reported, not a failure."""
    t_off, t_moved, t_answer = times
    moved = f"VIP on {new} after {t_moved - t_off:.1f}s" if new else "VIP did not move in 60s"
    if new and before_on and before_on != [new]:
        moved += f" (then on {', '.join(before_on)} before the power-on)"
    answered = f"answers after {t_answer - t_off:.1f}s" if t_answer else "never answered"
    ok = (state == "success" and failed == 0 and new is not None and after[0] == 0
          and len(before_on) == 1 and stays == before_on)
    return Row("vip", f"pull the plug on {old} (VIP holder)",
               f"{moved}, {answered}; during failover: {lost[0]}/{lost[1]} probe requests failed; "
               f"after power-on: {after[0]}/{after[1]} failed; VIP stays on {', '.join(stays) or 'no host'}",
               str(failed), "PASS" if ok else "FAIL")


# -- drill.postgres (Patroni mode) --------------------------------------------------------------------------

#: SIGKILL the postmaster: its PID is the first line of postmaster.pid in the data dir Patroni's config names
KILL_POSTMASTER = ("d=$(awk '$1 == \"data_dir:\" {print $2; exit}' /etc/patroni/*.yml) && "
                   "kill -9 \"$(head -1 \"$d/postmaster.pid\")\"")


def write_probe(d: Drill) -> str:
    """Shell: a write (CREATE TEMP TABLE) through the multi-host read-write URL; fails on a replica or none."""
    from .postgres import psql_target
    password = shlex.quote(d.run.secrets["postgres_password"])
    return (f"PGPASSWORD={password} PGCONNECT_TIMEOUT=2 timeout 6 psql {psql_target(d.run)} -v ON_ERROR_STOP=1 "
            "-tAc 'CREATE TEMP TABLE drill_probe (x int)' >/dev/null 2>&1")


def wait_writable(d: Drill, via: str, since: float, timeout=180) -> float | None:
    """The first time (>= since) a write through the multi-host URL succeeds, polled from `via`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        t = time.time()
        try:
            if d.run.remote(via).sh(write_probe(d), timeout=10).ok:
                return t
        except Exception:  # the probing host itself hiccups: try again
            pass
        time.sleep(0.5)
    return None


def member_state(d: Drill, via: str, name: str) -> tuple[str, str] | None:
    """(role, state) of member `name` in the /cluster view of `via` (None: not listed or no answer)."""
    from . import patroni
    try:
        body = d.sh(via, f"curl -s -m 3 {patroni.api_url(d.run, d.inv.hosts[via], 'cluster')}", timeout=10)
    except Exception:
        return None
    m = next((m for m in patroni.members(body) if m.get("name") == name), None)
    return (m.get("role"), m.get("state")) if m else None


def wait_rejoined(d: Drill, via: str, old: str, since: float, timeout=300) -> tuple[float | None, str]:
    """Seconds until `old` runs again: as a streaming replica, or still/again the leader (in-place restart)."""
    from .patroni import REPLICA_ROLES, REPLICA_STATES
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = member_state(d, via, old)
        if last and ((last[0] in REPLICA_ROLES and last[1] in REPLICA_STATES)
                     or last == ("leader", "running")):
            return time.time() - since, f"{last[0]}, {last[1]}"
        time.sleep(2)
    return None, f"{last[0]}, {last[1]}" if last else "not in /cluster"


def succeeded(tis: list) -> set:
    return {(t["task_id"], t.get("map_index", -1)) for t in tis if t["state"] == "success"}


def wait_some_success(d: Drill, dag_id, run_id, timeout=180) -> set:
    """The successful task instances once there is at least one (the "before the fault" snapshot)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = succeeded(d.polled_task_instances(dag_id, run_id))
        if done:
            return done
        time.sleep(1)
    raise RuntimeError(f"no task of {dag_id} succeeded within {timeout}s: no baseline before the fault")


def pg_fault(d: Drill, power_off: bool) -> Row:
    """One fault on the Patroni leader under ha_load_retry; the verdict needs every figure to be measured."""
    old = pg_leader(d)
    if old is None:
        return Row("postgres", "-", "no Patroni leader before the fault", "-", "FAIL")
    if power_off:
        move_master_to(d, [h.name for h in d.inv.with_role("redis") if h.name != old])
    via = next(h.name for h in d.inv.with_role("postgres") if h.name != old)
    run_id = d.start_load(LOAD_RETRY, avoid=(old,) if power_off else ())
    before = wait_some_success(d, LOAD_RETRY, run_id)
    t0 = time.time()
    if power_off:
        d.power_off(old)
    else:
        d.sh(old, KILL_POSTMASTER, timeout=10)
    t_write = wait_writable(d, via, t0)
    first_done = _first_task_done_after(d, LOAD_RETRY, run_id, t0)
    state, failed, tis = d.finish(LOAD_RETRY, run_id, timeout=1200)
    if power_off:
        d.power_on(old)
    rejoin_s, rejoined = wait_rejoined(d, via, old, time.time())
    d.wait_healthy(timeout=600)
    new = pg_leader(d)
    return pg_row(old, new, power_off, (t0, t_write, first_done, rejoin_s), rejoined, state, failed,
                  retries(tis), sorted(t for t, _ in before - succeeded(tis)))


def retries(tis: list) -> int:
    return sum(max(0, (t.get("try_number") or 1) - 1) for t in tis)


def pg_row(old, new, power_off, times, rejoined, state, failed, retried, lost) -> Row:
    """The drill's row: figures, and PASS only when every one of them was measured and holds."""
    t0, t_write, first_done, rejoin_s = times
    fault = f"{'pull the plug on' if power_off else 'SIGKILL the postmaster on'} {old} (Patroni leader)"
    parts = [f"writes again after {t_write - t0:.1f}s on {new or '?'}" if t_write else "no write accepted in 180s",
             f"first task done {first_done - t0:.1f}s" if first_done else "no task done after the fault",
             f"{retried} retries",
             f"lost successes: {', '.join(lost) or 'none'}",
             f"{old} back as {rejoined} after {rejoin_s:.0f}s" if rejoin_s is not None else f"{old}: {rejoined}"]
    # after a power-off the old leader must come back as a replica; after a kill Patroni may restart it in place
    rejoined_ok = rejoin_s is not None and not (power_off and rejoined.startswith("leader"))
    ok = state == "success" and failed == 0 and t_write and first_done and not lost and rejoined_ok
    return Row("postgres", fault, "; ".join(parts), str(failed), "PASS" if ok else "FAIL")


def postgres(d: Drill) -> list[Row]:
    """Kill the Patroni leader's postmaster, then pull the plug on its host; writes and DAG runs carry on."""
    if not patroni_mode(d.inv):
        return [NOT_COVERED]
    return [pg_fault(d, power_off=False), pg_fault(d, power_off=True)]


DRILLS = {"redis-master": redis_master, "scheduler": scheduler, "api-server": api_server,
          "worker": worker, "node": node, "vip": vip, "postgres": postgres}
NOT_COVERED = Row("postgres", "PostgreSQL primary down", "not covered: one postgres host (single mode) has no "
                  "standby to fail over to; put postgres on >= 2 hosts (Patroni mode)", "-", "NOT COVERED")


def ensure_load_dags(inventory=None) -> int:
    """Drills bring their own DAGs: with `cluster.ha_test_dags` off, ship a DAG release that adds them.

    The next `inv deploy` (switch still off) removes them again: production keeps only the users' DAGs.
    """
    from . import dags
    from .core.runner import execute
    inv = load_inventory(inventory)
    if inv.settings.ha_test_dags:
        return 0
    print("drills: shipping the HA test DAGs (cluster.ha_test_dags is off; the next deploy removes them)",
          flush=True)
    inv.settings = dataclasses.replace(inv.settings, ha_test_dags=True)
    return execute(inv, list(inv.hosts.values()), [dags.COMPONENT], Options(quiet=True))


def run(names: list[str], inventory=None, power: PowerSwitch | None = None) -> int:
    """Run the named drills in sequence and print the table; 1 if any drill failed (`power`: see Drill)."""
    from tabulate import tabulate  # here, not at import: `inv` loads this module for every task
    if ensure_load_dags(inventory):
        print("drills: could not ship the load DAGs", flush=True)
        return 1
    rows = []
    for name in names:
        d = Drill(inventory, power)
        try:
            if not (name == "postgres" and not patroni_mode(d.inv)):
                d.wait_healthy()
            result = DRILLS[name](d)
            new = result if isinstance(result, list) else [result]
        except Exception as exc:  # a broken drill is a failed row, the others still run
            new = [Row(name, "-", f"error: {type(exc).__name__}: {str(exc)[:120]}", "-", "FAIL")]
        finally:
            d.close()
        rows += new
        print(tabulate([r.as_list() for r in new], tablefmt="plain"), flush=True)
    print(tabulate([r.as_list() for r in rows], headers=["drill", "fault", "recovery", "tasks failed", "verdict"]))
    return 1 if any(r.verdict == "FAIL" for r in rows) else 0


def rolling_restart(inventory=None, hosts=None) -> int:
    """One host at a time: take its api-server out of every nginx, warm-stop its worker (running tasks
    finish), restart its Airflow services, start the worker, wait for its gate, take the api-server back
    (services.after_restart: it must answer promptly before the next host), wait for health, go on.
    Returns 1 if a host did not come back healthy.

    The drain is what the deploy's roll does. Without it, nginx may send a non-idempotent request (a task's
    state PATCH to the Execution API), which it does not retry on another upstream, to the api-server being
    restarted: a load run failed during this command in CI (its logs were gone before the cause was read)."""
    from . import services
    d = Drill(inventory)
    try:
        for host in d.inv.select(hosts):
            units = services.COMPONENT.units(d.run, host)
            if not units:
                continue
            drain = services.before_restart(d.run, host, units)   # the roll's own drain: None, or (what, do)
            others = " ".join(shlex.quote(u) for u in units if u != "airflow-worker")
            t0 = time.time()
            if drain and (why := drain[1]()):
                raise RuntimeError(f"{host.name}: drain: {why}")
            script = ("systemctl stop airflow-worker\n" if host.has("worker") else "")
            script += (f"systemctl restart {others}\n" if others else "")
            script += ("systemctl start airflow-worker\n" if host.has("worker") else "")
            d.sh(host.name, script, timeout=d.inv.settings.worker_stop_timeout + 120)
            print(f"{host.name:<10} restarted {', '.join(units)} ({time.time() - t0:.0f}s); waiting for health",
                  flush=True)
            if drain:
                _take_back(d, host)
            d.wait_healthy()
            print(f"{host.name:<10} healthy ({time.time() - t0:.0f}s)", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 1
    finally:
        d.close()


def _take_back(d: Drill, host, timeout: float = 300) -> None:
    """Once `host`'s units pass their gate, every nginx sends its api-server requests again (and it settles)."""
    from . import patch, services
    if why := patch.await_gates(d.run, host, timeout, only=[services.gate]):
        raise RuntimeError(f"{host.name}: not back within {timeout:.0f}s: {why}")
    if why := services.after_restart(d.run, host):
        raise RuntimeError(f"{host.name}: take back: {why}")
