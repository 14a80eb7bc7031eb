"""`inv decommission` refuses, before anything changes, a removal the cluster cannot survive (issue #13)."""

from __future__ import annotations

import pytest

from fabfile import decommission, pgsql
from fabfile.components import load_inventory as load
from fabfile.core.errors import PreconditionError


def _inv(tmp_path, extra=""):
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n"
                    "  node1: {roles: [redis, sentinel, api_server, scheduler, triggerer, worker, nginx]}\n"
                    "  node2: {roles: [redis, sentinel, api_server, scheduler, dag_processor, triggerer, worker, nginx]}\n"
                    "  node3: {roles: [redis, sentinel, postgres, worker, flower, nginx]}\n" + extra)
    return load(path)


def test_database_host_is_refused(tmp_path):
    with pytest.raises(PreconditionError, match="cannot decommission node3: without it, no host has the 'postgres'"):
        decommission.without(_inv(tmp_path), ["node3"])


def test_leaving_an_even_number_of_sentinels_is_refused(tmp_path):
    with pytest.raises(PreconditionError, match="2 sentinel hosts"):
        decommission.without(_inv(tmp_path), ["node1"])


def test_a_worker_only_host_can_go(tmp_path):
    rest = decommission.without(_inv(tmp_path, "  node4: {roles: [worker]}\n"), ["node4"])
    assert list(rest.hosts) == ["node1", "node2", "node3"]


def test_two_of_five_sentinel_hosts_leave_together_not_one_by_one(tmp_path):
    five = _inv(tmp_path, "  node4: {roles: [redis, sentinel, worker, nginx]}\n  node5: {roles: [redis, sentinel]}\n")
    with pytest.raises(PreconditionError, match=r"cannot decommission node5: without it, .*4 sentinel hosts"):
        decommission.without(five, ["node5"])
    assert list(decommission.without(five, ["node4", "node5"]).hosts) == ["node1", "node2", "node3"]


def _patroni(tmp_path, extra=""):
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n"
                    "  node1: {roles: [redis, sentinel, postgres, api_server, scheduler, triggerer, worker, nginx]}\n"
                    "  node2: {roles: [redis, sentinel, postgres, api_server, scheduler, dag_processor, worker, nginx]}\n"
                    "  node3: {roles: [redis, sentinel, postgres, worker, flower, nginx]}\n" + extra)
    return load(path)


def test_patroni_member_is_refused_even_when_the_rest_would_be_valid(tmp_path):
    """4 postgres hosts -> 3 would still validate; the member is refused: its Patroni/etcd stay untouched."""
    inv = _patroni(tmp_path, "  node4: {roles: [postgres, worker]}\n")
    with pytest.raises(PreconditionError, match=r"node4 \(postgres\) is a member of the Patroni/etcd cluster"):
        decommission.without(inv, ["node4"])


def test_patroni_etcd_member_is_refused(tmp_path):
    inv = _patroni(tmp_path, "  node4: {roles: [redis, sentinel, worker]}\n  node5: {roles: [redis, sentinel]}\n")
    assert [h.name for h in inv.with_role("etcd")] == ["node1", "node2", "node3", "node4", "node5"]
    with pytest.raises(PreconditionError, match=r"node4 \(etcd\); node5 \(etcd\) are members"):
        decommission.without(inv, ["node4", "node5"])


def test_patroni_layout_a_worker_only_host_can_go(tmp_path):
    rest = decommission.without(_patroni(tmp_path, "  node4: {roles: [worker]}\n"), ["node4"])
    assert list(rest.hosts) == ["node1", "node2", "node3"] and pgsql.patroni_mode(rest)


def test_shipped_default_refuses_every_database_host():
    for name in ("node1", "node2", "node3"):
        with pytest.raises(PreconditionError, match="Patroni/etcd cluster"):
            decommission.without(load("hosts.yaml"), [name])
