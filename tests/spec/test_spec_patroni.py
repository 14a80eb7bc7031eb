"""Spec tests of the no-single-point layout (tests/spec/hosts-patroni.yaml, the default hosts.yaml's layout):
PostgreSQL under Patroni on 3 hosts, etcd on the Sentinel hosts. Targeted assertions on what a wrong name
would break; the full plans are golden files (test_spec_goldens.py: Debian 12 and EL9; Ubuntu 24.04 is
compared with Debian 12 in test_spec_families.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabfile import pgsql
from fabfile.components import load_inventory
from tests.spec.plans import spec_plan

pytestmark = pytest.mark.spec

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def inv():
    return load_inventory(HERE / "hosts-patroni.yaml")


@pytest.fixture(scope="module")
def plans():
    return {name: spec_plan("hosts-patroni.yaml", name) for name in ("debian-12", "ubuntu-24.04", "almalinux-9")}


def text(plan, host=None, component=None) -> str:
    return "\n".join(f"{s.label}\n{s.script}" for h, steps in plan.items() if host in (None, h)
                     for s in steps if component in (None, s.component))


def test_etcd_defaults_to_the_sentinel_hosts(inv):
    assert pgsql.patroni_mode(inv) and [h.name for h in inv.with_role("etcd")] == ["node1", "node2", "node3"]


def test_debian_patroni_names(plans):
    plan = plans["debian-12"]
    t = text(plan)
    assert "postgresql-15 patroni python3-etcd" in t and "etcd-server etcd-client" in t
    assert "write /etc/patroni/15-main.yml (postgres:postgres 600)" in t
    assert "systemctl restart patroni@15-main" in t
    assert "write /etc/default/etcd" in t and 'ETCD_DATA_DIR="/var/lib/etcd/airflow-ha"' in t
    assert "create_main_cluster = false" in t and "manual" in text(plan, "node1", "postgres")
    assert "_URLS=\"http://0.0.0.0" not in text(plan, component="etcd")
    assert "etcd3:" in t and "zookeeper" not in t
    # peer-only ports: etcd client/peer and Patroni's REST API appear only in peer rules
    assert "ufw allow from 192.0.2.12 to any port 2379,2380,5432,5555,6379,8008,8080,8793,26379 proto tcp" in t
    assert "ufw allow 2379" not in t and "ufw allow 8008" not in t


def test_ubuntu_patroni_names(plans):
    """Ubuntu 24.04 (noble, universe): postgresql-16, patroni 3.2, python3-etcd, etcd-server/-client 3.4."""
    plan = plans["ubuntu-24.04"]
    t = text(plan)
    assert "postgresql-16 patroni python3-etcd etcd-server etcd-client" in t
    assert "postgresql-15" not in t and " postgresql patroni" not in t      # the major is pinned
    assert "write /etc/patroni/16-main.yml (postgres:postgres 600)" in t
    assert "systemctl restart patroni@16-main" in t and "systemctl enable patroni@16-main" in t
    assert "systemctl disable --now postgresql@16-main" in t
    for key, want in (("data_dir", "/var/lib/postgresql/16/main"), ("bin_dir", "/usr/lib/postgresql/16/bin"),
                      ("config_dir", "/etc/postgresql/16/main"), ("pgpass", "/var/lib/postgresql/16-main.pgpass")):
        assert f"  {key}: {want}\n" in t, key
    assert "write /etc/postgresql/16/main/start.conf" in t and "create_main_cluster = false" in t
    assert "write /etc/default/etcd" in t and 'ETCD_DATA_DIR="/var/lib/etcd/airflow-ha"' in t
    assert "/etc/systemd/system/etcd.service.d/airflow-ha.conf" in t
    assert "ufw allow from 192.0.2.12 to any port 2379,2380,5432,5555,6379,8008,8080,8793,26379 proto tcp" in t
    assert "ufw allow 2379" not in t and "ufw allow 8008" not in t
    assert "/15/" not in text(plan, component="postgres")


def test_el9_patroni_names(plans):
    t = text(plans["almalinux-9"])
    assert "postgresql15-server postgresql15 patroni patroni-etcd" in t and "dnf install -y -q etcd" in t
    assert "write /etc/patroni/patroni.yml (postgres:postgres 600)" in t and "systemctl restart patroni\n" in t
    assert "data_dir: /var/lib/pgsql/15/data" in t and "bin_dir: /usr/pgsql-15/bin" in t
    assert "write /etc/etcd/etcd.conf" in t
    assert "postgresql-setup --initdb" not in t and "pg_dropcluster" not in t
    assert "--add-port=8008/tcp" in t and "--add-port=2379/tcp" in t


def test_only_the_seed_bootstraps(plans):
    plan = plans["debian-12"]
    assert "command conversion roles" in text(plan, "node1", "postgres")
    assert "command wait for leader" not in text(plan, "node1", "postgres")
    for host in ("node2", "node3"):
        assert "command wait for leader" in text(plan, host, "postgres")


def test_airflow_uses_the_multi_host_url(plans):
    env = text(plans["debian-12"], "node1", "airflow")
    url = ("postgresql+psycopg2://airflow:%3Cpostgres_password%3E@/airflow?host=192.0.2.11:5432&host=192.0.2.12:5432"
           "&host=192.0.2.13:5432&target_session_attrs=read-write&connect_timeout=3&keepalives=1")
    assert f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN='{url}" in env
    assert f"AIRFLOW__CELERY__RESULT_BACKEND='db+{url}" in env
    assert "psql 'host=192.0.2.11,192.0.2.12,192.0.2.13 port=5432 user=airflow dbname=airflow " \
           "target_session_attrs=read-write' -tA" in env


def test_patroni_secrets_never_in_plain_plan(plans):
    t = text(plans["debian-12"])
    for key in ("patroni_superuser_password", "patroni_replication_password", "patroni_rewind_password",
                "patroni_api_password"):
        assert f"<{key}>" in t   # placeholders: the real values go only into 0600 files
