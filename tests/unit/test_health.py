"""`inv health`: verdicts come only from what the hosts answered; output never shows a secret."""

from __future__ import annotations

import json

import pytest

from fabfile import airflow, health
from fabfile.airflow_api import monitor_health
from fabfile.core import secrets

ALL = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def _body(**states) -> str:
    return json.dumps({k: {"status": v} for k, v in states.items()})


def test_empty_health_json_fails_naming_every_component():
    c = monitor_health("node1", "api-server health", "{}")
    assert c.status == "fail"
    assert all(f"{name} missing" in c.detail for name in ALL)


def test_partial_health_json_fails_naming_the_missing():
    c = monitor_health("node1", "h", _body(metadatabase="healthy", scheduler="healthy"))
    assert c.status == "fail"
    assert c.detail == "triggerer missing, dag_processor missing"


def test_partial_and_unhealthy_both_reported():
    c = monitor_health("node1", "h", _body(metadatabase="healthy", scheduler="unhealthy", triggerer="healthy"))
    assert c.status == "fail"
    assert c.detail == "scheduler=unhealthy, dag_processor missing"


def test_component_that_is_not_an_object_fails():
    body = json.dumps({"metadatabase": "healthy", "scheduler": {"status": "healthy"},
                       "triggerer": {"status": "healthy"}, "dag_processor": {"status": "healthy"}})
    c = monitor_health("node1", "h", body)
    assert c.status == "fail" and c.detail == "metadatabase=None"


@pytest.mark.parametrize("body", ["[]", '"ok"', "null", "42", '[{"status": "healthy"}]'])
def test_non_object_json_fails(body):
    c = monitor_health("node1", "h", body)
    assert c.status == "fail" and "not a JSON object" in c.detail


def test_no_answer_fails():
    assert monitor_health("node1", "h", "").detail == "no answer"


def test_all_healthy_lists_what_was_received():
    c = monitor_health("node1", "h", _body(**dict.fromkeys(ALL, "healthy")))
    assert c.status == "ok"
    assert c.detail == "metadatabase, scheduler, triggerer, dag_processor healthy"


def test_extra_healthy_component_is_listed_and_unhealthy_one_fails():
    states = dict.fromkeys(ALL, "healthy")
    ok = monitor_health("n", "h", _body(**states, webserver="healthy"))
    assert ok.status == "ok" and ok.detail.endswith("dag_processor, webserver healthy")
    bad = monitor_health("n", "h", _body(**states, webserver="unhealthy"))
    assert bad.status == "fail" and bad.detail == "webserver=unhealthy"


SECRET = "s3cr3t-redis-pw"


def _checks():
    return [health.Check("node1", "redis", "fail", f"AUTH failed: {SECRET} rejected"),
            health.Check("node2", f"unit {SECRET}", "ok", "active")]


@pytest.mark.parametrize("as_json", [False, True])
def test_render_masks_secrets(as_json):
    mask = secrets.masker({"redis_password": SECRET})
    out = health.render(_checks(), mask, as_json=as_json)
    assert SECRET not in out and secrets.MASK in out


def test_render_json_keeps_its_shape():
    data = json.loads(health.render(_checks(), secrets.masker({"redis_password": SECRET}), as_json=True))
    assert data["ok"] is False
    assert data["checks"][0] == {"host": "node1", "check": "redis", "status": "fail",
                                 "detail": f"AUTH failed: {secrets.MASK} rejected"}


def test_render_table_summary():
    out = health.render(_checks(), lambda s: s, seconds=1.25)
    assert out.splitlines()[-1] == "UNHEALTHY: 1 ok, 0 warn, 1 fail (1.2s)"


def _flower(queues_by_host):
    return {f"celery@{h}": {"active_queues": [{"name": q} for q in qs]} for h, qs in queues_by_host.items()}


def test_worker_row_shows_its_queues():
    _worker_check = airflow._worker_check
    row = _worker_check("node3", _flower({"node3": ["default", "heavy"]}), ["default", "heavy"])
    assert row.status == "ok" and "queues default,heavy" in row.detail


def test_worker_serving_other_queues_than_the_inventory_fails():
    _worker_check = airflow._worker_check
    row = _worker_check("node3", _flower({"node3": ["default"]}), ["default", "heavy"])
    assert row.status == "fail" and "inventory says default,heavy" in row.detail


def test_worker_missing_or_without_queue_list_fails():
    _worker_check = airflow._worker_check
    assert _worker_check("node2", _flower({"node3": ["default"]}), ["default"]).detail == "not online in flower"
    assert _worker_check("node2", {"celery@node2": {}}, ["default"]).status == "fail"
