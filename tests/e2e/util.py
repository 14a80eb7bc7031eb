"""Helpers for end-to-end tests: run `inv`/`fab`, run commands on lab hosts, call Airflow through nginx.

Tests talk only to the lab's hosts on its private bridge (names from .lab/ssh_config) and to loopback.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from fabfile import airflow_api
from fabfile.airflow_api import http  # noqa: F401 - re-exported for the tests
from fabfile.components import load_inventory
from fabfile.drills import Probe

ROOT = Path(__file__).resolve().parents[2]
SSH_CONFIG = ROOT / ".lab" / "ssh_config"
NODES = ("node1", "node2", "node3")


def inv(*args, timeout=1800, inventory=None) -> subprocess.CompletedProcess:
    cmd = [str(ROOT / ".venv/bin/inv"), *args]
    if inventory:
        cmd += ["--inventory", str(inventory)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def ssh(host: str, command: str, timeout=120, check=False) -> subprocess.CompletedProcess:
    res = subprocess.run(["ssh", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", host, command],
                         capture_output=True, text=True, timeout=timeout, check=False)
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


def inventory():
    """The default inventory as the deploy sees it (etcd follows the Sentinels when no host names it)."""
    return load_inventory(ROOT / "hosts.yaml")


def postgres_hosts() -> list[str]:
    return [h.name for h in inventory().with_role("postgres")]


def pg_leader(timeout: float = 60) -> str:
    """The Patroni member answering GET /primary with 200 (asked on its own REST port, from itself)."""
    import time
    port = inventory().ports.patroni_api
    deadline = time.monotonic() + timeout
    while True:
        for node in postgres_hosts():
            code = ssh(node, f"curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://{address(node)}:{port}/primary")
            if code.stdout.strip() == "200":
                return node
        if time.monotonic() > deadline:
            raise AssertionError(f"no Patroni member answers /primary 200 within {timeout}s")
        time.sleep(3)


def Airflow(node="node1"):  # capitalised: reads like the class it returns
    """The REST API through nginx on a lab node, logged in as the admin user."""
    return airflow_api.Airflow(f"http://{address(node)}", "admin", secrets()["admin_password"])


def http_status_from(host: str, url: str) -> str:
    """HTTP status of `url` fetched from a lab host (python3 is on every lab host; curl may not be)."""
    code = ("import urllib.request as u, urllib.error as e\n"
            f"try: print(u.urlopen('{url}', timeout=5).status)\n"
            "except e.HTTPError as x: print(x.code)\n"
            "except Exception as x: print('error', type(x).__name__)")
    return ssh(host, f"python3 -c \"{code}\"").stdout.strip()


#: seconds between load triggers. One `ha_load` run costs ~15 CPU-seconds on the lab (measured: 20.6 s of CPU
#: over its 16.6 s on an idle cluster, 0.32 core of it idle load) and lasts 17-40 s, so a run is in flight
#: nearly all the time at 30 s; at 20 s (15 in test_rolling_change) the load alone took 3/4 to 1 of the
#: 2 cores the three hosts share, and slowed every roll it was meant to watch.
LOAD_EVERY = 30


def triggered_throughout(api, dag_id: str, action, every: float = LOAD_EVERY):
    """Run `action()` while `dag_id` is triggered every `every` s; returns (its result, run ids).

    A trigger the API refuses (e.g. the api-server behind the nginx is restarting) is recorded as None.
    """
    import threading
    runs, done = [], threading.Event()

    def keep_triggering():
        while not done.is_set():
            try:
                runs.append(api.trigger(dag_id))
            except (OSError, RuntimeError):
                runs.append(None)
            done.wait(every)
    t = threading.Thread(target=keep_triggering)
    t.start()
    try:
        return action(), runs
    finally:
        done.set()
        t.join()


#: probe failures allowed during a roll (always reported; the issues say "target 0"): on the 2-core lab the
#: three hosts share the CPU, and 1 request of ~900 (10 s timeout) timed out while a load run's tasks all
#: started at once during a restart (test_rolling_change: the Redis roll, when every api-server and
#: keepalived's nginx check stalled together for ~6 s). The 30-s outage of test_upgrade's venv install was
#: a product defect, fixed (fabfile/airflow.py NICE: autogroup); it is not what this slack is for.
PROBE_SLACK = 0.005


def inv_under_load(args: list[str], inventory, name: str, every: float = LOAD_EVERY, max_failed_share: float = 0.0,
                   max_failed: int = 0, runs_left: list | None = None) -> str:
    """`inv ARGS` with a probe through the VIP (5 req/s) and `ha_load` triggered every `every` s throughout;
    asserts the run succeeded, every load run succeeded with 0 failed tasks, and at most `max_failed_share`
    of the probe requests plus `max_failed` requests failed (0 unless a caller says why). Returns its output.

    With `runs_left`, the load runs are added to it instead of being waited for: the caller's next change
    runs while they finish, and it calls `assert_load_succeeded` on them (one wait for both, not two)."""
    vip = yaml.safe_load((ROOT / "hosts.yaml").read_text())["cluster"]["vip"]
    api = Airflow()
    api.wait_dag_loaded("ha_load")
    probe = Probe(f"http://{vip}/api/v2/monitor/health", rate=5, timeout=10)   # 2 cores, 3 hosts + load
    t0 = time.monotonic()
    try:
        res, runs = triggered_throughout(api, "ha_load", lambda: inv(*args, timeout=2400, inventory=inventory),
                                         every=every)
        took = time.monotonic() - t0
        failed_requests, sent = probe.failed()
    finally:
        probe.close()
    print(f"\n{name}: {took:.0f}s, probe {failed_requests}/{sent} failed (longest outage "
          f"{probe.longest_outage():.1f}s), {len(runs)} load runs")
    for failure in probe.failures():     # when and what, so a log that passed still says where the slack went
        print(f"  probe failed at {failure}")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert failed_requests <= max_failed_share * sent + max_failed, (
        f"{failed_requests}/{sent} probe requests failed: {probe.failures()}\n" + res.stdout[-4000:])
    assert None not in runs and len(runs) >= 2, runs
    if runs_left is not None:
        runs_left.extend(runs)
    else:
        assert_load_succeeded(runs, api)
    return res.stdout


def assert_load_succeeded(runs: list[str], api: airflow_api.Airflow | None = None) -> None:
    """Every `ha_load` run in `runs` ends in success with every task a success."""
    api = api or Airflow()
    for run_id in runs:
        assert api.wait_run("ha_load", run_id, timeout=900) == "success", run_id
        failed = [ti["task_id"] for ti in api.task_instances("ha_load", run_id) if ti["state"] != "success"]
        assert not failed, (run_id, failed)
