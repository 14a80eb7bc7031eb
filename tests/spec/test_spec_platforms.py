"""Spec tests: the complete planned `deploy` per platform, produced offline, with targeted assertions.

These tests do not run on a real host and open no connection: the real runner plans a `deploy --check`
against fresh hosts (fabfile/core/offline.py) whose facts come from the os-release samples in os-release/;
the inventory is hosts.yaml here (TEST-NET addresses, never contacted). Only Debian 12 is also deployed for
real (the lab); Ubuntu and EL9 are right by construction: a wrong package, path, unit or firewall command
shows up here, in the golden plans (test_spec_goldens.py) and in the family comparisons (test_spec_families.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fabfile.components import COMPONENTS, load_inventory
from fabfile.core.errors import PlatformError
from tests.spec.plans import deploy_plan, spec_plan

pytestmark = pytest.mark.spec

HERE = Path(__file__).resolve().parent
RELEASES = HERE / "os-release"
GOLDEN = HERE / "golden"
PLATFORMS = ["debian-12", "ubuntu-24.04", "almalinux-9", "rocky-9", "rhel-9"]
UNSUPPORTED = ["alpine-3.19", "centos-7", "debian-11", "ubuntu-20.04", "ubuntu-22.04"]
EL9 = ["almalinux-9", "rocky-9", "rhel-9"]


def os_release(name: str) -> str:
    return (RELEASES / name).read_text()


@pytest.fixture(scope="module")
def inv():
    return load_inventory(HERE / "hosts.yaml")


@pytest.fixture(scope="module")
def plans():
    return {name: spec_plan("hosts.yaml", name) for name in PLATFORMS}


def scripts(plan) -> str:
    return "\n".join(f"{s.label}\n{s.script}" for steps in plan.values() for s in steps)


@pytest.mark.parametrize("name", PLATFORMS)
def test_spec_plan_is_complete(plans, name):
    plan = plans[name]
    assert list(plan) == ["node1", "node2", "node3"]
    comps = {s.component for steps in plan.values() for s in steps}
    # monitoring is off in the spec inventory: it plans nothing on a fresh host (tests/spec/test_spec_monitoring.py);
    # etcd runs only in Patroni mode (tests/spec/test_spec_patroni.py), this layout has one postgres host
    # backup plans only with a repository (tests/spec/test_spec_backup.py)
    assert {c.name for c in COMPONENTS} - {"monitoring", "etcd", "backup"} <= comps and "monitoring" not in comps
    assert "etcd" not in comps
    text = scripts(plan)
    assert "192.0.2.11" in text and "<fernet_key>" in text
    # db migrate and the admin user run once, on the first airflow host
    assert [h for h, steps in plan.items() if any(s.label == "command db migrate" for s in steps)] == ["node1"]
    assert not re.search(r"^[A-Za-z0-9+/]{76}$", text, re.M), "base64 left in the readable plan"


@pytest.mark.parametrize("name", EL9)
def test_spec_el9_names(plans, name):
    plan = plans[name]
    text = scripts(plan)
    assert "dnf install" in text and "apt-get" not in text
    assert "python3.12 -m venv" in text and "python3.12-pip" in text
    assert "postgresql-setup --initdb" in text and "/var/lib/pgsql/data/pg_hba.conf" in text
    assert "install -d -o postgres -g postgres -m 700 /var/lib/pgsql/data/conf.d" in text
    assert "sed -i -E '/^#?include_dir/d' /var/lib/pgsql/data/postgresql.conf" in text
    assert "\nwrite /etc/systemd/system/redis.service.d/zz-airflow-ha.conf" in text   # after EL's limit.conf
    assert "systemctl restart redis\n" in text + "\n" and "systemctl restart redis-sentinel" in text
    assert "systemctl start chronyd" in text
    assert "write /etc/nginx/conf.d/airflow-ha.conf" in text and "sites-enabled" not in text
    assert "write /etc/nginx/nginx.conf" in text
    nginx_conf = next(s.script for s in plan["node1"] if s.label == "file /etc/nginx/nginx.conf")
    directives = [ln.strip() for ln in nginx_conf.splitlines()[1:] if not ln.strip().startswith("#")]
    assert "server {" not in directives, "EL's welcome server must not compete with our default_server"
    assert "include /etc/nginx/conf.d/*.conf;" in directives and "user nginx;" in directives
    assert "root:nginx" in text and "www-data" not in text
    assert "firewall-cmd" in text
    assert not any(s.label.startswith("command ufw") for steps in plan.values() for s in steps)
    assert "setsebool -P httpd_can_network_connect 1" in text
    assert "semanage port" not in text, "default ports are labelled by the policy already"
    assert "apache2-utils" not in text and "httpd-tools" not in text


@pytest.mark.parametrize("name", ["debian-12", "ubuntu-24.04"])
def test_spec_debian_family_names(plans, name):
    text = scripts(plans[name])
    pg = {"debian-12": "15", "ubuntu-24.04": "16"}[name]
    assert "apt-get" in text and "dnf" not in text
    assert f"/etc/postgresql/{pg}/main/pg_hba.conf" in text
    assert "systemctl restart redis-server" in text and "systemctl start chrony\n" in text + "\n"
    assert "ufw allow from 192.0.2.12 to any port" in text and "firewall-cmd" not in text
    assert "setsebool" not in text and "semanage" not in text
    assert "rm -rf /etc/nginx/sites-enabled/default" in text
    assert "sentinel resolve-hostnames no" in text      # Redis >= 6.2 on every supported platform


def test_spec_non_default_ports_get_selinux_labels(inv):
    import dataclasses
    ports = dataclasses.replace(inv.ports, redis=6380, sentinel=26380, postgres=5433)
    custom = dataclasses.replace(inv, settings=dataclasses.replace(inv.settings, ports=ports))
    text = scripts(deploy_plan(custom, os_release("rocky-9")))
    for port, type_ in ((6380, "redis_port_t"), (26380, "redis_port_t"), (5433, "postgresql_port_t")):
        assert f"semanage port -a -t {type_} -p tcp {port}" in text
    redis_steps = [s.label for s in deploy_plan(custom, os_release("rocky-9"))["node1"] if s.component == "redis"]
    assert redis_steps.index("command selinux port 6380") < redis_steps.index("service redis")


def test_spec_firewalld_per_host_on_debian(inv):
    import dataclasses
    hosts = dict(inv.hosts)
    hosts["node3"] = dataclasses.replace(hosts["node3"], vars={**hosts["node3"].vars, "firewall": "firewalld"})
    plan = deploy_plan(dataclasses.replace(inv, hosts=hosts), os_release("debian-12"))
    node3 = "\n".join(s.script for s in plan["node3"] if s.component == "firewall")
    node1 = "\n".join(s.script for s in plan["node1"] if s.component == "firewall")
    assert "firewall-cmd --permanent --zone=airflow-ha --add-source=192.0.2.11" in node3 and "ufw " not in node3
    assert "ufw allow" in node1 and "firewall-cmd" not in node1


def test_spec_ufw_refused_on_el9(inv):
    hosts = dict(inv.hosts)
    import dataclasses
    hosts["node1"] = dataclasses.replace(hosts["node1"], vars={**hosts["node1"].vars, "firewall": "ufw"})
    with pytest.raises(PlatformError, match="ufw is not packaged"):
        deploy_plan(dataclasses.replace(inv, hosts=hosts), os_release("almalinux-9"))


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_spec_unsupported_distro_is_one_clear_error(inv, name):
    with pytest.raises(PlatformError) as err:
        deploy_plan(inv, os_release(name))
    message = err.value.message
    assert message.startswith("unsupported distribution: ")
    assert "supported: Debian 12, Ubuntu 24.04, AlmaLinux/Rocky/RHEL 9" in message
    assert message.count("\n") == 1, "one message: what, then the fix"


def test_spec_ubuntu_2204_refused_for_its_python(inv):
    """Ubuntu 22.04's Python 3.10 has no shipped constraints file: refused before any host changes."""
    with pytest.raises(PlatformError, match=r"unsupported distribution: Ubuntu 22\.04.*Python 3\.10 has no shipped "
                                            r"constraints file"):
        deploy_plan(inv, os_release("ubuntu-22.04"))
    assert not (GOLDEN / "ubuntu-22.04.txt").exists()


def test_spec_python_mismatch_is_refused_before_any_change(inv):
    """A real run keeps cluster.python_version (the wheelhouse is built before hosts are reached)."""
    from fabfile import packages
    from fabfile.core.offline import fresh_run

    ctx = fresh_run(inv, os_release("almalinux-9")).context(inv.hosts["node1"])
    assert inv.settings.python_version == "3.11"
    with pytest.raises(PlatformError, match=r"python_version: '3\.12'"):
        packages.steps(ctx)   # the first component refuses, so nothing has changed yet
