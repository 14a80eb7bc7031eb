"""A small client for Airflow's REST API through nginx (JWT from /auth/token), used by drills and tests."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from http import HTTPStatus

from .core.component import Check


def http(url: str, method="GET", body=None, headers=None, timeout=10):
    """(status, parsed JSON or text); HTTP errors are returned, connection errors raise OSError."""
    import urllib.error
    import urllib.request  # here, not at import: `inv` loads this module for every task (start-up time)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


#: an idempotent request (GET, the token) is tried this often when the connection fails or the answer is
#: a 5xx: during a drill's fault (the database failing over) one request may time out or get a 500
TRIES, RETRY_PAUSE = 3, 2.0


def http_retrying(url: str, method="GET", body=None, headers=None, timeout=10, tries=TRIES):
    """`http` for idempotent requests: a connection error or a 5xx is tried again (TRIES in all)."""
    for attempt in range(1, tries + 1):
        try:
            status, answer = http(url, method, body, headers, timeout)
        except OSError:
            if attempt == tries:
                raise
        else:
            if status < HTTPStatus.INTERNAL_SERVER_ERROR or attempt == tries:
                return status, answer
        time.sleep(RETRY_PAUSE)
    raise AssertionError("unreachable")


class Airflow:
    """The REST API at `base` (an nginx URL), authenticated as `user`."""

    def __init__(self, base: str, user: str, password: str):
        self.base = base.rstrip("/")
        status, body = http_retrying(f"{self.base}/auth/token", "POST", {"username": user, "password": password})
        if status not in (200, 201):
            raise RuntimeError(f"login to {self.base} failed: {status} {str(body)[:200]}")
        self.headers = {"Authorization": f"Bearer {body['access_token']}"}

    def get(self, path):
        return http_retrying(f"{self.base}/api/v2{path}", headers=self.headers)

    def post(self, path, body):
        return http(f"{self.base}/api/v2{path}", "POST", body, headers=self.headers)

    def patch(self, path, body):
        return http(f"{self.base}/api/v2{path}", "PATCH", body, headers=self.headers)

    def wait_dag_loaded(self, dag_id, timeout=180):
        """Wait until the DAG is parsed, and unpause it."""
        deadline = time.monotonic() + timeout
        status, body = None, None
        while time.monotonic() < deadline:
            status, body = self.get(f"/dags/{dag_id}")
            if status == HTTPStatus.OK:
                if body.get("is_paused"):
                    self.patch(f"/dags/{dag_id}", {"is_paused": False})
                return body
            time.sleep(3)
        raise RuntimeError(f"DAG {dag_id} not loaded within {timeout}s: {status} {body}")

    def trigger(self, dag_id, conf=None) -> str:
        status, body = self.post(f"/dags/{dag_id}/dagRuns",
                                 {"logical_date": datetime.now(timezone.utc).isoformat(), "conf": conf or {}})
        if status not in (200, 201):
            raise RuntimeError(f"trigger {dag_id}: {status} {body}")
        return body["dag_run_id"]

    def run_state(self, dag_id, run_id) -> str | None:
        status, body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        return body.get("state") if status == HTTPStatus.OK and isinstance(body, dict) else None

    def wait_run(self, dag_id, run_id, timeout=600) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            try:
                state = self.run_state(dag_id, run_id)
            except OSError:
                state = None            # nginx/api-server briefly unreachable during a drill
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise RuntimeError(f"{dag_id} {run_id} still {state} after {timeout}s")

    def task_instances(self, dag_id, run_id) -> list:
        status, body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")
        if status != HTTPStatus.OK:
            raise RuntimeError(f"task instances: {status} {body}")
        return body["task_instances"]


# -- `inv health`: the verdict of /api/v2/monitor/health (api-server and nginx rows) -----------------------
AIRFLOW_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def monitor_health(host, check, body) -> Check:
    """The verdict of /api/v2/monitor/health from what it answered: a missing component is a failure."""
    try:
        data = json.loads(body)
    except ValueError:
        return Check(host, check, "fail", "no answer" if not body.strip() else body.strip()[:80])
    if not isinstance(data, dict):
        return Check(host, check, "fail", f"not a JSON object: {body.strip()[:60]}")
    bad, healthy = _component_states(data)
    if bad:
        return Check(host, check, "fail", ", ".join(bad))
    return Check(host, check, "ok", f"{', '.join(healthy)} healthy")


def _component_states(data: dict) -> tuple[list[str], list[str]]:
    """(problems, healthy components): each expected component must be present and healthy."""
    bad, healthy = [], []
    names = list(AIRFLOW_COMPONENTS) + sorted(k for k in data if k not in AIRFLOW_COMPONENTS)
    for name in names:
        if name not in data:
            bad.append(f"{name} missing")
            continue
        value = data[name]
        status = value.get("status") if isinstance(value, dict) else None
        if status == "healthy":
            healthy.append(name)
        elif isinstance(value, dict) or name in AIRFLOW_COMPONENTS:
            bad.append(f"{name}={status}")
    return bad, healthy
