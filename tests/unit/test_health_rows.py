"""`inv health` end to end over fake hosts: pins every row (host, name, order, text, verdict) and the verdict.

`health.collect` runs over the real `Run`, fed by fake hosts that answer health's one round trip from a
scenario (`World`): each `@@tag` line of the script gets its canned answer. Redis/Sentinel, PostgreSQL and
flower are faked at their client libraries (redis-py, psycopg2, urllib) behind fake SSH forwards; the clock
is fixed. Two holders of the VIP are left out: their order in the detail is the order the hosts answered.
The goldens (tests/unit/samples/health/<scenario>.txt) hold the table `inv health` prints for each
scenario (`--json` is checked to carry the same rows and verdict): small, and rewritten only with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fabfile import health
from fabfile.components import load_inventory
from fabfile.core.offline import FreshHost, FreshHosts, facts_text
from fabfile.core.remote import Result, Unreachable
from fabfile.core.runner import Options, Run

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent / "spec"
GOLDEN = HERE / "samples" / "health"
DEBIAN = (SPEC / "os-release" / "debian-12").read_text()
NOW = 1_780_400_000.0
HEALTHY = json.dumps({k: {"status": "healthy"} for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")})
SYNC = json.dumps(json.loads((HERE / "samples" / "patroni_cluster_sync.json").read_text()))
FAILOVER = json.dumps(json.loads((HERE / "samples" / "patroni_cluster_failover.json").read_text()))
ETCD_OK = "http://{}:2379 is healthy: successfully committed proposal: took = 2.1ms"
PGBACKREST_INFO = json.dumps([{
    "archive": [{"id": "15-1", "max": "000000010000000000000009", "min": "000000010000000000000002"}],
    "backup": [{"error": False, "label": "20260601-010002F", "type": "full",
                "info": {"size": 24316343, "repository": {"delta": 2969512}},
                "timestamp": {"start": 1780375602, "stop": 1780375610}}],
    "name": "airflow", "status": {"code": 0, "message": "ok"}}])


@dataclass
class World:
    """What every host, Sentinel, Redis, PostgreSQL and flower answers (defaults: a healthy cluster)."""

    units: dict = field(default_factory=dict)        # (host, unit) -> "state restarts"
    api: dict = field(default_factory=dict)          # host -> /api/v2/monitor/health body
    nginx: dict = field(default_factory=dict)
    vip: dict = field(default_factory=dict)          # host -> number of matching addresses
    pcluster: dict = field(default_factory=dict)     # host -> GET /cluster body
    pprimary: dict = field(default_factory=dict)     # host -> GET /primary code
    etcd: dict = field(default_factory=dict)
    exporters: dict = field(default_factory=dict)    # (host, exporter) -> HTTP code
    disk: dict = field(default_factory=dict)         # host -> "avail total"
    skew: dict = field(default_factory=dict)         # host -> clock offset (s)
    unreachable: tuple = ()
    sentinel_master: dict = field(default_factory=dict)   # host -> the address it names
    sentinel_down: tuple = ()
    redis_info: dict = field(default_factory=dict)   # host -> INFO replication
    redis_down: tuple = ()
    pg_error: str = ""
    pg_leader: str = ""
    pg_in_recovery: bool = False
    pg_used: int = 12
    archiver: tuple = (42, 0, datetime.datetime(2026, 6, 2, 8, 0, 0), None)
    heartbeats: dict | None = None                   # scheduler host -> age (s); None: every scheduler 3 s
    flower: dict | None = None                       # host -> queues; None: every worker, its queues
    flower_error: str = ""
    backup_info: str = PGBACKREST_INFO


class FakeHost(FreshHost):
    def __init__(self, source, name):
        super().__init__(name, facts_text(DEBIAN, name, source.given[name]))
        self.source = source

    def sh(self, script, timeout=None):
        if "pgbackrest" in script:
            return Result(0, self.source.world.backup_info, "")
        return Result(0, "\n".join(self.source.answer(self.name, script)) + "\n", "")

    @contextlib.contextmanager
    def forward(self, address, port):
        yield self.source.forwarded(self.name, port)


@dataclass
class FakeHosts(FreshHosts):
    world: World = field(default_factory=World)
    inv: object = None

    def __post_init__(self):
        self.ports, self.counter, self.lock = {}, itertools.count(40001), threading.Lock()

    def connect(self, name, timeout):
        if name in self.world.unreachable:
            raise Unreachable("timed out")
        return FakeHost(self, name)

    def forwarded(self, host, port) -> int:
        with self.lock:
            local = next(self.counter)
            self.ports[local] = (host, port)
            return local

    def answer(self, host, script):
        w, inv = self.world, self.inv
        first_nginx = inv.with_role("nginx")[0].name
        leader = w.pg_leader or inv.with_role("postgres")[0].name
        for tag, args in re.findall(r'echo "@@(\w+) ?([^$"]*)\$\(', script):
            name = args.strip()
            text = {
                "now": str(NOW + w.skew.get(host, 0.0)),
                "disk": w.disk.get(host, "600000 1000000"),
                "unit": w.units.get((host, name), "active 0"),
                "api": w.api.get(host, HEALTHY),
                "nginx": w.nginx.get(host, HEALTHY),
                "vip": w.vip.get(host, "1" if host == first_nginx else "0"),
                "pcluster": w.pcluster.get(host, SYNC),
                "pprimary": w.pprimary.get(host, "200" if host == leader else "503"),
                "etcd": w.etcd.get(host, ETCD_OK.format(inv.hosts[host].address)),
                "exporter": w.exporters.get((host, name), "200"),
            }[tag]
            yield f"@@{tag} {args}{text}"


class FakeRedis:
    def __init__(self, world, source, inv, port, password, socket_timeout):
        self.world, self.inv = world, inv
        self.host, remote_port = source.ports[port]
        self.sentinel = remote_port == inv.ports.sentinel
        if self.host in (world.sentinel_down if self.sentinel else world.redis_down):
            raise ConnectionError(f"Error 111 connecting to 127.0.0.1:{port}. Connection refused.")

    def execute_command(self, *args):
        master = self.world.sentinel_master.get(self.host, self.inv.hosts["node1"].address)
        if args[1] == "get-master-addr-by-name":
            return [master.encode(), b"6379"]
        return b"OK 3 usable Sentinels. Quorum and failover authorization can be reached"

    def info(self, section):
        default = ({"role": "master", "master_repl_offset": 5000,
                    "slave0": {"ip": "192.0.2.12", "offset": 4900}, "slave1": {"ip": "192.0.2.13", "offset": 5000}}
                   if self.host == "node1" else
                   {"role": "slave", "master_host": "192.0.2.11", "master_link_status": "up"})
        return self.world.redis_info.get(self.host, default)


class FakeCursor:
    def __init__(self, world, inv):
        self.world, self.inv, self.sql = world, inv, ""

    def execute(self, sql):
        self.sql = sql
        if "FROM job" in sql and self.world.heartbeats == {"error": 1}:
            raise RuntimeError('relation "job" does not exist')

    def fetchone(self):
        if "pg_is_in_recovery" in self.sql:
            return (self.world.pg_in_recovery,)
        if "pg_stat_activity" in self.sql:
            return (self.world.pg_used, 100)
        return self.world.archiver

    def fetchall(self):
        beats = self.world.heartbeats
        if beats is None:
            beats = {h.name: 3.2 for h in self.inv.with_role("scheduler")}
        return list(beats.items())


class FakeConn:
    def __init__(self, world, source, inv, kw):
        if world.pg_error:
            raise RuntimeError(world.pg_error)
        ports = [int(p) for p in str(kw["port"]).split(",")]
        leader = world.pg_leader or inv.with_role("postgres")[0].name
        self.info = type("Info", (), {"port": next((p for p in ports if source.ports[p][0] == leader), ports[0])})
        self.cur = FakeCursor(world, inv)

    def cursor(self):
        return self.cur

    def close(self):
        pass


class FakeResponse:
    def __init__(self, body):
        self.body = body

    def read(self):
        return self.body

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _flower(world, inv):
    if world.flower_error:
        raise OSError(world.flower_error)
    queues = world.flower if world.flower is not None else {
        h.name: inv.settings_for(h).worker_queues for h in inv.with_role("worker")}
    return FakeResponse(json.dumps({f"celery@{h}": {"active_queues": [{"name": q} for q in qs]}
                                    for h, qs in queues.items()}).encode())


def collect(monkeypatch, tmp_path, inventory, world, extra="", only=None, local_only=False, connect=False):
    import urllib.request

    import psycopg2
    import redis
    path = tmp_path / "hosts.yaml"
    text = (SPEC / inventory).read_text()
    path.write_text(text.replace("cluster:\n", f"cluster:\n{extra}", 1))
    inv = load_inventory(path)
    source = FakeHosts(DEBIAN, world=world, inv=inv)
    monkeypatch.setattr("time.time", lambda: NOW)
    monkeypatch.setattr("time.sleep", lambda s: None)       # flower's retries
    monkeypatch.setattr(redis, "Redis", lambda **kw: FakeRedis(world, source, inv, **kw))
    monkeypatch.setattr(psycopg2, "connect", lambda **kw: FakeConn(world, source, inv, kw))
    monkeypatch.setattr(urllib.request, "urlopen", lambda req, timeout: _flower(world, inv))
    hosts = [inv.hosts[n] for n in only] if only else list(inv.hosts.values())
    run = Run(inv, hosts, Options(quiet=True, silent=True), source=source)
    try:
        if connect:
            run.connect()
        checks = health.collect(run, local_only=local_only)
    finally:
        run.close()
    table = health.render(checks, run.mask, as_json=False, seconds=0.0)
    data = json.loads(health.render(checks, run.mask, as_json=True))
    assert data["ok"] == table.splitlines()[-1].startswith("HEALTHY")     # --json: same rows, same verdict
    assert [tuple(row.values()) for row in data["checks"]] == [(c.host, c.check, c.status, c.detail) for c in checks]
    return table + "\n"


SCENARIOS = {
    "single-healthy-monitoring": dict(inventory="hosts.yaml", world=World(), extra="  monitoring: true\n"),
    # connected first: whether the cluster checks see node3 failed is otherwise a race with its connect
    "single-unreachable-node3": dict(inventory="hosts.yaml", world=World(unreachable=("node3",)), connect=True),
    "single-local-node2": dict(inventory="hosts.yaml", world=World(), only=("node2",), local_only=True),
    "single-failures": dict(inventory="hosts.yaml", world=World(
        sentinel_down=("node3",), redis_down=("node2",), pg_error="could not connect to server: timeout",
        flower_error="[Errno 111] Connection refused", units={("node1", "airflow-scheduler"): "failed 7"},
        api={"node2": ""}, nginx={"node1": json.dumps({"metadatabase": {"status": "healthy"}})},
        vip={"node1": "0"}, disk={"node3": "50000 1000000"})),
    "single-recovery-no-job-table": dict(inventory="hosts.yaml", world=World(
        pg_in_recovery=True, sentinel_master={"node2": "192.0.2.12"}, vip={"node1": "0", "node2": "1"})),
    "patroni-faults": dict(inventory="hosts-patroni.yaml", world=World(
        pcluster={"node1": "", "node2": FAILOVER, "node3": FAILOVER}, pprimary={"node1": "", "node2": "200"},
        pg_leader="node2", etcd={"node3": "http://192.0.2.13:2379 is unhealthy: failed to commit proposal"},
        redis_info={"node3": {"role": "slave", "master_host": "192.0.2.11", "master_link_status": "down"}},
        flower={"node1": ["default"], "node2": ["other"]}, heartbeats={"node1": 2.0, "node2": 95.0},
        skew={"node2": 2.5}, pg_used=90, vip={"node1": "0", "node2": "1"}),
        extra="  postgres: {synchronous_mode: true}\n"),
    "patroni-healthy-monitoring": dict(inventory="hosts-patroni.yaml", world=World(),
                                       extra="  monitoring: true\n"),
    "backup-host": dict(inventory="hosts-backup.yaml", world=World(
        redis_info={"node2": {"role": "master", "master_repl_offset": 1}},
        exporters={("node4", "node_exporter"): "000"}), extra="  monitoring: true\n"),
    "backup-archiver-failing": dict(inventory="hosts-backup.yaml", world=World(
        archiver=(40, 3, datetime.datetime(2026, 6, 2, 8, 0, 0), datetime.datetime(2026, 6, 2, 9, 30, 0)),
        heartbeats={"error": 1}, backup_info="ERROR: [056]: unable to find primary cluster")),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_health_rows_match_the_golden(monkeypatch, tmp_path, name):
    out = collect(monkeypatch, tmp_path, **SCENARIOS[name])
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(out)
    assert out == golden.read_text()


def test_host_scripts_match_the_golden(tmp_path):
    """What each host is asked in health's one round trip (Patroni and pgBackRest layouts, monitoring on)."""
    from fabfile.core.offline import fresh_run
    out = []
    for inventory in ("hosts-patroni.yaml", "hosts-backup.yaml"):
        path = tmp_path / inventory
        path.write_text((SPEC / inventory).read_text().replace("cluster:\n", "cluster:\n  monitoring: true\n", 1))
        inv = load_inventory(path)
        run = fresh_run(inv, DEBIAN)
        out += [f"== {inventory} {host.name}\n{health.host_script(run, host)}\n" for host in inv.hosts.values()]
    golden = GOLDEN / "host-scripts.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text("".join(out))
    assert "".join(out) == golden.read_text()
