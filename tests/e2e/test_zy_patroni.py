"""End-to-end, Patroni mode (issue 15): convert the deployed single database, check health, drill it.

ONE module-scoped flow on the default single-DB cluster (the `deployed` fixture), <= 10 min on the lab:
DAG runs + a connection made through the API; `deploy --check` of hosts-patroni.yaml shows the CONVERSION
plan and changes nothing; the real deploy converts while a write probe on node3 writes every 0.5 s (the
longest run of failed writes = the conversion's database downtime, printed); the runs and the connection
are still there; `inv health` is green with the Patroni rows; `inv drill.postgres` passes.

There is no way back to one database, so this file runs after every test that needs single mode (named
test_zy_) and just before test_zz_fab_fresh.py, which resets the lab (`lab.reset()`) and deploys fresh:
the lab leaves the suite as every other run leaves it. Run alone, follow it with `inv lab.reset`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.e2e.util import ROOT, SSH_CONFIG, Airflow, address, inv, secrets, ssh

pytestmark = pytest.mark.e2e

PATRONI = ROOT / "hosts-patroni.yaml"
CONN_ID = "zy_patroni_kept"
PROBE_HOST = "node3"          # the single-mode database host: it has psql before and after


def probe_script() -> str:
    """A bounded loop on the probe host: `<epoch> ok|fail` per write through the multi-host URL."""
    hosts = ",".join(address(h) for h in ("node1", "node2", "node3"))
    conninfo = f"host={hosts} port=5432 user=airflow dbname=airflow target_session_attrs=read-write connect_timeout=2"
    return (f"export PGPASSWORD='{secrets()['postgres_password']}'; end=$(( $(date +%s) + 1500 )); "
            "while [ $(date +%s) -lt $end ]; do "
            f"if timeout 4 psql '{conninfo}' -tAc 'CREATE TEMP TABLE p (x int)' >/dev/null 2>&1; "
            "then echo \"$(date +%s.%N) ok\"; else echo \"$(date +%s.%N) fail\"; fi; sleep 0.5; done")


def downtime(lines: str) -> tuple[float, int]:
    """(longest stretch of failed writes in seconds, number of failed writes) from the probe output."""
    samples = [(float(t), s == "ok") for t, s in (ln.split() for ln in lines.splitlines() if ln.count(" ") == 1)]
    worst, start = 0.0, None
    for t, ok in samples:
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            worst, start = max(worst, t - start), None
    assert start is None, "the database never accepted writes again before the probe stopped"
    return worst, sum(not ok for _, ok in samples)


@pytest.fixture(scope="module")
def before(deployed):
    api = Airflow()
    api.wait_dag_loaded("ha_load")
    runs = [api.trigger("ha_load") for _ in range(2)]
    assert all(api.wait_run("ha_load", r, 600) == "success" for r in runs)
    api.post("/connections", {"connection_id": CONN_ID, "conn_type": "http", "host": "kept.example"})
    assert api.get(f"/connections/{CONN_ID}")[0] == 200
    return runs


@pytest.fixture(scope="module")
def converted(before):
    check = inv("deploy", "--check", inventory=PATRONI, timeout=900)
    assert check.returncode == 0, check.stdout[-4000:]
    assert "CONVERSION to Patroni: node3 keeps its data dir" in check.stdout, check.stdout[-4000:]
    assert ssh("node1", "test -e /etc/patroni/15-main.yml").returncode != 0, "--check changed a host"
    probe = subprocess.Popen(["ssh", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", PROBE_HOST, probe_script()],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    t0 = time.monotonic()
    res = inv("deploy", inventory=PATRONI, timeout=2400)
    took = time.monotonic() - t0
    time.sleep(5)
    ssh(PROBE_HOST, "pkill -f 'CREATE TEMP TABLE p'")    # the loop lives on the lab host, not here
    probe.terminate()
    out = probe.communicate(timeout=30)[0]
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    worst, failed = downtime(out)
    print(f"\n[patroni] conversion deploy {took:.0f}s; database downtime {worst:.1f}s ({failed} failed writes)")
    return {"before": before, "downtime": worst}


def test_conversion_keeps_runs_and_connection(converted):
    api = Airflow()
    for run_id in converted["before"]:
        assert api.run_state("ha_load", run_id) == "success"
    status, body = api.get(f"/connections/{CONN_ID}")
    assert status == 200 and body["host"] == "kept.example"
    assert converted["downtime"] < 120


def test_health_green_with_patroni_rows(converted):
    res = inv("health", "--json", inventory=PATRONI, timeout=300)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    checks = {(c["host"], c["check"]): c for c in report["checks"]}
    assert res.returncode == 0, [c for c in report["checks"] if c["status"] == "fail"]
    for row in ("patroni leader", "replication lag", "sync standby", "etcd quorum"):
        assert checks[("cluster", row)]["status"] == "ok", checks[("cluster", row)]
    assert all(checks[(h, "patroni member")]["status"] == "ok" for h in ("node1", "node2", "node3"))
    assert "writable member" in next(c["detail"] for c in report["checks"] if c["check"] == "postgres")


def test_drill_postgres_passes(converted):
    res = inv("drill.postgres", inventory=PATRONI, timeout=2400)
    print(res.stdout[-3000:])
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    rows = re.findall(r"^postgres\s+.*PASS$", res.stdout, re.M)
    assert len(rows) >= 2, res.stdout[-3000:]      # (a) SIGKILL postmaster, (b) power off: each printed
