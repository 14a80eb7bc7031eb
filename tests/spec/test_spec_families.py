"""Spec tests: one plan per distribution family, and assertions on exactly what differs between them.

The spec inventories (hosts.yaml: single database, hosts-patroni.yaml: Patroni, hosts-backup.yaml: a pgBackRest
host) are planned offline (tests/spec/plans.py) for Debian 12, Ubuntu 24.04 and EL9, and compared:
* Ubuntu 24.04 plans what Debian 12 plans, to the line, but for its Python (3.12, not 3.11: the constraints
  file and the install id that follows from it) and its PostgreSQL major (16, not 15);
* Rocky 9 and RHEL 9 plan exactly what AlmaLinux 9 plans;
* EL9 plans the same steps as Debian 12, in the same order, but for the steps listed in ONLY / ONLY_IN_LAYOUT
  (firewalld for ufw, SELinux, EL unit and file names, PostgreSQL's EL layout);
* inside shared steps: apt (with policy-rc.d) vs dnf, the Python interpreter and packages, and two firewalls
  that open the same ports to the same sources.
So Debian 12's and EL9's golden plans (test_spec_goldens.py) pin the other releases too.
"""

from __future__ import annotations

import re

import pytest

from fabfile.core.facts import platform_from_os_release
from fabfile.core.offline import format_plan
from tests.spec.plans import os_release, spec_plan

pytestmark = pytest.mark.spec

LAYOUTS = ["hosts.yaml", "hosts-patroni.yaml", "hosts-backup.yaml"]
DEBIAN, UBUNTU, EL9 = "debian-12", "ubuntu-24.04", "almalinux-9"

#: release -> (Python minor, PostgreSQL major of the Debian-family packages)
VERSIONS = {DEBIAN: ("3.11", "15"), UBUNTU: ("3.12", "16")}
#: how the PostgreSQL major appears in Debian-family names ({} = the major): paths of pg-common's
#: /etc/postgresql/<major>/main layout, the versioned server package, the <major>-main cluster's units and files
PG_NAMES = ("postgresql/{}/", "postgresql-{}", "{}-main", "--stop {} main")

#: steps only one family plans, in every layout: component -> step labels
ONLY = {
    "debian": {
        "packages": {"service chrony"},
        "firewall": {"packages ufw", "command ufw rules", "command ufw policy", "service ufw"},
        "redis": {"file /etc/systemd/system/redis-server.service.d/airflow-ha.conf", "service redis-server",
                  "file /etc/systemd/system/redis-sentinel.service.d/airflow-ha.conf"},
        "nginx": {"file /etc/nginx/sites-available/airflow-ha.conf", "link /etc/nginx/sites-enabled/airflow-ha.conf",
                  "absent /etc/nginx/sites-enabled/default"},
    },
    "rhel": {
        "packages": {"service chronyd"},
        "firewall": {"packages firewalld", "service firewalld", "command zone airflow-ha", "command zone public"},
        "redis": {"file /etc/systemd/system/redis.service.d/zz-airflow-ha.conf", "service redis",
                  "file /etc/systemd/system/redis-sentinel.service.d/zz-airflow-ha.conf"},
        "airflow": {"command selinux labels"},
        "nginx": {"file /etc/nginx/nginx.conf", "file /etc/nginx/conf.d/airflow-ha.conf",
                  "command selinux httpd_can_network_connect"},
        "keepalived": {"command selinux keepalived_connect_any"},
    },
}
SINGLE_DB = {
    "debian": {"postgres": {"file /etc/postgresql/15/main/conf.d/airflow-ha.conf",
                            "file /etc/postgresql/15/main/pg_hba.conf"}},
    "rhel": {"postgres": {"command initdb", "line include_dir", "directory /var/lib/pgsql/data/conf.d",
                          "file /var/lib/pgsql/data/conf.d/airflow-ha.conf", "file /var/lib/pgsql/data/pg_hba.conf"}},
}
#: pgBackRest's SSH key of the database host lives in the postgres user's home
BACKUP_SSH = {family: {"backup": {f"directory {home}/.ssh", *(f"file {home}/.ssh/{f}" for f in (
    "id_ed25519", "authorized_keys", "known_hosts"))}} for family, home in (
    ("debian", "/var/lib/postgresql"), ("rhel", "/var/lib/pgsql"))}
#: and the database's own, per layout
ONLY_IN_LAYOUT = {
    "hosts.yaml": SINGLE_DB,
    "hosts-backup.yaml": {f: {**SINGLE_DB[f], **BACKUP_SSH[f]} for f in SINGLE_DB},
    "hosts-patroni.yaml": {
        "debian": {"packages": {"line createcluster.conf"}, "etcd": {"file /etc/default/etcd"},
                   "postgres": {"command drop empty cluster", "directory /etc/postgresql/15/main",
                                "command postgresql.base.conf", "file /etc/postgresql/15/main/start.conf",
                                "file /etc/patroni/15-main.yml",
                                "file /etc/systemd/system/patroni@15-main.service.d/airflow-ha.conf",
                                "command stop postgresql@15-main", "service patroni@15-main"}},
        "rhel": {"etcd": {"file /etc/etcd/etcd.conf"},
                 "postgres": {"file /etc/patroni/patroni.yml", "file /etc/systemd/system/patroni.service.d/airflow-ha.conf",
                              "command stop postgresql-15", "service patroni"}},
    },
}

#: release -> (venv interpreter, its packages, packages of the other families' Python that must not appear)
PYTHON = {
    DEBIAN: ("python3", ("python3", "python3-venv"), ("python3.12", "python3.12-pip")),
    UBUNTU: ("python3", ("python3", "python3-venv"), ("python3.12", "python3.12-pip")),
    EL9: ("python3.12", ("python3.12", "python3.12-pip"), ("python3", "python3-venv")),
}


def steps_of(plan, host: str, component: str | None = None) -> list:
    return [s for s in plan[host] if component in (None, s.component)]


def install_id(plan) -> str:
    ids = set(re.findall(r"echo ([0-9a-f]{64}) > /opt/airflow/venvs/[^/\s]+/\.airflow-ha-install",
                         "\n".join(s.script for steps in plan.values() for s in steps)))
    assert len(ids) == 1, ids
    return ids.pop()


def as_ubuntu(text: str, debian_plan, ubuntu_plan) -> str:
    """Debian 12's plan text with Ubuntu 24.04's names: its Python, install id and PostgreSQL major."""
    (py_d, pg_d), (py_u, pg_u) = VERSIONS[DEBIAN], VERSIONS[UBUNTU]
    pairs = {f"py{py_d}": f"py{py_u}", install_id(debian_plan): install_id(ubuntu_plan)}
    pairs.update({t.format(pg_d): t.format(pg_u) for t in PG_NAMES})
    pattern = re.compile("|".join(re.escape(k) for k in sorted(pairs, key=len, reverse=True)))
    return pattern.sub(lambda m: pairs[m.group(0)], text)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ubuntu_plans_what_debian_plans_with_its_python_and_postgresql(layout):
    debian, ubuntu = spec_plan(layout, DEBIAN), spec_plan(layout, UBUNTU)
    assert install_id(debian) != install_id(ubuntu), "a venv built for Python 3.11 must not pass for 3.12's"
    for host in debian:
        want = as_ubuntu(format_plan({host: debian[host]}, "plan"), debian, ubuntu).splitlines()
        assert format_plan({host: ubuntu[host]}, "plan").splitlines() == want, host


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("release", ["rocky-9", "rhel-9"])
def test_every_el9_rebuild_plans_what_almalinux_plans(layout, release):
    assert platform_from_os_release(os_release(release)).family == "rhel"
    assert spec_plan(layout, release) == spec_plan(layout, EL9)


def only_in(plan, other, host: str) -> dict[str, set[str]]:
    """component -> labels of the steps `plan` has on `host` and `other` has not."""
    theirs = {(s.component, s.label) for s in other[host]}
    out: dict[str, set[str]] = {}
    for s in plan[host]:
        if (s.component, s.label) not in theirs:
            out.setdefault(s.component, set()).add(s.label)
    return out


def expected_only(family: str, layout: str) -> dict[str, set[str]]:
    out = {c: set(labels) for c, labels in ONLY[family].items()}
    for c, labels in ONLY_IN_LAYOUT[layout][family].items():
        out.setdefault(c, set()).update(labels)
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_el9_plans_debians_steps_but_for_its_own(layout):
    debian, el9 = spec_plan(layout, DEBIAN), spec_plan(layout, EL9)
    assert list(debian) == list(el9)
    got = {"debian": {}, "rhel": {}}
    for host in debian:
        for family, (mine, theirs) in {"debian": (debian, el9), "rhel": (el9, debian)}.items():
            for c, labels in only_in(mine, theirs, host).items():
                got[family].setdefault(c, set()).update(labels)
        # the shared steps come in the same order
        shared = {(s.component, s.label) for s in debian[host]} & {(s.component, s.label) for s in el9[host]}
        assert [(s.component, s.label) for s in debian[host] if (s.component, s.label) in shared] == \
               [(s.component, s.label) for s in el9[host] if (s.component, s.label) in shared], host
    assert got == {f: expected_only(f, layout) for f in got}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("release", [DEBIAN, UBUNTU, EL9])
def test_package_manager_per_family(layout, release):
    """apt: every install under a policy-rc.d (no daemon starts before its config and firewall) but the
    firewall's own package; dnf: one plain `dnf install` (RPMs never start services)."""
    plat = platform_from_os_release(os_release(release))
    plan = spec_plan(layout, release)
    installs = [s for steps in plan.values() for s in steps if s.label.startswith("packages ")]
    assert installs and all(s.desc.startswith("install ") for s in installs)
    for s in installs:
        names = s.desc.removeprefix("install ")
        if plat.pkg == "dnf":
            assert s.script == f"timeout 1200 dnf install -y -q {names}", s.label
        else:
            lines = s.script.splitlines()
            assert lines[0] == "export DEBIAN_FRONTEND=noninteractive" and "dnf" not in s.script
            assert lines[-1].startswith("timeout 1200 apt-get install -y -q --no-install-recommends ")
            assert lines[-1].endswith(f" -o Dpkg::Options::=--force-confold {names}")
            assert ("policy-rc.d" in s.script) == (s.component != "firewall"), s.label


@pytest.mark.parametrize("release", [DEBIAN, UBUNTU, EL9])
def test_python_per_release(release):
    """The venv's interpreter and packages are the platform's, and the constraints and wheelhouse are built
    for its Python (cluster.python_version follows it in the spec plans)."""
    plat = platform_from_os_release(os_release(release))
    python, wanted, foreign = PYTHON[release]
    minor = VERSIONS.get(release, ("3.12",))[0]
    assert (plat.python, plat.python_version) == (python, minor)
    plan = spec_plan("hosts-patroni.yaml", release)
    os_packages = next(s for s in plan["node1"] if s.label == "packages os packages").desc.split()
    assert set(wanted) <= set(os_packages) and not set(foreign) & set(os_packages)
    text = "\n".join(s.script for steps in plan.values() for s in steps)
    assert f"\n    {python} -m venv --without-pip /opt/airflow/venvs/3.3.2\n" in format_plan(plan, "")
    assert f"<constraints-3.3.2-py{minor}.txt>" in text
    other = {"3.11", "3.12"} - {minor}
    assert not any(f"py{v}" in text or f"python{v}" in text for v in other)


def ufw_rules(plan, host) -> tuple[set, set, set, set]:
    """(public ports, peer sources, peer ports, VRRP peers) as the ufw rules open them."""
    script = next(s.script for s in plan[host] if s.label == "command ufw rules")
    public, sources, ports, vrrp = set(), set(), set(), set()
    for line in script.splitlines():
        if m := re.fullmatch(r"ufw allow (\d+)/tcp >/dev/null", line):
            public.add(int(m.group(1)))
        elif m := re.fullmatch(r"ufw allow from (\S+) to any port ([\d,]+) proto tcp >/dev/null", line):
            sources.add(m.group(1))
            ports.add(frozenset(int(p) for p in m.group(2).split(",")))
        elif m := re.fullmatch(r"ufw allow from (\S+) proto vrrp >/dev/null", line):
            vrrp.add(m.group(1))
    assert len(ports) == 1, "every peer source gets the same ports"
    return public, sources, set(ports.pop()), vrrp


def firewalld_rules(plan, host) -> tuple[set, set, set, set]:
    """The same, as the firewalld zones open them (ssh is a service in the public zone, 22 a port in ours)."""
    zone = next(s.script for s in plan[host] if s.label == "command zone airflow-ha")
    public_zone = next(s.script for s in plan[host] if s.label == "command zone public")
    sources = set(re.findall(r"--zone=airflow-ha --add-source=(\S+)", zone))
    ports = {int(p) for p in re.findall(r"--zone=airflow-ha --add-port=(\d+)/tcp", zone)}
    vrrp = set(re.findall(r'source address="([^"]+)" protocol value="vrrp" accept', zone))
    public = {int(p) for p in re.findall(r"--zone=public --add-port=(\d+)/tcp", public_zone)}
    assert re.findall(r"--zone=public --add-service=(\S+)", public_zone) == ["ssh"]
    return public | {22}, sources, ports, vrrp


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ufw_and_firewalld_open_the_same_ports_to_the_same_hosts(layout):
    debian, el9 = spec_plan(layout, DEBIAN), spec_plan(layout, EL9)
    for host in debian:
        public, sources, peer_ports, vrrp = ufw_rules(debian, host)
        fw_public, fw_sources, fw_ports, fw_vrrp = firewalld_rules(el9, host)
        assert (fw_public, fw_sources, fw_vrrp) == (public, sources, vrrp), host
        # ufw rules add up (a peer reaches the public ports too); the peers' zone lists them all
        assert fw_ports == peer_ports | public, host
        nginx = any(s.component == "nginx" for s in debian[host])
        assert public == ({22, 80} if nginx else {22}), host


@pytest.mark.parametrize("layout", LAYOUTS)
def test_selinux_steps_only_on_el9(layout):
    for release in (DEBIAN, UBUNTU):
        text = format_plan(spec_plan(layout, release), "")
        assert "selinux" not in text.lower() and "setsebool" not in text and "restorecon" not in text
    el9 = spec_plan(layout, EL9)
    per_component = {"airflow": "command selinux labels", "nginx": "command selinux httpd_can_network_connect",
                     "keepalived": "command selinux keepalived_connect_any"}
    for host, steps in el9.items():
        runs = {s.component for s in steps}
        labels = [s.label for s in steps if "selinux" in s.label]
        assert labels == [label for c, label in per_component.items() if c in runs], host
        for s in steps:
            if s.label.startswith("command selinux ") and s.label != "command selinux labels":
                assert f"setsebool -P {s.label.split()[-1]} 1" in s.script, s.label
