"""End-to-end (issue 16): `inv upgrade` to another Airflow version and `--rollback`, under load.

From the deployed 3.3.2 cluster, on a copy of the inventory (the repository's hosts.yaml is never edited):
1. `inv upgrade --airflow-version 3.3.1 --check`: the plan (3.3.2 -> 3.3.1, no migration: both have schema
   head d2f4e1b3c5a7, api-server hosts first) and nothing changed;
2. `inv upgrade --airflow-version 3.3.1` with a probe through the VIP (5 req/s) and `ha_load` triggered
   throughout: 0 failed tasks, probe failures reported (target 0), `airflow version` is 3.3.1 on every host,
   `current` points at venvs/3.3.1, the previous venv is kept, `inv health` green;
3. `inv upgrade --rollback` the same way: back on 3.3.2 everywhere, green.
3.3.1 is the "other" version because its constraints file ships (files/airflow/make-constraints.sh 3.3.1
made it); the test is skipped when it is missing. Costs: 3.3.1's wheelhouse on the control machine (once,
cached), its install on the hosts (~1 min), two rolls of every Airflow host.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from fabfile.drills import Probe
from tests.e2e.test_health import wait_healthy
from tests.e2e.util import NODES, ROOT, Airflow, inv, ssh, triggered_throughout

pytestmark = pytest.mark.e2e
OTHER, DEFAULT = "3.3.1", "3.3.2"
CONSTRAINTS = ROOT / "files" / "airflow" / f"constraints-{OTHER}-py3.11.txt"


@pytest.fixture
def inventory(tmp_path):
    if not CONSTRAINTS.is_file():
        pytest.skip(f"{CONSTRAINTS.name} missing: run files/airflow/make-constraints.sh {OTHER} python3.11")
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    assert data["cluster"].get("airflow_version", DEFAULT) == DEFAULT, "the lab runs the default version"
    data["cluster"].update(secrets=str(ROOT / ".secrets" / "hosts.yaml"), ssh_config=str(ROOT / ".lab" / "ssh_config"),
                           dags_dir=str(ROOT / "files" / "dags"))
    path = tmp_path / "hosts-upgrade.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _under_load(args: list[str], inventory, name: str) -> str:
    """`inv upgrade ARGS` with a probe through the VIP and `ha_load` triggered throughout; asserts the run
    succeeded, 0 failed probe requests, every load run succeeded. Returns its output."""
    vip = yaml.safe_load((ROOT / "hosts.yaml").read_text())["cluster"]["vip"]
    api = Airflow()
    api.wait_dag_loaded("ha_load")
    probe = Probe(f"http://{vip}/api/v2/monitor/health", rate=5, timeout=10)
    t0 = time.monotonic()
    try:
        res, runs = triggered_throughout(api, "ha_load", lambda: inv("upgrade", *args, timeout=2400,
                                                                      inventory=inventory), every=20)
        took = time.monotonic() - t0
        failed_requests, sent = probe.failed()
    finally:
        probe.close()
    print(f"\n{name}: {took:.0f}s, probe {failed_requests}/{sent} failed, {len(runs)} load runs")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert failed_requests == 0, f"{failed_requests}/{sent} probe requests failed: {probe.failures()}"
    assert None not in runs and len(runs) >= 2, runs
    for run_id in runs:
        assert api.wait_run("ha_load", run_id, timeout=900) == "success", run_id
        failed = [ti["task_id"] for ti in api.task_instances("ha_load", run_id) if ti["state"] != "success"]
        assert not failed, (run_id, failed)
    return res.stdout


def _versions() -> dict[str, tuple[str, str]]:
    """host -> (`airflow version`, where `current` points)."""
    out = {}
    for node in NODES:
        res = ssh(node, "airflow-ha-cli version 2>/dev/null | tail -n 1; readlink /opt/airflow/venvs/current",
                  check=True)
        version, link = (res.stdout.split() + ["", ""])[:2]
        out[node] = (version, link)
    return out


def _assert_on(version: str, other: str) -> None:
    assert _versions() == {n: (version, f"/opt/airflow/venvs/{version}") for n in NODES}
    for node in NODES:
        ssh(node, f"test -x /opt/airflow/venvs/{other}/bin/airflow", check=True)   # the previous venv is kept
    wait_healthy()


def _rolled_api_servers_first(out: str) -> None:
    order = out.split("restarted (in this order):")[-1]
    hosts = re.findall(r"(node\d)\s+services\s+restart airflow-", order)
    first = list(dict.fromkeys(hosts))
    assert first == ["node1", "node2", "node3"], order          # api-server hosts, then the worker-only host
    assert re.search(r"node1\s+services\s+drain: every nginx", order), order


def test_upgrade_and_rollback_under_load(deployed, inventory):
    check = inv("upgrade", "--airflow-version", OTHER, "--check", inventory=inventory)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    assert f"upgrade plan: Airflow {DEFAULT} -> {OTHER}" in check.stdout, check.stdout[:2000]
    assert "migrate:  no: schema already at" in check.stdout and "backup:   none" in check.stdout
    assert re.search(r"order:\s+node1 \(api_server[^)]*\) -> node2 \(api_server[^)]*\) -> node3", check.stdout)
    assert f"airflow_version: {DEFAULT}" in inventory.read_text(), "--check changes nothing"

    out = _under_load(["--airflow-version", OTHER], inventory, f"upgrade {DEFAULT} -> {OTHER}")
    _rolled_api_servers_first(out)
    assert f"airflow_version: {OTHER}" in inventory.read_text()
    _assert_on(OTHER, DEFAULT)

    out = _under_load(["--rollback"], inventory, f"rollback {OTHER} -> {DEFAULT}")
    _rolled_api_servers_first(out)
    assert f"airflow_version: {DEFAULT}" in inventory.read_text()
    _assert_on(DEFAULT, OTHER)
