"""PostgreSQL from the distribution: Airflow's metadata database and Celery's result backend.

Two modes, by the number of `postgres` hosts:
* one host: the single database (this module). Listens on the cluster address, scram-sha-256 only,
  pg_hba admits the `airflow` user from cluster hosts only; a single point of failure (fabfile/spof.py);
* two or more: Patroni mode (fabfile/patroni.py, etcd from fabfile/etcd.py): streaming replication,
  automatic failover, synchronous commit by default. Every function below delegates to it then.

Clients (Airflow, the Celery result backend, our own psql calls) reach the primary with a libpq
multi-host URL (`db_url`): every member listed, `target_session_attrs=read-write` picks the one that
accepts writes, `connect_timeout=3` skips a dead host quickly, TCP keepalives drop a connection to a
vanished primary in ~25 s. Why not HAProxy/PgBouncer: no extra daemon and hop on every host (a local
proxy is one more process to keep alive and monitor), fewer packages; Airflow 3 task processes reach the
database only through the Execution API, so the connection count stays small without a pooler.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from . import patroni, repository, selinux
from .core.component import Check, Component, Role
from .core.errors import InventoryError
from .core.remote import Unreachable
from .core.steps import Command, Directory, File, Line, Service
from .core.templates import render
from .pgsql import DB, USER, create_sql, max_connections, names, patroni_mode

NAME = "postgres"
#: max_connections 0 = computed from the number of Airflow processes. The rest applies to Patroni mode
#: (postgres on >= 2 hosts, fabfile/patroni.py): Patroni's DCS timing (loop_wait + 2*retry_timeout <= ttl)
#: and synchronous_mode (a commit is on a standby before the client hears "ok"; costs one network
#: round trip per commit, and writes wait while no standby is in sync).
@dataclass(frozen=True)
class PostgresBlock:
    """`cluster.postgres`: max_connections (0 = derived), and Patroni mode's replication and DCS timing."""

    max_connections: int = 0
    synchronous_mode: bool = True
    ttl: int = 30
    loop_wait: int = 10
    retry_timeout: int = 10


@dataclass(frozen=True)
class PostgresSettings:
    postgres: PostgresBlock = field(default_factory=PostgresBlock)
PORTS = {"postgres": 5432, "patroni_api": 8008}    # patroni_api: Patroni mode only
#: Patroni mode: every postgres host also serves Patroni's REST API (leader checks, /cluster for health)
PATRONI_PORTS = ("patroni_api",)
#: on the database host: pg_dump -Fc files taken before a migration (0700 dir, 0600 files, owner postgres)
BACKUP_DIR = "/var/backups/airflow-ha"
MIN_TTL = 20   # Patroni mode: the shortest DCS leader-key ttl accepted (seconds)
#: the running server's own bin dir: its pg_dump/pg_restore match the server (EL9 + PGDG: /usr/pgsql-15/bin,
#: while /usr/bin holds AppStream's older client, which refuses a newer server)
BINDIR_SQL = "select setting from pg_config where name = 'BINDIR'"


def applies(inv, host) -> bool:
    return host.has("postgres")


def db_host(run) -> str:
    return run.addresses[run.inv.with_role("postgres")[0].name]


def db_hosts(run) -> list[str]:
    """Every member's address:port: the multi-host list of Patroni mode (one entry in single mode)."""
    port = run.inv.ports.postgres
    return [f"{run.addresses[h.name]}:{port}" for h in run.inv.with_role("postgres")]


#: libpq parameters of the multi-host URL (Patroni mode): the writable member, dead hosts skipped quickly.
#: A connection to a powered-off primary must fail, not hang: TCP keepalives end an idle one in ~25 s
#: (instead of the kernel's 2 h), and `tcp_user_timeout` one that waits for an answer (keepalives do not
#: run while sent data is unacknowledged; the kernel would retransmit for ~15 min). Without it, the
#: api-servers' SQLAlchemy pools filled with connections stuck on the old primary after a power loss and
#: every request waited 30 s for a pool slot (drill.vip, drill.postgres on the lab).
MULTI_HOST_PARAMS = ("target_session_attrs=read-write&connect_timeout=3&keepalives=1&keepalives_idle=10"
                     "&keepalives_interval=5&keepalives_count=3&tcp_user_timeout=10000")


def psql_target(run) -> str:
    """psql's connection arguments for the airflow database (user/database included)."""
    port = run.inv.ports.postgres
    if not patroni_mode(run.inv):
        return f"-h {db_host(run)} -p {port} -U {USER} -d {DB}"
    hosts = ",".join(run.addresses[h.name] for h in run.inv.with_role("postgres"))
    return shlex.quote(f"host={hosts} port={port} user={USER} dbname={DB} target_session_attrs=read-write")


def prepare(run, hosts):
    if patroni_mode(run.inv):
        patroni.prepare(run, hosts)


def finalize(run, hosts):
    if patroni_mode(run.inv):
        patroni.finalize(run, hosts)


def connect_probe(run, host) -> str:
    return patroni.connect_probe(run, host) if patroni_mode(run.inv) else ""


def steps(ctx) -> list:
    inv, plat, pg = ctx.inv, ctx.platform, names(ctx.platform)
    if patroni_mode(inv):
        return patroni.steps(ctx)
    unit, user = pg.unit, pg.user
    port = inv.ports.postgres
    password = ctx.secrets["postgres_password"]
    peers = sorted((n, a) for n, a in ctx.run.addresses.items())
    out = []
    if plat.family == "rhel":
        out += [
            Command("initdb", desc="postgresql-setup --initdb",
                    unless=f"[ -f {pg.data}/PG_VERSION ]",
                    script="postgresql-setup --initdb"),
            # EL's postgresql.conf is initdb's sample: `#include_dir = '...'` is commented out (Debian's
            # packaging enables include_dir = 'conf.d'), and conf.d does not exist
            Line(target="include_dir", path=f"{pg.conf_dir}/postgresql.conf",
                 line="include_dir = 'conf.d'", replace="^#?include_dir", notify=(unit,)),
            Directory(f"{pg.conf_dir}/conf.d", owner=user, group=user, mode=0o700),
        ]
    out += selinux.steps_for_postgres(ctx)   # port label before the unit starts on it
    out += [
        File(pg.include, render("postgres/airflow-ha.conf.j2", address=ctx.address, port=port,
                                              max_connections=max_connections(inv),
                                              archive=repository.archive_settings(inv)),
             owner=user, group=user, mode=0o644, notify=(unit,)),
        File(pg.hba, render("postgres/pg_hba.conf.j2", peers=peers, db_name=DB, db_user=USER),
             owner=user, group=user, mode=0o640, notify=(unit,)),
        Service(unit, downtime="single database", config=pg.include),
        Command("role+database", desc=f"create role and database {DB}",
                unless=f"PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5 psql -h {ctx.address} -p {port} "
                       f"-U {USER} -d {DB} -tAc 'select 1'",
                script=create_sql(user, password, port)),
    ]
    return out


def gate(run, host) -> str | None:
    """After its restart, PostgreSQL accepts connections again (pg_isready) before anything goes on."""
    if patroni_mode(run.inv):
        return patroni.gate(run, host)
    port = run.inv.ports.postgres
    res = run.remote(host.name).sh(f"pg_isready -q -t 3 -h {run.addresses[host.name]} -p {port}", timeout=15)
    return None if res.ok else f"pg_isready: exit {res.rc} (not accepting connections)"


# -- backups before a schema migration (issue 16) ---------------------------------------------------------


def backup_host(run):
    """Where a backup runs: the single database host, or the Patroni leader (REST /primary); None = no leader."""
    if not patroni_mode(run.inv):
        return run.inv.with_role("postgres")[0]
    return patroni.leader(run)


def backup_glob(rev: str, version: str = "*") -> str:
    """The backup files of the schema revision `rev` taken before migrating to Airflow `version`."""
    return f"{BACKUP_DIR}/airflow-*-rev-{rev}-before-{version}.dump"


def server_bindir(port) -> str:
    """Shell (run as postgres): prints the running server's bin dir."""
    return f"psql -p {port} -tAc \"{BINDIR_SQL}\""


def backup_steps(run, rev: str, version: str) -> list:
    """pg_dump -Fc of the airflow database at schema `rev`, once per (rev, version): a timestamped file
    in BACKUP_DIR, written by postgres with umask 077 (0600) with the server's own pg_dump; its path is printed."""
    port = run.inv.ports.postgres
    dump = (f"umask 077; b=$({server_bindir(port)}) && \"$b/pg_dump\" -Fc -p {port} -d {DB} -f \"$1.partial\" && "
            "mv \"$1.partial\" \"$1\"")     # $1: the file (the postgres shell sees no variable of this one)
    return [Command("db backup", desc=f"pg_dump -Fc {DB} (schema {rev}) before Airflow {version} migrates it",
                    unless=f"ls {backup_glob(rev, version)} >/dev/null 2>&1",
                    script=(f"install -d -o postgres -g postgres -m 0700 {BACKUP_DIR}\n"
                            f"f={BACKUP_DIR}/airflow-$(date -u +%Y%m%dT%H%M%SZ)-rev-{rev}-before-{version}.dump\n"
                            f"runuser -u postgres -- sh -c {shlex.quote(dump)} sh \"$f\"\n"
                            "echo \"backup: $f ($(du -h \"$f\" | cut -f1))\""))]


@dataclass
class Backup:
    """A pg_dump file on a database host, with that server's bin dir (its pg_restore reads the dump)."""

    host: str = ""
    path: str = ""        # "" = none found
    bindir: str = ""

    def restore(self) -> str:
        """How to put it back (every Airflow unit stopped first; as root on `host`)."""
        tool = f"{self.bindir}/pg_restore" if self.bindir else "pg_restore"
        return f"runuser -u postgres -- {tool} --clean --if-exists -d {DB} {self.path}"


def find_backup(run, rev: str, version: str = "*") -> Backup:
    """The newest backup of schema `rev` (taken before `version`) on any reachable postgres host: under
    Patroni it lies on whichever member led when it was taken."""
    found = []
    for host in run.inv.with_role("postgres"):
        try:
            out = run.remote(host.name).sh(
                f"echo \"path=$(ls -t {backup_glob(rev, version)} 2>/dev/null | head -n 1)\"\n"
                f"echo \"bindir=$(runuser -u postgres -- {server_bindir(run.inv.ports.postgres)})\"",
                timeout=20).out
        except Unreachable:
            continue
        got = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
        if got.get("path"):
            found.append(Backup(host.name, got["path"].strip(), got.get("bindir", "").strip()))
    return max(found, key=lambda b: b.path.rsplit("/", 1)[-1], default=Backup())


def db_revision_script(run) -> str:
    """Shell printing the database's alembic revision (nothing: no Airflow schema yet); exit 3: no answer."""
    psql = (f"PGPASSWORD={shlex.quote(run.secrets['postgres_password'])} PGCONNECT_TIMEOUT=5 "
            f"psql {psql_target(run)} -tA")
    return (f"t=$({psql} -c \"select to_regclass('public.alembic_version')\") || exit 3\n"
            f"[ -n \"$t\" ] || exit 0\n{psql} -c 'select version_num from alembic_version'")


def db_revision(run, host) -> str | None:
    """The database's alembic revision asked from `host` ("" = no Airflow schema yet, None = no answer)."""
    res = run.remote(host.name).sh(db_revision_script(run), timeout=30)
    return res.out.strip() if res.ok else None


def validate(inv) -> None:
    """Patroni mode's DCS timing: loop_wait + 2*retry_timeout <= ttl, ttl >= MIN_TTL."""
    pg = inv.settings.postgres
    if not patroni_mode(inv):
        return
    if pg.ttl < MIN_TTL or pg.loop_wait < 1 or pg.loop_wait + 2 * pg.retry_timeout > pg.ttl:
        raise InventoryError(
            f"Patroni timing ttl={pg.ttl} loop_wait={pg.loop_wait} retry_timeout={pg.retry_timeout} "
            f"breaks loop_wait + 2*retry_timeout <= ttl (ttl >= {MIN_TTL})", f"{inv.path}: cluster.postgres",
            "use the defaults ttl: 30, loop_wait: 10, retry_timeout: 10, or raise ttl")


# -- `inv health` -------------------------------------------------------------------------------------------
def health_probe(run, host) -> list[str]:
    """Patroni mode: this member's own /cluster view and /primary code."""
    if not (patroni_mode(run.inv) and host.has("postgres")):
        return []
    cluster, primary = patroni.api_url(run, host, "cluster"), patroni.api_url(run, host, "primary")
    return [f"echo \"@@pcluster $(curl -s -m 3 {cluster} | tr -d '\\n')\"",
            f"echo \"@@pprimary $(curl -s -m 3 -o /dev/null -w '%{{http_code}}' {primary})\""]


def health_summary(run, answers) -> list[Check]:
    """Patroni mode: the member/leader/lag/sync rows from every member's answers."""
    inv = run.inv
    if not patroni_mode(inv):
        return []
    said = {tag: {h: a[tag][-1].strip() for h, a in answers.items() if tag in a} for tag in ("pcluster", "pprimary")}
    return patroni.patroni_checks([h.name for h in inv.with_role("postgres")], said["pcluster"], said["pprimary"],
                                  bool(inv.settings.postgres.synchronous_mode))


def health_checks(run) -> list[Check]:
    """SELECT 1 and connection use on the primary (Patroni: whichever member leads), then every component's
    `database_checks` over the same connection (WAL archiving, scheduler heartbeats)."""
    from contextlib import ExitStack
    inv = run.inv
    hosts = [h for h in inv.with_role("postgres") if h.name not in run.failed]
    if not hosts or (not patroni_mode(inv) and hosts[0] != inv.with_role("postgres")[0]):
        return []
    out, ports = [], {}
    try:
        with ExitStack() as stack:
            for h in hosts:
                try:
                    ports[stack.enter_context(run.remote(h.name).forward(
                        run.addresses[h.name], inv.ports.postgres))] = h.name
                except Exception:  # that member is named by its own rows
                    continue
            if not ports:
                return [Check("cluster", "postgres", "fail", "no SSH forward to any postgres host")]
            out += _query_primary(run, ports)
    except Exception as exc:
        name = next(iter(ports.values()), hosts[0].name) if not patroni_mode(inv) else "cluster"
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
    import psycopg2  # only health needs it (start-up time)
    inv, patroni = run.inv, patroni_mode(run.inv)
    kw = {"user": USER, "dbname": DB, "password": run.secrets["postgres_password"],
          "connect_timeout": inv.settings.check_timeout}
    try:
        return psycopg2.connect(**kw, **conninfo(ports, patroni))
    except psycopg2.OperationalError:
        if not patroni or len(ports) <= 1:
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
        via = " (the writable member)" if patroni_mode(inv) else ""
        out = [Check(name, "postgres", "ok" if used < 0.8 * limit else "warn",
                     f"SELECT 1 ok{via}, {used}/{limit} connections")]
        for component in inv.registry.components:
            out += component.database_checks(run, cur)
        return out
    finally:
        conn.close()


class Postgres(Component):
    """The single database, or Patroni mode on two or more hosts (fabfile/patroni.py)."""

    name = NAME
    roles = (Role("postgres", ("postgres",),
                  required="give one host (single database) or 3 hosts (Patroni) the 'postgres' role"),)
    settings = PostgresSettings
    default_ports = PORTS
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    names = staticmethod(names)
    validate = staticmethod(validate)
    connect_probe = staticmethod(connect_probe)
    prepare = staticmethod(prepare)
    finalize = staticmethod(finalize)
    gate = staticmethod(gate)
    health_probe = staticmethod(health_probe)
    health_checks = staticmethod(health_checks)
    health_summary = staticmethod(health_summary)

    def listens(self, inv, host) -> list[str]:
        return super().listens(inv, host) + (list(PATRONI_PORTS) if patroni_mode(inv) and host.has("postgres") else [])

    def peer_ports(self, inv) -> list[str]:
        return super().peer_ports(inv) + (list(PATRONI_PORTS) if patroni_mode(inv) else [])

    def units(self, run, host) -> list[str]:
        pg = names(run.facts[host.name].platform)
        return [pg.patroni_unit if patroni_mode(run.inv) else pg.unit] if host.has("postgres") else []


COMPONENT = Postgres()
