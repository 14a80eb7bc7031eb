"""Inventory validation: every bad inventory gives one clear error (file, key, fix), exit code 2, and no
SSH connection is attempted."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from fabfile import stack
from fabfile.components import REGISTRY, load_inventory
from fabfile.core import inventory
from fabfile.core import remote as remote_mod
from fabfile.core.errors import InventoryError

GOOD = """
cluster:
  worker_concurrency: 4
hosts:
  node1: {roles: [redis, sentinel, api_server, scheduler, dag_processor, triggerer, worker, nginx]}
  node2: {roles: [redis, sentinel, api_server, scheduler, worker, nginx]}
  node3: {roles: [redis, sentinel, postgres, worker, flower]}
"""


def write(tmp_path, text):
    p = tmp_path / "hosts.yaml"
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def no_ssh(monkeypatch):
    """Fail the test if anything tries to open an SSH connection."""
    attempts = []

    def refuse(self, *a, **k):
        attempts.append(self)
        raise AssertionError("an SSH connection was attempted")
    monkeypatch.setattr(remote_mod.Remote, "__init__", refuse)
    return attempts


def test_good_inventory_loads_with_defaults(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    assert list(inv.hosts) == ["node1", "node2", "node3"]
    assert inv.cluster["ports"]["redis"] == 6379
    assert inv.cluster["worker_concurrency"] == 4
    assert [h.name for h in inv.with_role("postgres")] == ["node3"]


def test_repo_default_inventory_is_valid():
    inv = load_inventory("hosts.yaml")
    assert len(inv.with_role("sentinel")) == 3


BAD = {
    "invalid_yaml": ("hosts: [node1\n", "invalid YAML", "hosts.yaml:"),
    "unknown_role": (GOOD.replace("flower]", "flowr]"), "unknown role 'flowr'", "hosts.node3.roles"),
    "duplicate_host": (GOOD + "  node1: {roles: [worker]}\n", "duplicate key 'node1'", "hosts.yaml"),
    "no_postgres": (GOOD.replace("postgres, ", ""), "no host has the 'postgres' role", "hosts"),
    "no_redis": (GOOD.replace("redis, ", ""), "no host has the 'redis' role", "hosts"),
    "no_api_server": (GOOD.replace("api_server, ", ""), "no host has the 'api_server' role", "hosts"),
    "even_sentinels": (GOOD.replace("redis, sentinel, postgres", "redis, postgres"), "even", "hosts"),
    "port_clash": (GOOD.replace("cluster:\n", "cluster:\n  ports: {flower: 6379}\n"),
                   "two services on port 6379", "cluster.ports"),
    "exporter_port_clash": (GOOD.replace("cluster:\n", "cluster:\n  monitoring: true\n  ports: {redis_exporter: 6379}\n"),
                            "two services on port 6379 of host node1: redis and redis_exporter",
                            "cluster.ports.redis_exporter (host node1)"),
    "wrong_type": (GOOD.replace("worker_concurrency: 4", "worker_concurrency: four"),
                   "expected a number, got a string", "cluster.worker_concurrency"),
    "unknown_key": (GOOD.replace("cluster:\n", "cluster:\n  wokers: 3\n"), "unknown key 'wokers'", "cluster.wokers"),
    "redis_cluster": (GOOD.replace("cluster:\n", "cluster:\n  redis: {mode: cluster}\n"),
                      "Celery/kombu has no Redis Cluster transport", "cluster.redis.mode"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inventory_one_clear_error(tmp_path, case):
    text, what, where = BAD[case]
    with pytest.raises(InventoryError) as err:
        load_inventory(write(tmp_path, text))
    msg = err.value.message
    assert what in msg and where in msg
    assert "fix:" in msg
    assert err.value.exit_code == 2


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inventory_exits_2_before_any_connection(tmp_path, case, no_ssh, capsys):
    path = write(tmp_path, BAD[case][0])
    with pytest.raises(SystemExit) as exc:
        stack.run(None, None, str(path))
    assert exc.value.code == 2
    assert not no_ssh
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_unknown_host_in_selection_exits_2_without_connecting(tmp_path, no_ssh, capsys):
    path = write(tmp_path, GOOD)
    with pytest.raises(SystemExit) as exc:
        stack.run(None, "node1,node9", str(path))
    assert exc.value.code == 2
    assert "node9 is not in the inventory" in capsys.readouterr().err
    assert not no_ssh


def test_cli_bad_inventory_prints_one_error_no_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    path = write(tmp_path, BAD["unknown_role"][0])
    inv_bin = Path(sys.executable).parent / "inv"   # the running venv's (a worktree may have no .venv)
    res = subprocess.run([str(inv_bin), "deploy", "--inventory", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert "unknown role 'flowr'" in res.stderr and "Traceback" not in res.stderr


def test_per_host_override_and_type_check(tmp_path):
    text = GOOD.replace("node3: {roles:", "node3: {worker_concurrency: 8, roles:")
    inv = load_inventory(write(tmp_path, text))
    assert inv.var(inv.hosts["node3"], "worker_concurrency") == 8
    assert inv.var(inv.hosts["node1"], "worker_concurrency") == 4
    with pytest.raises(InventoryError, match=r"hosts\.node3\.worker_concurrency"):
        load_inventory(write(tmp_path, text.replace("worker_concurrency: 8", "worker_concurrency: '8'")))


def _monitored(tmp_path, ports: str, extra_role: str = ""):
    text = GOOD.replace("cluster:\n", f"cluster:\n  monitoring: true\n  ports: {{{ports}}}\n")
    return write(tmp_path, text.replace("flower]", f"flower{extra_role}]"))


@pytest.mark.parametrize("ports, host, pair", [
    ("redis_exporter: 6379", "node1", "redis and redis_exporter"),
    ("statsd: 8793", "node1", "worker_log and statsd"),              # statsd listener of the Airflow hosts
    ("statsd_exporter: 5555", "node3", "flower and statsd_exporter"),
    ("node_exporter: 22", "node1", "ssh and node_exporter"),
    ("postgres_exporter: 26379", "node3", "sentinel and postgres_exporter"),
    ("node_exporter: 9121", "node1", "node_exporter and redis_exporter"),
])
def test_exporter_ports_clash_refused(tmp_path, ports, host, pair):
    with pytest.raises(InventoryError) as err:
        load_inventory(_monitored(tmp_path, ports))
    msg = err.value.message
    assert f"of host {host}: {pair}" in msg and f"(host {host})" in msg and "fix:" in msg


def test_prometheus_port_checked_only_on_monitoring_hosts(tmp_path):
    load_inventory(_monitored(tmp_path, "prometheus: 5432"))      # no host has the monitoring role
    with pytest.raises(InventoryError, match="of host node3: postgres and prometheus"):
        load_inventory(_monitored(tmp_path, "prometheus: 5432", ", monitoring"))


def test_exporter_ports_ignored_with_monitoring_off(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD.replace("cluster:\n", "cluster:\n  ports: {redis_exporter: 6379}\n")))
    assert inv.cluster["ports"]["redis_exporter"] == 6379


def test_port_check_and_monitoring_share_one_table(tmp_path):
    from fabfile import monitoring
    inv = load_inventory(_monitored(tmp_path, "", ", monitoring"))
    for host in inv.hosts.values():
        ports = inv.registry.listening(inv, host)
        assert all(p in ports for e in monitoring.exporters(inv, host) for p in monitoring.EXPORTERS[e][1])
    assert monitoring.exporters(inv, inv.hosts["node3"]) == [
        "node_exporter", "statsd_exporter", "redis_exporter", "postgres_exporter", "prometheus"]


def test_readme_inventory_block_documents_every_default():
    """README's inventory block shows exactly the keys (and defaults) the loader knows: none undocumented."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"## Inventory\n.*?```yaml\n(.*?)```", readme, re.S).group(1)
    doc = yaml.safe_load(block)
    assert doc["cluster"] == inventory.cluster_defaults(REGISTRY)
    assert set(doc["hosts"]["node1"]) <= set(inventory.host_keys(REGISTRY))


def test_worker_queues_per_host(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD.replace("node3: {roles:", "node3: {worker_queues: [default, heavy], roles:")))
    assert inv.var(inv.hosts["node3"], "worker_queues") == ["default", "heavy"]
    assert inv.var(inv.hosts["node1"], "worker_queues") == ["default"]


@pytest.mark.parametrize("queues, message", [
    ("heavy", "expected a list of names"),
    ("[]", "one or more distinct queues"),
    ("[a, a]", "one or more distinct queues"),
    ("['bad name']", "invalid queue name 'bad name'"),
    ("[1]", "expected a list of names"),
])
def test_bad_worker_queues_refused(tmp_path, queues, message):
    text = GOOD.replace("node3: {roles:", f"node3: {{worker_queues: {queues}, roles:")
    with pytest.raises(InventoryError, match=message):
        load_inventory(write(tmp_path, text))


def test_no_worker_serving_default_is_refused(tmp_path):
    text = GOOD.replace("cluster:", "cluster:\n  worker_queues: [heavy]")
    with pytest.raises(InventoryError, match="no worker serves the 'default' queue"):
        load_inventory(write(tmp_path, text))


def test_worker_queues_on_a_host_without_workers_refused(tmp_path):
    text = GOOD + "  node4: {worker_queues: [default], roles: [nginx]}\n"
    with pytest.raises(InventoryError, match="without the 'worker' role"):
        load_inventory(write(tmp_path, text))
