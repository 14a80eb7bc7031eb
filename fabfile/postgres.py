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
from dataclasses import dataclass

from . import backup, selinux
from .core.remote import Unreachable
from .core.steps import Command, Directory, File, Line, Service
from .core.templates import render

NAME = "postgres"
DB = "airflow"
USER = "airflow"
#: on the database host: pg_dump -Fc files taken before a migration (0700 dir, 0600 files, owner postgres)
BACKUP_DIR = "/var/backups/airflow-ha"
#: the running server's own bin dir: its pg_dump/pg_restore match the server (EL9 + PGDG: /usr/pgsql-15/bin,
#: while /usr/bin holds AppStream's older client, which refuses a newer server)
BINDIR_SQL = "select setting from pg_config where name = 'BINDIR'"


def applies(inv, host) -> bool:
    return host.has("postgres")


def max_connections(inv) -> int:
    """Room for every Airflow daemon's SQLAlchemy pool (5 + 10 overflow), Celery result writes and admin.

    Airflow 3 task processes reach the database only through the Execution API, so worker hosts get a
    flat allowance (their Celery result-backend connections) instead of one per task slot: changing
    `worker_concurrency` must not restart PostgreSQL. Set `postgres.max_connections` for big workers.
    """
    c = inv.cluster
    if c["postgres"]["max_connections"]:
        return c["postgres"]["max_connections"]
    daemons = sum(len(inv.with_role(r)) for r in ("scheduler", "dag_processor", "triggerer"))
    daemons += sum(inv.var(h, "api_workers") for h in inv.with_role("api_server"))
    return max(100, 15 * daemons + 20 * len(inv.with_role("worker")) + 50)


def db_host(run) -> str:
    return run.addresses[run.inv.with_role("postgres")[0].name]


def db_hosts(run) -> list[str]:
    """Every member's address:port: the multi-host list of Patroni mode (one entry in single mode)."""
    port = run.inv.cluster["ports"]["postgres"]
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
    port = run.inv.cluster["ports"]["postgres"]
    if not run.inv.patroni:
        return f"-h {db_host(run)} -p {port} -U {USER} -d {DB}"
    hosts = ",".join(run.addresses[h.name] for h in run.inv.with_role("postgres"))
    return shlex.quote(f"host={hosts} port={port} user={USER} dbname={DB} target_session_attrs=read-write")


def prepare(run, hosts):
    if run.inv.patroni:
        from . import patroni
        patroni.prepare(run, hosts)


def finalize(run, hosts):
    if run.inv.patroni:
        from . import patroni
        patroni.finalize(run, hosts)


def steps(ctx) -> list:
    inv, plat = ctx.inv, ctx.platform
    if inv.patroni:
        from . import patroni
        return patroni.steps(ctx)
    unit, user = plat.units["postgres"], plat.users["postgres"]
    port = inv.cluster["ports"]["postgres"]
    password = ctx.secrets["postgres_password"]
    peers = sorted((n, a) for n, a in ctx.run.addresses.items())
    out = []
    if plat.family == "rhel":
        out += [
            Command("initdb", desc="postgresql-setup --initdb",
                    unless=f"[ -f {plat.paths['pg_data']}/PG_VERSION ]",
                    script="postgresql-setup --initdb"),
            # EL's postgresql.conf is initdb's sample: `#include_dir = '...'` is commented out (Debian's
            # packaging enables include_dir = 'conf.d'), and conf.d does not exist
            Line(target="include_dir", path=f"{plat.paths['pg_conf_dir']}/postgresql.conf",
                 line="include_dir = 'conf.d'", replace="^#?include_dir", notify=(unit,)),
            Directory(f"{plat.paths['pg_conf_dir']}/conf.d", owner=user, group=user, mode=0o700),
        ]
    out += selinux.steps_for_postgres(ctx)   # port label before the unit starts on it
    out += [
        File(plat.paths["pg_include"], render("postgres/airflow-ha.conf.j2", address=ctx.address, port=port,
                                              max_connections=max_connections(inv),
                                              archive=backup.archive_settings(inv)),
             owner=user, group=user, mode=0o644, notify=(unit,)),
        File(plat.paths["pg_hba"], render("postgres/pg_hba.conf.j2", peers=peers, db_name=DB, db_user=USER),
             owner=user, group=user, mode=0o640, notify=(unit,)),
        Service(unit, downtime="single database", config=plat.paths["pg_include"]),
        Command("role+database", desc=f"create role and database {DB}",
                unless=f"PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5 psql -h {ctx.address} -p {port} "
                       f"-U {USER} -d {DB} -tAc 'select 1'",
                script=_create_sql(user, password, port)),
    ]
    return out


def _create_sql(os_user: str, password: str, port: int) -> str:
    pw = password.replace("'", "''")
    return (f"for i in $(seq 30); do runuser -u {os_user} -- pg_isready -q -p {port} && break; sleep 1; done\n"
            f"runuser -u {os_user} -- psql -p {port} -v ON_ERROR_STOP=1 -q <<'__SQL__'\n"
            f"SELECT 'CREATE ROLE {USER} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{USER}')\\gexec\n"
            f"ALTER ROLE {USER} WITH LOGIN PASSWORD '{pw}';\n"
            f"SELECT 'CREATE DATABASE {DB} OWNER {USER}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{DB}')\\gexec\n"
            "__SQL__")


def gate(run, host) -> str | None:
    """After its restart, PostgreSQL accepts connections again (pg_isready) before anything goes on."""
    if run.inv.patroni:
        from . import patroni
        return patroni.gate(run, host)
    port = run.inv.cluster["ports"]["postgres"]
    res = run.remote(host.name).sh(f"pg_isready -q -t 3 -h {run.addresses[host.name]} -p {port}", timeout=15)
    return None if res.ok else f"pg_isready: exit {res.rc} (not accepting connections)"


# -- backups before a schema migration (issue 16) ---------------------------------------------------------


def backup_host(run):
    """Where a backup runs: the single database host, or the Patroni leader (REST /primary); None = no leader."""
    if not run.inv.patroni:
        return run.inv.with_role("postgres")[0]
    from . import patroni
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
    port = run.inv.cluster["ports"]["postgres"]
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
                f"echo \"bindir=$(runuser -u postgres -- {server_bindir(run.inv.cluster['ports']['postgres'])})\"",
                timeout=20).out
        except Unreachable:
            continue
        got = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
        if got.get("path"):
            found.append(Backup(host.name, got["path"].strip(), got.get("bindir", "").strip()))
    return max(found, key=lambda b: b.path.rsplit("/", 1)[-1], default=Backup())


def db_revision(run, host) -> str | None:
    """The database's alembic revision asked from `host` ("" = no Airflow schema yet, None = no answer)."""
    psql = (f"PGPASSWORD={shlex.quote(run.secrets['postgres_password'])} PGCONNECT_TIMEOUT=5 "
            f"psql {psql_target(run)} -tA")
    script = (f"t=$({psql} -c \"select to_regclass('public.alembic_version')\") || exit 3\n"
              f"[ -n \"$t\" ] || exit 0\n{psql} -c 'select version_num from alembic_version'")
    res = run.remote(host.name).sh(script, timeout=30)
    return res.out.strip() if res.ok else None
