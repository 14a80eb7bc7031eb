"""Helpers for end-to-end tests: run `inv`/`fab`, run commands on lab hosts, call Airflow through nginx.

Tests talk only to the lab's hosts on its private bridge (names from .lab/ssh_config) and to loopback.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SSH_CONFIG = ROOT / ".lab" / "ssh_config"
NODES = ("node1", "node2", "node3")


def inv(*args, timeout=1800, inventory=None) -> subprocess.CompletedProcess:
    cmd = [str(ROOT / ".venv/bin/inv"), *args]
    if inventory:
        cmd += ["--inventory", str(inventory)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def ssh(host: str, command: str, timeout=120, check=False) -> subprocess.CompletedProcess:
    res = subprocess.run(["ssh", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", host, command],
                         capture_output=True, text=True, timeout=timeout)
    if check and res.returncode:
        raise AssertionError(f"{host}: {command!r} failed ({res.returncode}): {res.stderr or res.stdout}")
    return res


def secrets() -> dict:
    return yaml.safe_load((ROOT / ".secrets" / "hosts.yaml").read_text())


def address(host: str) -> str:
    for block in SSH_CONFIG.read_text().split("Host ")[1:]:
        lines = block.split()
        if lines[0] == host:
            return lines[lines.index("HostName") + 1]
    raise KeyError(host)


def http(url: str, method="GET", body=None, headers=None, timeout=10):
    """(status, parsed JSON or text) — errors are returned, not raised."""
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


class Airflow:
    """The REST API through nginx on a node, authenticated as the admin user (JWT)."""

    def __init__(self, node="node1"):
        self.base = f"http://{address(node)}"
        s = secrets()
        status, body = http(f"{self.base}/auth/token", "POST", {"username": "admin", "password": s["admin_password"]})
        assert status in (200, 201), f"token: {status} {body}"
        self.headers = {"Authorization": f"Bearer {body['access_token']}"}

    def get(self, path):
        return http(f"{self.base}/api/v2{path}", headers=self.headers)

    def post(self, path, body):
        return http(f"{self.base}/api/v2{path}", "POST", body, headers=self.headers)

    def patch(self, path, body):
        return http(f"{self.base}/api/v2{path}", "PATCH", body, headers=self.headers)

    def wait_dag_loaded(self, dag_id, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get(f"/dags/{dag_id}")
            if status == 200:
                self.patch(f"/dags/{dag_id}", {"is_paused": False})
                return body
            time.sleep(3)
        raise AssertionError(f"DAG {dag_id} not loaded within {timeout}s: {status} {body}")

    def trigger(self, dag_id, conf=None) -> str:
        from datetime import datetime, timezone
        status, body = self.post(f"/dags/{dag_id}/dagRuns",
                                 {"logical_date": datetime.now(timezone.utc).isoformat(), "conf": conf or {}})
        assert status in (200, 201), f"trigger {dag_id}: {status} {body}"
        return body["dag_run_id"]

    def wait_run(self, dag_id, run_id, timeout=600) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            status, body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            state = body.get("state") if isinstance(body, dict) else None
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise AssertionError(f"{dag_id} {run_id} still {state} after {timeout}s")

    def task_instances(self, dag_id, run_id) -> list:
        status, body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        assert status == 200, body
        return body["task_instances"]


def http_status_from(host: str, url: str) -> str:
    """HTTP status of `url` fetched from a lab host (python3 is on every lab host; curl may not be)."""
    code = ("import urllib.request as u, urllib.error as e\n"
            f"try: print(u.urlopen('{url}', timeout=5).status)\n"
            "except e.HTTPError as x: print(x.code)\n"
            "except Exception as x: print('error', type(x).__name__)")
    return ssh(host, f"python3 -c \"{code}\"").stdout.strip()
