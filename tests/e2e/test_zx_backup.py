"""End-to-end restore drill (issue 17): point-in-time restore of the Patroni cluster after `airflow` is dropped.

One module-scoped flow on the suite's cluster (the default hosts.yaml: Patroni on node1-3), no fresh deploy
of it. The repository is a dedicated host, the layout the README recommends for Patroni (mode "host"): node4,
booted pristine, gets the `backup` role in an inventory copy, and one `inv deploy` of that copy adds it (on
node4 base packages, firewall, pgBackRest; on node1-3 pgBackRest, SSH trust, archiving, each member
restarted once for archive_mode) and takes the first full backup from a standby. Then: two `ha_queues` runs
and a variable ("before"), time T (the leader's clock, UTC), two more runs and the variable set to "after";
`airflow` is dropped on the leader (WITH (FORCE)); `inv restore --time T` without --yes changes nothing;
with --yes it stops Airflow and Patroni, restores the leader, re-clones the replicas. The runs from before T
are there, those after T are not, the variable says "before" (the fernet key decrypts it), every member
streams again, `inv health` passes and a new run succeeds. Printed: deploy, restore and flow times, the
repository size.

Wall time on the lab, roughly: node4 boot ~15 s + deploy ~2 min (apt on node4, three member restarts,
first backup) + runs ~1 min + restore ~3-4 min (Airflow stop, restore + WAL replay, Patroni takeover,
two pg_basebackup clones, db/fernet checks, Airflow start, health) + new run ~1 min: about 8 min.

No teardown deploy: the cluster is left in the backup layout (node4 running, archiving to it), a healthy
state; test_zy_patroni.py, next in the alphabetical order, starts with `lab.reset()` (node4 included).
A later session reusing the lab deploys hosts.yaml, which turns archiving off
member by member (patroni.archive_mode_step); node4 then idles until `lab.down`/`lab.reset`.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

import lab as labapi
from tests.e2e.util import ROOT, Airflow, inv, pg_leader, ssh

pytestmark = pytest.mark.e2e

REPO_HOST = "node4"     # the pgBackRest repository host (mode "host"); not a Patroni member
DAG = "ha_queues"       # short tasks: runs finish in seconds
VAR = "zx_backup_probe"
MEMBERS = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def with_backup(deployed, tmp_path_factory):
    """hosts.yaml plus node4 [backup], booted pristine and deployed. Yields (inventory copy, flow start)."""
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["cluster"].update(secrets=str(ROOT / ".secrets" / "hosts.yaml"), ssh_config=str(ROOT / ".lab" / "ssh_config"),
                           dags_dir=str(ROOT / "files" / "dags"))
    data["hosts"][REPO_HOST] = {"roles": ["backup"]}
    path = tmp_path_factory.mktemp("backup") / "hosts-backup.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    t0 = time.monotonic()
    labapi.up([REPO_HOST], fresh=True)
    res = inv("deploy", inventory=path, timeout=1500)
    print(f"\n[backup] {REPO_HOST} up + deploy with a repository host: {time.monotonic() - t0:.0f}s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    assert re.search(r"restart archive_mode", res.stdout), "no member restarted for archive_mode"
    return path, t0


def repo_bytes() -> int:
    out = ssh(REPO_HOST, "du -sb /var/lib/pgbackrest | cut -f1").stdout.strip()
    return int(out) if out.isdigit() else -1


def cluster_checks(inventory) -> tuple[int, dict]:
    res = inv("health", "--json", inventory=inventory, timeout=300)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    return res.returncode, {(c["host"], c["check"]): c for c in report["checks"]}


def test_first_backup_from_a_standby_and_health_rows(with_backup):
    path, _ = with_backup
    listed = inv("backup.list", inventory=path, timeout=120)
    assert listed.returncode == 0 and re.search(r"^full\s", listed.stdout, re.M), listed.stdout + listed.stderr
    log = ssh(REPO_HOST, "journalctl -u 'airflow-ha-backup@full.service' --no-pager", check=True).stdout
    assert "--backup-standby" in log, log[-2000:]        # 2.45 fails such a backup when no standby runs
    _, rows = cluster_checks(path)
    assert rows[("cluster", "last backup")]["status"] == "ok", rows[("cluster", "last backup")]
    assert rows[("cluster", "wal archiving")]["status"] in ("ok", "warn"), rows[("cluster", "wal archiving")]
    assert ("cluster", "backups") not in rows          # the "no backups" warning is gone


def test_point_in_time_restore_after_the_database_is_dropped(with_backup):
    path, flow_start = with_backup
    api = Airflow()
    api.wait_dag_loaded(DAG)
    before = [api.trigger(DAG) for _ in range(2)]
    assert all(api.wait_run(DAG, r, 240) == "success" for r in before)
    assert api.post("/variables", {"key": VAR, "value": "before"})[0] in (200, 201)
    leader = pg_leader()
    time.sleep(3)
    target = ssh(leader, "date -u '+%Y-%m-%d %H:%M:%S'", check=True).stdout.strip() + "+00"
    time.sleep(3)
    after = [api.trigger(DAG) for _ in range(2)]
    assert api.patch(f"/variables/{VAR}", {"key": VAR, "value": "after"})[0] == 200

    dry = inv("restore", "--time", target, inventory=path, timeout=300)
    assert dry.returncode == 0 and "DESTROY" in dry.stdout and "nothing done" in dry.stdout, dry.stdout + dry.stderr
    assert api.run_state(DAG, after[0]) is not None, "restore without --yes changed something"

    ssh(leader, "runuser -u postgres -- psql -XAtq -c 'DROP DATABASE airflow WITH (FORCE)'", check=True)
    t0 = time.monotonic()
    res = inv("restore", "--time", target, "--yes", inventory=path, timeout=1800)
    took = time.monotonic() - t0
    print(res.stdout)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    print(f"\n[backup] restore to {target}: {took:.0f}s; repository {repo_bytes() / 2**20:.1f} MiB")

    api = Airflow()                                  # the api-servers restarted: a fresh login
    for run_id in before:
        assert api.run_state(DAG, run_id) == "success", run_id
    for run_id in after:
        assert api.get(f"/dags/{DAG}/dagRuns/{run_id}")[0] == 404, f"{run_id} (after T) survived the restore"
    status, body = api.get(f"/variables/{VAR}")
    assert status == 200 and body["value"] == "before", body
    new = api.trigger(DAG)
    assert api.wait_run(DAG, new, 300) == "success"
    rc, rows = cluster_checks(path)
    assert rc == 0, [c for c in rows.values() if c["status"] == "fail"]
    for row in ("patroni leader", "replication lag", "sync standby", "last backup"):
        assert rows[("cluster", row)]["status"] == "ok", rows[("cluster", row)]
    assert all(rows[(m, "patroni member")]["status"] == "ok" for m in MEMBERS), "a member did not come back"
    print(f"[backup] whole flow {time.monotonic() - flow_start:.0f}s")
