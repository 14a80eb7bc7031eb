"""Facts: what a host is (distribution → platform), gathered in one round trip per host per run.

A Platform says what a distribution is: family, package manager, default firewall, Python, SELinux. What
each component's packages, units, paths and users are called there is that component's own table
(`names(platform)` in its module, Ansible's vars/<os>.yml); components test the family, never the
distribution. Every entry, with its source, is listed in docs/platforms.md; the spec tests (tests/spec)
print the complete plan per platform so a wrong name shows up in a reviewed golden file.

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
    """What a distribution is: family, package manager, default firewall, Python, SELinux.

    What a component's packages, units, paths and users are called on it lives next to that component
    (its `names(platform)`), not here: core names no component.
    """

    family: str            # debian | rhel
    distro: str            # os-release ID
    version: str           # os-release VERSION_ID
    pkg: str               # apt | dnf
    firewall: str          # default firewall: ufw | firewalld
    python: str            # interpreter for the Airflow venv
    selinux: bool = False
    python_version: str = ""   # major.minor of `python` (must match cluster.python_version)

    @property
    def name(self) -> str:
        return f"{self.distro} {self.version}"


def _debian_like(distro: str, version: str, python_version: str) -> Platform:
    return Platform(family="debian", distro=distro, version=version, pkg="apt", firewall="ufw", python="python3",
                    python_version=python_version)


def _el9(distro: str, version: str) -> Platform:
    """AlmaLinux/Rocky/RHEL 9: python3.12 from AppStream since 9.4 (the default 3.9 is too old for Airflow 3)."""
    return Platform(family="rhel", distro=distro, version=version, pkg="dnf", firewall="firewalld",
                    python="python3.12", selinux=True, python_version="3.12")


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
    if distro == "debian" and major == "12":          # bookworm: python 3.11
        return _debian_like("debian", version, "3.11")
    if distro == "ubuntu" and version == "24.04":     # noble: python 3.12
        return _debian_like("ubuntu", version, "3.12")
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
        if line.startswith("inet4=") and len(line.split()) == 2:  # noqa: PLR2004 - inet4=<interface> <cidr>
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
