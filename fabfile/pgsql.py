"""PostgreSQL as the platforms package it, and the airflow database on it: what the postgres component
(single mode in postgres.py, Patroni mode in patroni.py), etcd, pgBackRest and monitoring share.

A leaf module: they import it, it imports none of them (no import cycle between the two modes).
"""

from __future__ import annotations

from dataclasses import dataclass

DB = "airflow"
USER = "airflow"


@dataclass(frozen=True)
class PostgresNames:
    """What PostgreSQL is called on one platform, single and Patroni layouts (docs/platforms.md: sources)."""

    packages: tuple[str, ...]           # the single database
    client_packages: tuple[str, ...]    # psql, on every Airflow host
    patroni_packages: tuple[str, ...]
    unit: str                           # the single database's unit
    instance_unit: str                  # the cluster's own unit: stopped once Patroni runs the cluster
    patroni_unit: str
    user: str
    home: str                           # the postgres user's home (pgBackRest's SSH key lives there)
    conf_dir: str
    hba: str
    include: str
    data: str
    patroni_conf: str
    bin_dir: str
    patroni_data: str
    patroni_conf_dir: str
    pgpass: str
    start_conf: str = ""                # Debian: "manual" here, so postgresql@ leaves the cluster to Patroni
    createcluster_conf: str = ""        # Debian: create_main_cluster = false under Patroni


#: the PostgreSQL major of the Debian-family releases' packages (Debian 12: 15, Ubuntu 24.04: 16)
DEBIAN_MAJOR = {"debian": "15", "ubuntu": "16"}


def _debian_names(pg: str) -> PostgresNames:
    """The pg-common layout, /etc/postgresql/<major>/main. Patroni mode pins the release's major, not the
    `postgresql` metapackage (a PGDG source would bring a newer one); python3-etcd is the client library
    Patroni's etcd3 DCS imports; Debian's patroni@.service runs /etc/patroni/<major>-main.yml as postgres."""
    etc = f"/etc/postgresql/{pg}/main"
    return PostgresNames(
        packages=("postgresql", "postgresql-client"), client_packages=("postgresql-client",),
        patroni_packages=(f"postgresql-{pg}", "postgresql-client", "patroni", "python3-etcd"),
        unit="postgresql", instance_unit=f"postgresql@{pg}-main", patroni_unit=f"patroni@{pg}-main",
        user="postgres", home="/var/lib/postgresql", conf_dir=etc, hba=f"{etc}/pg_hba.conf",
        include=f"{etc}/conf.d/airflow-ha.conf", data=f"/var/lib/postgresql/{pg}/main",
        patroni_conf=f"/etc/patroni/{pg}-main.yml", bin_dir=f"/usr/lib/postgresql/{pg}/bin",
        patroni_data=f"/var/lib/postgresql/{pg}/main", patroni_conf_dir=etc,
        pgpass=f"/var/lib/postgresql/{pg}-main.pgpass", start_conf=f"{etc}/start.conf",
        createcluster_conf="/etc/postgresql-common/createcluster.conf")


#: EL9: AppStream's PostgreSQL (postgresql-setup --initdb creates data and config in /var/lib/pgsql/data) for
#: the single database; Patroni mode: PostgreSQL 15 from PGDG (repo pgdg15), patroni/patroni-etcd from PGDG's
#: pgdg-rhel9-extras, their Python dependencies from EPEL (fabfile/patroni.py REPOS_EL9)
EL9_NAMES = PostgresNames(
    packages=("postgresql-server", "postgresql"), client_packages=("postgresql",),
    patroni_packages=("postgresql15-server", "postgresql15", "patroni", "patroni-etcd"),
    unit="postgresql", instance_unit="postgresql-15", patroni_unit="patroni", user="postgres", home="/var/lib/pgsql",
    conf_dir="/var/lib/pgsql/data", hba="/var/lib/pgsql/data/pg_hba.conf",
    include="/var/lib/pgsql/data/conf.d/airflow-ha.conf", data="/var/lib/pgsql/data",
    patroni_conf="/etc/patroni/patroni.yml", bin_dir="/usr/pgsql-15/bin", patroni_data="/var/lib/pgsql/15/data",
    patroni_conf_dir="/var/lib/pgsql/15/data", pgpass="/var/lib/pgsql/15.pgpass")


def names(platform) -> PostgresNames:
    return EL9_NAMES if platform.family == "rhel" else _debian_names(DEBIAN_MAJOR[platform.distro])


def patroni_layout(hosts) -> bool:
    """Patroni mode: PostgreSQL on two or more of `hosts` (one host = the single database, no Patroni)."""
    return sum(h.has("postgres") for h in hosts) > 1


def patroni_mode(inv) -> bool:
    return patroni_layout(inv.hosts.values())


def max_connections(inv) -> int:
    """Room for every Airflow daemon's SQLAlchemy pool (5 + 10 overflow), Celery result writes and admin.

    Airflow 3 task processes reach the database only through the Execution API, so worker hosts get a
    flat allowance (their Celery result-backend connections) instead of one per task slot: changing
    `worker_concurrency` must not restart PostgreSQL. Set `postgres.max_connections` for big workers.
    """
    if inv.settings.postgres.max_connections:
        return inv.settings.postgres.max_connections
    daemons = sum(len(inv.with_role(r)) for r in ("scheduler", "dag_processor", "triggerer"))
    daemons += sum(inv.settings_for(h).api_workers for h in inv.with_role("api_server"))
    return max(100, 15 * daemons + 20 * len(inv.with_role("worker")) + 50)


def create_sql(os_user: str, password: str, port: int) -> str:
    pw = password.replace("'", "''")
    return (f"for i in $(seq 30); do runuser -u {os_user} -- pg_isready -q -p {port} && break; sleep 1; done\n"
            f"runuser -u {os_user} -- psql -p {port} -v ON_ERROR_STOP=1 -q <<'__SQL__'\n"
            f"SELECT 'CREATE ROLE {USER} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{USER}')\\gexec\n"
            f"ALTER ROLE {USER} WITH LOGIN PASSWORD '{pw}';\n"
            f"SELECT 'CREATE DATABASE {DB} OWNER {USER}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{DB}')\\gexec\n"
            "__SQL__")
