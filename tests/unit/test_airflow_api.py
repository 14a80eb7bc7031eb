"""The REST client's retries: an idempotent request survives one timeout or 5xx during a drill's fault."""

from __future__ import annotations

import pytest

from fabfile import airflow_api


def _scripted(monkeypatch, answers):
    calls = []

    def fake_http(url, method="GET", body=None, headers=None, timeout=10):
        calls.append(method)
        answer = answers[len(calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(airflow_api, "http", fake_http)
    monkeypatch.setattr(airflow_api, "RETRY_PAUSE", 0)
    return calls


def test_a_timeout_then_an_answer_is_an_answer(monkeypatch):
    calls = _scripted(monkeypatch, [TimeoutError("timed out"), (500, "db down"), (200, {"state": "running"})])
    assert airflow_api.http_retrying("http://x/api/v2/dags") == (200, {"state": "running"})
    assert len(calls) == 3


def test_client_errors_are_answers_not_retried(monkeypatch):
    calls = _scripted(monkeypatch, [(404, "no such run")])
    assert airflow_api.http_retrying("http://x/api/v2/dags/d") == (404, "no such run")
    assert len(calls) == 1


def test_the_last_failure_is_what_the_caller_sees(monkeypatch):
    _scripted(monkeypatch, [TimeoutError("a"), TimeoutError("b"), TimeoutError("c")])
    with pytest.raises(TimeoutError, match="c"):
        airflow_api.http_retrying("http://x")
    _scripted(monkeypatch, [(502, "a"), (503, "b"), (504, "c")])
    assert airflow_api.http_retrying("http://x") == (504, "c")


def test_login_and_get_retry_but_post_does_not(monkeypatch):
    calls = _scripted(monkeypatch, [TimeoutError("t"), (200, {"access_token": "tok"}), (503, "x"), (200, {}),
                                    (500, "not retried")])
    api = airflow_api.Airflow("http://x", "admin", "pw")
    assert api.get("/dags") == (200, {})
    assert api.post("/dags/d/dagRuns", {}) == (500, "not retried"), "a trigger is not idempotent"
    assert calls == ["POST", "POST", "GET", "GET", "POST"]
