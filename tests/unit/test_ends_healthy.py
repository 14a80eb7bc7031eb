"""A deploy that changed something ends healthy or says why (issue #13, item 2)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from fabfile import health, stack
from fabfile.health import Check


def _run(changed=1, check=False):
    said = []
    hosts = [SimpleNamespace(name="node1"), SimpleNamespace(name="node2")]
    everyone = {h.name: h for h in [*hosts, SimpleNamespace(name="node3")]}
    return SimpleNamespace(opts=SimpleNamespace(check=check), failed={}, hosts=hosts, said=said,
                           inv=SimpleNamespace(hosts=everyone),
                           counts={"node1": Counter(changed=changed), "node2": Counter()},
                           say=lambda text, always=False: said.append(text))


def test_waits_until_healthy(monkeypatch):
    answers = iter([[Check("node1", "celery worker online", "fail", "not online")], [Check("node1", "ssh", "ok")]])
    monkeypatch.setattr(health, "collect", lambda run, hosts: next(answers))
    run = _run()
    stack.ends_healthy(run, timeout=5, interval=0)
    assert run.failed == {} and "every check passes" in run.said[-1]


def test_still_failing_after_the_bound_fails_the_run_naming_the_check(monkeypatch):
    monkeypatch.setattr(health, "collect", lambda run, hosts: [Check("node2", "unit airflow-worker", "fail", "failed"),
                                                         Check("node9", "ssh", "fail", "not touched by this run")])
    run = _run()
    stack.ends_healthy(run, timeout=0, interval=0)
    assert run.failed == {"node2": "unhealthy after deploy: unit airflow-worker"}
    assert any("unit airflow-worker: failed" in line for line in run.said)


def test_no_change_or_check_mode_costs_nothing(monkeypatch):
    monkeypatch.setattr(health, "collect", lambda run, hosts: (_ for _ in ()).throw(AssertionError("health ran")))
    stack.ends_healthy(_run(changed=0))
    stack.ends_healthy(_run(check=True))


def test_a_subset_run_asks_every_inventory_host(monkeypatch):
    """`inv patch --hosts node3`: etcd quorum, the Patroni leader and the VIP are computed from every
    host's answers; asking the touched hosts alone read the others as silent (seen on the lab)."""
    asked = []
    monkeypatch.setattr(health, "collect", lambda run, hosts: asked.append([h.name for h in hosts]) or [])
    stack.ends_healthy(_run(), timeout=0, interval=0)
    assert asked == [["node1", "node2", "node3"]]
