"""End-to-end, Patroni mode (issue 15): convert a single database to Patroni with nothing lost.

The default hosts.yaml is already the Patroni layout, so this file makes its own single-DB cluster:
ONE module-scoped flow, <= 13 min on the lab: `lab.reset()` (pristine hosts), a fresh deploy of
hosts-single.yaml at Airflow 3.2.2 (a copy: PostgreSQL on node3 only, same secrets file), DAG runs + a
connection made through the API; then issue 16's upgrade ACROSS A MINOR VERSION, with migrations:
`inv upgrade --airflow-version 3.3.2` under load and a probe through the VIP (backup, `db migrate` once,
the per-role roll; the probe's failures and longest outage are printed: that is the downtime the
migration costs); `deploy --check` of hosts.yaml shows the CONVERSION plan and changes nothing; the real deploy of
hosts.yaml converts while a write probe on node3 writes every 0.5 s (the longest run of failed writes =
the conversion's database downtime, printed); the runs and the connection are still there; `inv health` is
green with the Patroni rows. drill.postgres runs in tests/e2e/test_drills.py (drill.all), not here.

The lab is left in the default layout (hosts.yaml deployed), so the session's `deployed` state holds for
whatever runs next. Named test_zy_ to run
after every test that uses the session deploy: the reset at its start discards that deploy.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

from tests.e2e.util import (
    NODES,
    ROOT,
    SSH_CONFIG,
    Airflow,
    address,
    assert_load_succeeded,
    inv,
    inv_under_load,
    secrets,
    ssh,
)

pytestmark = pytest.mark.e2e

PATRONI = ROOT / "hosts.yaml"
SINGLE = ROOT / "hosts-single.yaml"
CONN_ID = "zy_patroni_kept"
PROBE_HOST = "node3"          # the single-mode database host: it has psql before and after
OLD_MINOR, NEW = "3.2.2", "3.3.2"    # files/airflow/constraints-3.2.2-py3.11.txt ships for this test
#: probe failures allowed while the old minor's api-servers meet the migrated schema (measured: 0/886)
MINOR_PROBE_SLACK = 0.005


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
def single_old(tmp_path_factory):
    """A copy of hosts-single.yaml at the previous minor version (the repository's file is never edited)."""
    data = yaml.safe_load(SINGLE.read_text())
    data["cluster"].update(airflow_version=OLD_MINOR, secrets=str(ROOT / ".secrets" / "hosts.yaml"),
                           ssh_config=str(SSH_CONFIG), dags_dir=str(ROOT / "files" / "dags"))
    path = tmp_path_factory.mktemp("zy") / "hosts-single-old.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def single(lab, single_old):  # lab unused: it must be up
    """Pristine hosts, then a fresh deploy of the single-database layout. Yields the flow's start time."""
    import lab as labapi
    t0 = time.monotonic()
    labapi.reset()
    res = inv("deploy", inventory=single_old, timeout=2400)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    assert ssh("node1", "systemctl is-active postgresql").stdout.strip() != "active", "node1 has a database"
    print(f"\n[patroni] reset + single-DB deploy {time.monotonic() - t0:.0f}s")
    return t0


@pytest.fixture(scope="module")
def before(single):
    """Two runs and a connection made on the old version. The runs are not waited for here: they finish
    during the upgrade, which checks them with its own load runs."""
    api = Airflow()
    api.wait_dag_loaded("ha_load")
    runs = [api.trigger("ha_load") for _ in range(2)]
    api.post("/connections", {"connection_id": CONN_ID, "conn_type": "http", "host": "kept.example"})
    assert api.get(f"/connections/{CONN_ID}")[0] == 200
    return runs


@pytest.fixture(scope="module")
def upgraded(single_old, before):
    """3.2.2 -> 3.3.2 (schema migration) under load: 0 failed tasks, probe failures bounded and printed."""
    t0 = time.monotonic()
    out = inv_under_load(["upgrade", "--airflow-version", NEW], single_old, f"minor upgrade {OLD_MINOR} -> {NEW}",
                         max_failed_share=MINOR_PROBE_SLACK)
    assert_load_succeeded(before)
    print(f"[patroni] minor upgrade {time.monotonic() - t0:.0f}s")
    assert "  migrate:  yes: schema" in out, out[:3000]
    for node in NODES:
        version = ssh(node, "airflow-ha-cli version 2>/dev/null | tail -n 1", check=True).stdout.strip()
        assert version == NEW, (node, version)
    return out


def test_minor_upgrade_took_a_backup_and_migrated_once(upgraded):
    assert f"  backup:   pg_dump -Fc on {PROBE_HOST} -> " in upgraded, upgraded[:3000]
    assert len(re.findall(r"^node\d\s+airflow\s+changed\s+command db migrate", upgraded, re.M)) == 1, upgraded[-3000:]


@pytest.fixture(scope="module")
def converted(single, before, upgraded):
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
    print(f"\n[patroni] conversion deploy {took:.0f}s; database downtime {worst:.1f}s ({failed} failed writes); "
          f"whole flow so far {time.monotonic() - single:.0f}s")
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


def test_lab_left_in_the_default_layout(converted):
    """What follows in the suite expects hosts.yaml deployed: a second deploy of it changes nothing."""
    res = inv("deploy", "-q", timeout=1200)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert re.search(r", 0 changed,", res.stdout.strip().splitlines()[-1]), res.stdout[-3000:]
    for node in ("node1", "node2", "node3"):
        assert ssh(node, "systemctl is-active patroni@15-main etcd").stdout.split() == ["active", "active"], node
