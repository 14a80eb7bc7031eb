"""Patroni mode: inventory rules (etcd default/odd count, timing), the conversion plan, EL9 repositories,
and the layouts shipped with the repository."""

from __future__ import annotations

import textwrap

import pytest

from fabfile import patroni, pgsql, spof
from fabfile.components import load_inventory
from fabfile.core.errors import InventoryError, UserError

PATRONI = """
hosts:
  node1: {roles: [redis, sentinel, postgres, api_server, scheduler, dag_processor, triggerer, worker, nginx]}
  node2: {roles: [redis, sentinel, postgres, api_server, scheduler, worker, nginx]}
  node3: {roles: [redis, sentinel, postgres, worker, flower]}
"""


def load(tmp_path, text):
    p = tmp_path / "hosts.yaml"
    p.write_text(textwrap.dedent(text))
    return load_inventory(p)


def test_etcd_follows_the_sentinels_when_not_named(tmp_path):
    inv = load(tmp_path, PATRONI)
    assert pgsql.patroni_mode(inv) and [h.name for h in inv.with_role("etcd")] == ["node1", "node2", "node3"]
    assert "patroni_api" in inv.registry.listening(inv, inv.hosts["node1"])
    assert {"etcd_client", "etcd_peer"} <= set(inv.registry.listening(inv, inv.hosts["node3"]))


def test_named_etcd_hosts_win(tmp_path):
    inv = load(tmp_path, PATRONI.replace("node3: {roles: [", "node3: {roles: [etcd, ")
               .replace("node2: {roles: [", "node2: {roles: [etcd, ").replace("node1: {roles: [", "node1: {roles: [etcd, "))
    assert len(inv.with_role("etcd")) == 3


@pytest.mark.parametrize("text, message, where", [
    (PATRONI.replace("node1: {roles: [", "node1: {roles: [etcd, ").replace("node2: {roles: [", "node2: {roles: [etcd, "),
     "2 etcd hosts", "hosts"),
    (PATRONI.replace("node1: {roles: [", "node1: {roles: [etcd, ").replace("postgres, ", "", 2),
     "'etcd' role but PostgreSQL runs on one host", "hosts"),
    ("cluster:\n  postgres: {ttl: 25}\n" + PATRONI, "loop_wait + 2*retry_timeout <= ttl", "cluster.postgres"),
])
def test_bad_patroni_layouts_are_one_clear_error(tmp_path, text, message, where):
    with pytest.raises(InventoryError) as err:
        load(tmp_path, text)
    assert message in err.value.message and where in err.value.message


def test_patroni_without_any_etcd_or_sentinel_host(tmp_path):
    # no sentinel host means the sentinel check fails first: an etcd-less Patroni layout is still refused
    text = PATRONI.replace("redis, sentinel, ", "redis, ")
    with pytest.raises(InventoryError):
        load(tmp_path, text)


def test_single_database_is_unchanged(tmp_path):
    inv = load(tmp_path, PATRONI.replace("postgres, ", "", 2))
    assert not pgsql.patroni_mode(inv) and not inv.with_role("etcd")
    assert "database: 1 host (node3)" in spof.single_points(inv)


def test_patroni_layout_has_no_database_spof(tmp_path):
    points = spof.single_points(load(tmp_path, PATRONI))
    assert not any(p.startswith(("database", "etcd")) for p in points)


def test_shipped_layouts_load():
    assert pgsql.patroni_mode(load_inventory("hosts.yaml"))  # the default: no single point of failure
    assert not pgsql.patroni_mode(load_inventory("hosts-single.yaml"))  # one database: the conversion, small setups


def test_conversion_plan_keeps_the_data_host(tmp_path):
    inv = load(tmp_path, PATRONI)
    plan = patroni.conversion_plan(inv, {"node1": {"patroni": "no", "data": "no"},
                                         "node2": {"patroni": "no", "data": "no"},
                                         "node3": {"patroni": "no", "data": "yes", "old": "active"}})
    assert plan["seed"] == "node3"
    assert "node3 keeps its data dir and becomes the leader" in plan["lines"][0]
    assert "node1, node2 join as replicas" in plan["lines"][0] and "DOWNTIME" in plan["lines"][1]


def test_fresh_cluster_is_bootstrapped_by_the_first_host(tmp_path):
    inv = load(tmp_path, PATRONI)
    plan = patroni.conversion_plan(inv, {n: {"patroni": "no", "data": "no"} for n in ("node1", "node2", "node3")})
    assert plan["seed"] == "node1" and "node2, node3 join as replicas" in plan["lines"][0]


def test_running_patroni_means_no_plan(tmp_path):
    inv = load(tmp_path, PATRONI)
    plan = patroni.conversion_plan(inv, {"node1": {"patroni": "yes", "data": "yes"}, "node3": {"data": "yes"}})
    assert plan == {"seed": None, "lines": []}


def test_two_databases_are_refused(tmp_path):
    inv = load(tmp_path, PATRONI)
    with pytest.raises(UserError, match="node1 and node3 both hold a PostgreSQL database"):
        patroni.conversion_plan(inv, {"node1": {"data": "yes"}, "node3": {"data": "yes"}})


def test_missing_el9_repositories_are_named():
    assert patroni.missing_repos("appstream\nbaseos\npgdg15\nepel\n") == [
        "pgdg-rhel9-extras (patroni, patroni-etcd, etcd (PGDG extras))"]
    assert patroni.missing_repos("pgdg15\npgdg-rhel9-extras\nepel\n") == []


def test_members_parses_cluster_json():
    body = '{"members": [{"name": "node1", "role": "leader", "state": "running"}]}'
    assert patroni.members(body)[0]["role"] == "leader" and patroni.members("garbage") == []


class _LocalRemote:
    """Runs a script in local sh with a fake `curl` that answers 200 only for `primary_url`."""

    def __init__(self, bin_dir, log):
        self.bin_dir, self.log = bin_dir, log

    def sh(self, script, timeout=None):
        import os
        import subprocess
        from types import SimpleNamespace
        self.log.append(script)
        env = {**os.environ, "PATH": f"{self.bin_dir}:{os.environ['PATH']}"}
        res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=timeout, check=False)
        return SimpleNamespace(out=res.stdout, ok=res.returncode == 0)


@pytest.mark.parametrize("primary, dead, expected", [("node2", (), "node2"), ("node1", ("node1",), "node1"),
                                                      (None, (), None)])
def test_leader_is_one_round_trip_from_the_first_reachable_member(tmp_path, primary, dead, expected):
    from types import SimpleNamespace
    inv = load(tmp_path, PATRONI)
    addresses = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13"}
    url = f"http://{addresses[primary]}:{inv.ports.patroni_api}/primary" if primary else "none"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(f'#!/bin/sh\nfor a; do last="$a"; done\n[ "$last" = "{url}" ] && printf 200 '
                                  "|| printf 503\n")
    (bin_dir / "curl").chmod(0o755)
    log, asked = [], []

    def remote(name):
        asked.append(name)
        if name in dead:
            raise OSError(f"{name} unreachable")
        return _LocalRemote(bin_dir, log)
    run = SimpleNamespace(inv=inv, addresses=addresses, failed={}, remote=remote)
    host = patroni.leader(run)
    assert (host.name if host else None) == expected
    assert len(log) == 1, "one round trip"
    assert asked == [*dead, next(n for n in addresses if n not in dead)]
