"""End-to-end restore drill (issue 17): point-in-time restore after the metadata database is dropped.

One module-scoped flow on the default single-DB cluster, <= 6 min on the lab: an inventory copy gives
node3 (the database host) the `backup` role too (repository mode "local": /var/lib/pgbackrest on node3),
and `inv deploy` turns WAL archiving on, creates the stanza and takes the first full backup. Then: two
`ha_queues` runs and a variable ("before"), time T (node3's clock, UTC), two more runs and the variable set
to "after"; the `airflow` database is dropped (WITH (FORCE)); `inv restore --time T` without --yes changes
nothing; with --yes it restores. The runs from before T are there, those after T are not, the variable
says "before" (the fernet key decrypts it), `inv health` passes and a new run succeeds. Printed: the
restore time and the repository size.

Named test_zx_: it runs before test_zy_patroni.py (which converts the default layout to Patroni). The
teardown takes the cluster back to hosts.yaml (no repository: archiving off, PostgreSQL restarts once) and
removes the timers and pgBackRest config from node3, so the Patroni test starts from the usual state.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.e2e.test_health import wait_healthy
from tests.e2e.util import ROOT, Airflow, inv, ssh

pytestmark = pytest.mark.e2e

BACKUP_HOST = "node3"   # the database host: mode "local" (a dedicated host would use SSH, mode "host")
DAG = "ha_queues"       # short tasks: runs finish in seconds
VAR = "zx_backup_probe"


@pytest.fixture(scope="module")
def with_backup(deployed, tmp_path_factory):
    """hosts.yaml plus the `backup` role on node3, deployed. Yields the inventory copy's path."""
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["cluster"].update(secrets=str(ROOT / ".secrets" / "hosts.yaml"), ssh_config=str(ROOT / ".lab" / "ssh_config"),
                           dags_dir=str(ROOT / "files" / "dags"))
    data["hosts"][BACKUP_HOST]["roles"].append("backup")
    path = tmp_path_factory.mktemp("backup") / "hosts-backup.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    t0 = time.monotonic()
    res = inv("deploy", inventory=path, timeout=1200)
    print(f"\n[backup] deploy with a repository: {time.monotonic() - t0:.0f}s")
    try:
        assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
        yield path
    finally:
        ssh(BACKUP_HOST, "systemctl disable --now airflow-ha-backup-full.timer airflow-ha-backup-diff.timer; "
                         "rm -f /etc/systemd/system/airflow-ha-backup* /etc/pgbackrest/pgbackrest.conf "
                         "/usr/local/lib/airflow-ha/pgbackrest-backup.sh; systemctl daemon-reload")
        back = inv("deploy", "-q", timeout=1200)          # hosts.yaml: no repository, archiving off again
        assert back.returncode == 0, back.stdout[-3000:]
        wait_healthy()


def repo_bytes() -> int:
    out = ssh(BACKUP_HOST, "du -sb /var/lib/pgbackrest | cut -f1").stdout.strip()
    return int(out) if out.isdigit() else -1


def test_first_backup_and_health_rows(with_backup):
    listed = inv("backup.list", inventory=with_backup, timeout=120)
    assert listed.returncode == 0 and re.search(r"^full\s", listed.stdout, re.M), listed.stdout + listed.stderr
    report = json.loads(inv("health", "--json", inventory=with_backup, timeout=300).stdout.strip().splitlines()[-1])
    rows = {c["check"]: c for c in report["checks"] if c["host"] == "cluster"}
    assert rows["last backup"]["status"] == "ok", rows["last backup"]
    assert rows["wal archiving"]["status"] in ("ok", "warn"), rows["wal archiving"]
    assert "backups" not in rows        # the "no backups" warning is gone


def test_point_in_time_restore_after_the_database_is_dropped(with_backup):
    api = Airflow()
    api.wait_dag_loaded(DAG)
    before = [api.trigger(DAG) for _ in range(2)]
    assert all(api.wait_run(DAG, r, 240) == "success" for r in before)
    assert api.post("/variables", {"key": VAR, "value": "before"})[0] in (200, 201)
    time.sleep(3)
    target = ssh(BACKUP_HOST, "date -u '+%Y-%m-%d %H:%M:%S'", check=True).stdout.strip() + "+00"
    time.sleep(3)
    after = [api.trigger(DAG) for _ in range(2)]
    assert api.patch(f"/variables/{VAR}", {"key": VAR, "value": "after"})[0] == 200

    dry = inv("restore", "--time", target, inventory=with_backup, timeout=300)
    assert dry.returncode == 0 and "DESTROY" in dry.stdout and "nothing done" in dry.stdout, dry.stdout + dry.stderr
    assert api.run_state(DAG, after[0]) is not None, "restore without --yes changed something"

    ssh(BACKUP_HOST, "runuser -u postgres -- psql -XAtq -c 'DROP DATABASE airflow WITH (FORCE)'", check=True)
    t0 = time.monotonic()
    res = inv("restore", "--time", target, "--yes", inventory=with_backup, timeout=1500)
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
    health = inv("health", inventory=with_backup, timeout=300)
    assert health.returncode == 0, health.stdout[-3000:]
