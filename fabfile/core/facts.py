"""Facts: what a host is (distribution → platform), gathered in one round trip per host per run.

A Platform is the table of everything that differs between distributions: package manager, firewall,
package names, service names, config paths, daemon users. Components read it; they never test the
distribution themselves. Every entry, with its source, is listed in docs/platforms.md; the spec tests
(tests/spec) print the complete plan per platform so a wrong name shows up in a reviewed golden file.

Python: the Airflow venv uses the distribution's interpreter (Debian 12: 3.11, Ubuntu 24.04: 3.12, EL9:
python3.12 from AppStream since 9.4 — EL9's default 3.9 is too old for Airflow 3); a constraints file
ships for each of them (files/airflow/). Ubuntu 22.04 (3.10) is refused: no constraints file. The
wheelhouse and constraints are built on the control machine *before* any host is reached, so they
cannot follow the hosts: `cluster.python_version` must equal `Platform.python_version`
of every Airflow host, and the airflow component refuses a host whose Python differs (one clear error).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .errors import PlatformError

SUPPORTED = "Debian 12, Ubuntu 24.04, AlmaLinux/Rocky/RHEL 9"


@dataclass(frozen=True)
class Platform:
    """What a distribution needs: package names, paths, units, users, firewall, Python."""

    family: str            # debian | rhel
    distro: str            # os-release ID
    version: str           # os-release VERSION_ID
    pkg: str               # apt | dnf
    firewall: str          # default firewall: ufw | firewalld
    python: str            # interpreter for the Airflow venv
    packages: dict = field(hash=False)   # component -> list of package names
    units: dict = field(hash=False)      # logical service -> systemd unit
    paths: dict = field(hash=False)      # logical file -> path
    users: dict = field(hash=False)      # daemon -> user that runs it
    selinux: bool = False
    python_version: str = ""   # major.minor of `python` (must match cluster.python_version)
    redis_version: str = ""    # major.minor of the packaged Redis (sentinel options differ)

    @property
    def name(self) -> str:
        return f"{self.distro} {self.version}"


def _debian_like(distro, version, python_version, pg, redis_version) -> Platform:
    paths = {
        "redis_conf": "/etc/redis/redis.conf",
        "sentinel_conf": "/etc/redis/sentinel.conf",
        "pg_conf_dir": f"/etc/postgresql/{pg}/main",
        "pg_hba": f"/etc/postgresql/{pg}/main/pg_hba.conf",
        "pg_include": f"/etc/postgresql/{pg}/main/conf.d/airflow-ha.conf",
        "pg_data": f"/var/lib/postgresql/{pg}/main",
        "redis_dropin": "airflow-ha.conf",   # systemd drop-in name for redis units (LimitNOFILE)
        "nginx_main_conf": None,   # the packaged nginx.conf stays: its only server is sites-enabled/default
        "nginx_site": "/etc/nginx/sites-available/airflow-ha.conf",
        "nginx_site_link": "/etc/nginx/sites-enabled/airflow-ha.conf",
        "nginx_default_site": "/etc/nginx/sites-enabled/default",
        "apt_proxy": "/etc/apt/apt.conf.d/80airflow-ha-proxy",
        "monitoring_defaults": "/etc/default",   # <dir>/<unit>: EnvironmentFile (ARGS=...) of every exporter unit
        # Patroni mode (fabfile/patroni.py): Debian's patroni@.service runs `/usr/bin/patroni
        # /etc/patroni/%i.yml` as postgres; instance %i = <version>-<cluster>, the pg-common layout stays
        "patroni_conf": f"/etc/patroni/{pg}-main.yml",
        "pg_bin": f"/usr/lib/postgresql/{pg}/bin",
        "pg_patroni_data": f"/var/lib/postgresql/{pg}/main",
        "pg_patroni_conf_dir": f"/etc/postgresql/{pg}/main",
        "pg_start_conf": f"/etc/postgresql/{pg}/main/start.conf",   # "manual": postgresql@ leaves it to Patroni
        "pg_createcluster_conf": "/etc/postgresql-common/createcluster.conf",
        "pgpass": f"/var/lib/postgresql/{pg}-main.pgpass",
        "etcd_env": "/etc/default/etcd",   # etcd.service: EnvironmentFile=-/etc/default/%p
        "etcd_data": "/var/lib/etcd/airflow-ha",   # not the package's /var/lib/etcd/default (a 1-member cluster)
        "pg_home": "/var/lib/postgresql",   # the postgres user's home (pgBackRest's SSH key lives there)
    }
    return Platform(
        family="debian", distro=distro, version=version, pkg="apt", firewall="ufw", python="python3",
        packages={
            "base": ["ca-certificates", "curl", "sudo", "rsync", "logrotate", "acl", "tar"],
            # python3 is 3.11 (Debian 12), 3.12 (Ubuntu 24.04); venv is a separate package
            "python": ["python3", "python3-venv"],
            "timesync": ["chrony"],
            "redis": ["redis-server", "redis-tools"],
            "sentinel": ["redis-sentinel"],
            "postgres": ["postgresql", "postgresql-client"],
            "postgres_client": ["postgresql-client"],
            # no apache2-utils: the Flower htpasswd is written by us ({SSHA}), htpasswd is never run
            "nginx": ["nginx", "openssl"],
            "keepalived": ["keepalived"],
            "ufw": ["ufw"],
            "firewalld": ["firewalld"],
            # monitoring (cluster.monitoring): no statsd_exporter package exists (fabfile/monitoring.py)
            "monitoring_node": ["prometheus-node-exporter"],
            "monitoring_redis": ["prometheus-redis-exporter"],
            "monitoring_postgres": ["prometheus-postgres-exporter"],
            "monitoring_prometheus": ["prometheus"],
            # Patroni mode: python3-etcd is the client library Patroni's etcd/etcd3 DCS modules import.
            # The server is pinned to the release's major (postgresql-15 / postgresql-16), not the
            # `postgresql` metapackage: bin_dir, data and config paths below name that major, and a PGDG apt
            # source would otherwise bring a newer one. Debian 12: patroni 3.0.2, etcd-server 3.4.23,
            # python3-etcd 0.4.5 (main). Ubuntu 24.04: patroni 3.2.2, etcd-server/etcd-client 3.4.30,
            # python3-etcd 0.4.5, all in `universe` (enabled on Ubuntu's server and cloud images); the
            # Debian patroni package layout (patroni@.service, /etc/patroni/<major>-main.yml) is the same.
            "patroni": [f"postgresql-{pg}", "postgresql-client", "patroni", "python3-etcd"],
            "etcd": ["etcd-server", "etcd-client"],
            "pgbackrest": ["pgbackrest"],   # Debian 12: 2.45 (DESIGN.md §6); every host runs the same version
        },
        units={"patroni": f"patroni@{pg}-main", "postgres_instance": f"postgresql@{pg}-main", "etcd": "etcd",
               "redis": "redis-server", "sentinel": "redis-sentinel", "postgres": "postgresql",
               "nginx": "nginx", "keepalived": "keepalived", "timesync": "chrony", "ufw": "ufw", "firewalld": "firewalld",
               "node_exporter": "prometheus-node-exporter", "redis_exporter": "prometheus-redis-exporter",
               "postgres_exporter": "prometheus-postgres-exporter", "prometheus": "prometheus"},
        paths=paths,
        users={"redis": "redis", "postgres": "postgres", "nginx": "www-data"},
        python_version=python_version, redis_version=redis_version,
    )


def _el9(distro, version) -> Platform:
    """AlmaLinux/Rocky/RHEL 9: AppStream packages (redis 6.2, postgresql 13, nginx, python3.12 since 9.4)."""
    return Platform(
        family="rhel", distro=distro, version=version, pkg="dnf", firewall="firewalld", python="python3.12",
        packages={
            # no "curl": EL9 installs curl-minimal (@core), which conflicts with the full curl package;
            # either one provides /usr/bin/curl. semanage comes from policycoreutils-python-utils.
            "base": ["ca-certificates", "sudo", "rsync", "logrotate", "acl", "tar",
                     "policycoreutils-python-utils"],
            # python3.12 includes the venv module; python3.12-pip brings the wheel ensurepip installs
            "python": ["python3.12", "python3.12-pip"],
            "timesync": ["chrony"],
            "redis": ["redis"],          # one package: redis-server, redis-sentinel, both units
            "sentinel": ["redis"],
            "postgres": ["postgresql-server", "postgresql"],
            "postgres_client": ["postgresql"],
            "nginx": ["nginx", "openssl"],
            "keepalived": ["keepalived"],   # AppStream
            "ufw": [],                   # not in EL9 (EPEL only): the firewall component refuses ufw here
            "firewalld": ["firewalld"],
            # BaseOS/AppStream ship no Prometheus exporters and this suite configures no EPEL or vendor repo:
            # the monitoring component refuses EL9 hosts with a PlatformError
            "monitoring_node": [], "monitoring_redis": [], "monitoring_postgres": [], "monitoring_prometheus": [],
            # Patroni mode: PostgreSQL 15 from PGDG (repo pgdg15), patroni/patroni-etcd/etcd from PGDG's
            # pgdg-rhel9-extras, their Python dependencies from EPEL (fabfile/patroni.py REPOS_EL9)
            "patroni": ["postgresql15-server", "postgresql15", "patroni", "patroni-etcd"],
            "etcd": ["etcd"],
            # PGDG (pgdg-common) or EPEL ship pgbackrest for EL9 (check_repos of the patroni layout)
            "pgbackrest": ["pgbackrest"],
        },
        units={"patroni": "patroni", "postgres_instance": "postgresql-15", "etcd": "etcd",
               "redis": "redis", "sentinel": "redis-sentinel", "postgres": "postgresql",
               "nginx": "nginx", "keepalived": "keepalived", "timesync": "chronyd", "ufw": "ufw", "firewalld": "firewalld"},
        paths={
            "redis_conf": "/etc/redis/redis.conf",          # redis >= 6 (Fedora 34 / EL9): /etc/redis/
            "sentinel_conf": "/etc/redis/sentinel.conf",
            # the redis package ships <unit>.service.d/limit.conf (LimitNOFILE=10240); drop-ins apply in
            # name order, so ours must sort after it to take effect
            "redis_dropin": "zz-airflow-ha.conf",
            "pg_conf_dir": "/var/lib/pgsql/data",           # postgresql-setup --initdb creates it
            "pg_hba": "/var/lib/pgsql/data/pg_hba.conf",
            "pg_include": "/var/lib/pgsql/data/conf.d/airflow-ha.conf",
            "pg_data": "/var/lib/pgsql/data",
            # EL's nginx.conf has its own `server { listen 80; ... }` welcome page in the http block:
            # we replace nginx.conf by the same file without that server (files/nginx/nginx-el.conf.j2)
            "nginx_main_conf": "/etc/nginx/nginx.conf",
            "nginx_site": "/etc/nginx/conf.d/airflow-ha.conf",
            "nginx_site_link": None,
            "nginx_default_site": None,
            "apt_proxy": None,
            "dnf_conf": "/etc/dnf/dnf.conf",
            # Patroni mode (PGDG layout): patroni.service runs /usr/bin/patroni /etc/patroni/patroni.yml
            "patroni_conf": "/etc/patroni/patroni.yml",
            "pg_bin": "/usr/pgsql-15/bin",
            "pgpass": "/var/lib/pgsql/15.pgpass",
            "pg_patroni_data": "/var/lib/pgsql/15/data",
            "pg_patroni_conf_dir": "/var/lib/pgsql/15/data",
            "etcd_env": "/etc/etcd/etcd.conf",
            "etcd_data": "/var/lib/etcd/airflow-ha",
            "pg_home": "/var/lib/pgsql",
        },
        users={"redis": "redis", "postgres": "postgres", "nginx": "nginx"},
        selinux=True, python_version="3.12", redis_version="6.2",
    )


#: os-release ID -> why a release we do not support is refused (shown in the error)
_WHY = {
    "debian": "Debian 11 and older ship Python 3.9 or older; Airflow 3 needs >= 3.10",
    "ubuntu": "only 24.04 is supported: 22.04's Python 3.10 has no shipped constraints file, "
              "20.04 and older ship Python 3.8 (Airflow 3 needs >= 3.10)",
    "centos": "CentOS 7/8 are end of life; use AlmaLinux or Rocky 9",
    "alpine": "musl libc and OpenRC: no systemd units, no manylinux wheels",
}


def platform_from_os_release(text: str) -> Platform:
    """Map /etc/os-release to a Platform, or raise PlatformError naming the distribution."""
    rel = parse_os_release(text)
    distro, version = rel.get("ID", "unknown"), rel.get("VERSION_ID", "")
    major = version.split(".")[0]
    if distro == "debian" and major == "12":          # bookworm: python 3.11, postgresql 15, redis 7.0
        return _debian_like("debian", version, "3.11", pg="15", redis_version="7.0")
    if distro == "ubuntu" and version == "24.04":     # noble: python 3.12, postgresql 16, redis 7.0
        return _debian_like("ubuntu", version, "3.12", pg="16", redis_version="7.0")
    if distro in ("almalinux", "rocky", "rhel") and major == "9":
        return _el9(distro, version)
    pretty = rel.get("PRETTY_NAME", f"{distro} {version}".strip())
    why = f" ({_WHY[distro]})" if distro in _WHY else ""
    raise PlatformError(f"unsupported distribution: {pretty}{why}", "",
                        f"supported: {SUPPORTED}; reinstall the host with one of them")


def parse_os_release(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            try:
                out[key.strip()] = shlex.split(value)[0] if value.strip() else ""
            except ValueError:
                out[key.strip()] = value.strip().strip('"')
    return out


#: one remote script, one round trip: everything components need to know about the host itself
FACTS_SCRIPT = r"""
cat /etc/os-release 2>/dev/null
echo '@@facts'
echo "uid=$(id -u)"
echo "hostname=$(hostname)"
echo "virt=$(systemd-detect-virt -c 2>/dev/null || echo none)"
echo "nproc=$(nproc)"
echo "mem_kb=$(awk '/MemTotal/{print $2}' /proc/meminfo)"
for fw in ufw firewalld; do echo "active_$fw=$(systemctl is-active $fw 2>/dev/null | head -1)"; done
echo "selinux=$(getenforce 2>/dev/null || echo absent)"
ip -o -4 addr show 2>/dev/null | awk '{print "inet4=" $2 " " $4}'
"""


@dataclass(frozen=True)
class Facts:
    """One host's facts: its platform and what the facts script found."""

    platform: Platform
    hostname: str
    container: str
    nproc: int
    mem_kb: int
    active_firewalls: tuple
    selinux: str
    root: bool
    interfaces: dict = field(default_factory=dict, hash=False)   # IPv4 address -> interface carrying it

    @property
    def in_container(self) -> bool:
        return self.container not in ("", "none")


def parse_facts(output: str) -> Facts:
    os_release, _, rest = output.partition("@@facts")
    platform = platform_from_os_release(os_release)
    lines = rest.strip().splitlines()
    kv = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("inet4="))
    interfaces = {}
    for line in lines:
        if line.startswith("inet4=") and len(line.split()) == 2:
            name, cidr = line[len("inet4="):].split()
            interfaces[cidr.split("/")[0]] = name.split("@")[0]
    return Facts(
        platform=platform,
        hostname=kv.get("hostname", ""),
        container=kv.get("virt", "none"),
        nproc=int(kv.get("nproc") or 1),
        mem_kb=int(kv.get("mem_kb") or 0),
        active_firewalls=tuple(fw for fw in ("ufw", "firewalld") if kv.get(f"active_{fw}") == "active"),
        selinux=kv.get("selinux", "absent").lower(),
        root=kv.get("uid") == "0",
        interfaces=interfaces,
    )
