"""A deploy that changed something ends healthy or says why (issue #13, item 2)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from fabfile import health, stack
from fabfile.health import Check


def _run(changed=1, check=False):
    said = []
    hosts = [SimpleNamespace(name="node1"), SimpleNamespace(name="node2")]
    return SimpleNamespace(opts=SimpleNamespace(check=check), failed={}, hosts=hosts, said=said,
                           counts={"node1": Counter(changed=changed), "node2": Counter()},
                           say=lambda text, always=False: said.append(text))


def test_waits_until_healthy(monkeypatch):
    answers = iter([[Check("node1", "celery worker online", "fail", "not online")], [Check("node1", "ssh", "ok")]])
    monkeypatch.setattr(health, "collect", lambda run: next(answers))
    run = _run()
    stack.ends_healthy(run, timeout=5, interval=0)
    assert run.failed == {} and "every check passes" in run.said[-1]


def test_still_failing_after_the_bound_fails_the_run_naming_the_check(monkeypatch):
    monkeypatch.setattr(health, "collect", lambda run: [Check("node2", "unit airflow-worker", "fail", "failed"),
                                                         Check("node9", "ssh", "fail", "not touched by this run")])
    run = _run()
    stack.ends_healthy(run, timeout=0, interval=0)
    assert run.failed == {"node2": "unhealthy after deploy: unit airflow-worker"}
    assert any("unit airflow-worker: failed" in line for line in run.said)


def test_no_change_or_check_mode_costs_nothing(monkeypatch):
    monkeypatch.setattr(health, "collect", lambda run: (_ for _ in ()).throw(AssertionError("health ran")))
    stack.ends_healthy(_run(changed=0))
    stack.ends_healthy(_run(check=True))
