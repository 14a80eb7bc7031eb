"""Facts: what a host is (distribution → platform), gathered in one round trip per host per run.

A Platform is the table of everything that differs between distributions: package manager, firewall,
package names, service names, config paths, daemon users. Components read it; they never test the
distribution themselves. Sources: Debian/Ubuntu package pages, EL9 (AlmaLinux/Rocky) package lists.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .errors import PlatformError

SUPPORTED = "Debian 12, Ubuntu 22.04/24.04, AlmaLinux/Rocky/RHEL 9"


@dataclass(frozen=True)
class Platform:
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

    @property
    def name(self) -> str:
        return f"{self.distro} {self.version}"


def _debian_like(distro, version, python="python3", pg="15", extra=None) -> Platform:
    paths = {
        "redis_conf": "/etc/redis/redis.conf",
        "sentinel_conf": "/etc/redis/sentinel.conf",
        "pg_conf_dir": f"/etc/postgresql/{pg}/main",
        "pg_hba": f"/etc/postgresql/{pg}/main/pg_hba.conf",
        "pg_include": f"/etc/postgresql/{pg}/main/conf.d/airflow-ha.conf",
        "pg_data": f"/var/lib/postgresql/{pg}/main",
        "nginx_site": "/etc/nginx/sites-available/airflow-ha.conf",
        "nginx_site_link": "/etc/nginx/sites-enabled/airflow-ha.conf",
        "nginx_default_site": "/etc/nginx/sites-enabled/default",
        "apt_proxy": "/etc/apt/apt.conf.d/80airflow-ha-proxy",
    }
    return Platform(
        family="debian", distro=distro, version=version, pkg="apt", firewall="ufw", python=python,
        packages={
            "base": ["ca-certificates", "curl", "sudo", "rsync", "logrotate", "acl", "tar"],
            "python": [python, "python3-venv"],
            "timesync": ["chrony"],
            "redis": ["redis-server", "redis-tools"],
            "sentinel": ["redis-sentinel"],
            "postgres": ["postgresql", "postgresql-client"],
            "postgres_client": ["postgresql-client"],
            "nginx": ["nginx", "apache2-utils", "openssl"],
            "ufw": ["ufw"],
            "firewalld": ["firewalld"],
            **(extra or {}),
        },
        units={"redis": "redis-server", "sentinel": "redis-sentinel", "postgres": "postgresql",
               "nginx": "nginx", "timesync": "chrony", "ufw": "ufw", "firewalld": "firewalld"},
        paths=paths,
        users={"redis": "redis", "postgres": "postgres", "nginx": "www-data"},
    )


def _el9(distro, version) -> Platform:
    return Platform(
        family="rhel", distro=distro, version=version, pkg="dnf", firewall="firewalld", python="python3.12",
        packages={
            "base": ["ca-certificates", "curl", "sudo", "rsync", "logrotate", "acl", "tar",
                     "policycoreutils-python-utils"],
            "python": ["python3.12", "python3.12-pip"],
            "timesync": ["chrony"],
            "redis": ["redis"],
            "sentinel": ["redis"],
            "postgres": ["postgresql-server", "postgresql"],
            "postgres_client": ["postgresql"],
            "nginx": ["nginx", "httpd-tools", "openssl"],
            "ufw": ["ufw"],
            "firewalld": ["firewalld"],
        },
        units={"redis": "redis", "sentinel": "redis-sentinel", "postgres": "postgresql",
               "nginx": "nginx", "timesync": "chronyd", "ufw": "ufw", "firewalld": "firewalld"},
        paths={
            "redis_conf": "/etc/redis/redis.conf",
            "sentinel_conf": "/etc/redis/sentinel.conf",
            "pg_conf_dir": "/var/lib/pgsql/data",
            "pg_hba": "/var/lib/pgsql/data/pg_hba.conf",
            "pg_include": "/var/lib/pgsql/data/conf.d/airflow-ha.conf",
            "pg_data": "/var/lib/pgsql/data",
            "nginx_site": "/etc/nginx/conf.d/airflow-ha.conf",
            "nginx_site_link": None,
            "nginx_default_site": None,
            "apt_proxy": None,
            "dnf_conf": "/etc/dnf/dnf.conf",
        },
        users={"redis": "redis", "postgres": "postgres", "nginx": "nginx"},
        selinux=True,
    )


def platform_from_os_release(text: str) -> Platform:
    """Map /etc/os-release to a Platform, or raise PlatformError naming the distribution."""
    rel = parse_os_release(text)
    distro, version = rel.get("ID", "unknown"), rel.get("VERSION_ID", "")
    major = version.split(".")[0]
    if distro == "debian" and major == "12":
        return _debian_like("debian", version)
    if distro == "ubuntu" and version == "24.04":
        return _debian_like("ubuntu", version, python="python3", pg="16")
    if distro == "ubuntu" and version == "22.04":
        # 22.04 ships python 3.10 (Airflow 3 supports >= 3.10) and PostgreSQL 14
        return _debian_like("ubuntu", version, python="python3", pg="14")
    if distro in ("almalinux", "rocky", "rhel") and major == "9":
        return _el9(distro, version)
    pretty = rel.get("PRETTY_NAME", f"{distro} {version}".strip())
    raise PlatformError(f"unsupported distribution: {pretty}", "",
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
"""


@dataclass(frozen=True)
class Facts:
    platform: Platform
    hostname: str
    container: str
    nproc: int
    mem_kb: int
    active_firewalls: tuple
    selinux: str
    root: bool

    @property
    def in_container(self) -> bool:
        return self.container not in ("", "none")


def parse_facts(output: str) -> Facts:
    os_release, _, rest = output.partition("@@facts")
    platform = platform_from_os_release(os_release)
    kv = dict(line.split("=", 1) for line in rest.strip().splitlines() if "=" in line)
    return Facts(
        platform=platform,
        hostname=kv.get("hostname", ""),
        container=kv.get("virt", "none"),
        nproc=int(kv.get("nproc") or 1),
        mem_kb=int(kv.get("mem_kb") or 0),
        active_firewalls=tuple(fw for fw in ("ufw", "firewalld") if kv.get(f"active_{fw}") == "active"),
        selinux=kv.get("selinux", "absent").lower(),
        root=kv.get("uid") == "0",
    )
