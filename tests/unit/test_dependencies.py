"""A -H subset is refused up front when what it depends on is neither selected nor up (issue #20, item 11)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fabfile import airflow, dependencies, nginx, services
from fabfile.components import load_inventory as load
from fabfile.core.errors import UserError


@pytest.fixture
def fake(monkeypatch):
    answers: dict = {}
    probed: list = []

    def is_up(run, host, role):
        probed.append((host.name, role))
        return answers.get(host.name, "")
    monkeypatch.setattr(dependencies, "_is_up", is_up)
    inv = load("hosts-single.yaml")    # one database on node3: the case a subset can miss
    return SimpleNamespace(run=SimpleNamespace(inv=inv), inv=inv, answers=answers, probed=probed)


def test_database_host_left_out_and_down_is_refused(fake):
    fake.answers["node3"] = "postgresql inactive"
    selected = [fake.inv.hosts["node1"], fake.inv.hosts["node2"]]
    with pytest.raises(UserError) as err:
        dependencies.check(fake.run, selected, [airflow.COMPONENT, services.COMPONENT])
    assert "node3 (postgres: postgresql inactive)" in err.value.message
    assert "-H node1,node2,node3" in err.value.message


def test_subset_whose_dependencies_are_up_passes(fake):
    selected = [fake.inv.hosts["node1"], fake.inv.hosts["node2"]]
    dependencies.check(fake.run, selected, [airflow.COMPONENT, services.COMPONENT])
    assert ("node3", "postgres") in fake.probed


def test_all_hosts_selected_probes_nothing(fake):
    dependencies.check(fake.run, list(fake.inv.hosts.values()), [airflow.COMPONENT, services.COMPONENT])
    assert fake.probed == []


def test_components_that_start_no_airflow_process_need_nothing(fake):
    fake.answers["node3"] = "unreachable"
    dependencies.check(fake.run, [fake.inv.hosts["node2"]], [nginx.COMPONENT])
    assert fake.probed == []


def test_sentinel_majority_is_enough(fake):
    fake.answers["node3"] = "redis-sentinel inactive"
    selected = [fake.inv.hosts["node1"]]   # node2 up, node3's sentinel down: 2 of 3 is a majority
    fake.answers["node3"] = ""
    dependencies.check(fake.run, selected, [airflow.COMPONENT, services.COMPONENT])
    fake.answers.update(node2="unreachable", node3="unreachable")
    with pytest.raises(UserError, match="sentinel"):
        dependencies.check(fake.run, selected, [airflow.COMPONENT, services.COMPONENT])


def test_patroni_subset_holding_a_member_needs_no_other_member(fake):
    """hosts.yaml (Patroni): node1 and node2 are members themselves; node3's Patroni being down is no reason."""
    inv = load("hosts.yaml")
    run = SimpleNamespace(inv=inv)
    fake.answers["node3"] = "patroni@15-main inactive"
    dependencies.check(run, [inv.hosts["node1"], inv.hosts["node2"]], [airflow.COMPONENT, services.COMPONENT])
    assert ("node3", "postgres") not in fake.probed
    fake.answers.update(node1="unreachable", node2="unreachable")
    with pytest.raises(UserError, match="node1 \\(sentinel: unreachable") as err:
        dependencies.check(run, [inv.hosts["node3"]], [airflow.COMPONENT, services.COMPONENT])
    assert "postgres" not in err.value.message      # node3 is a member itself: the database is selected
