"""End-to-end: `inv deploy` on the 3-node lab gives a working, secure, idempotent cluster (issue 5).

The default hosts.yaml is the Patroni layout: PostgreSQL on node1-3 under `patroni@15-main` (Debian's
postgresql@15-main stays inactive: Patroni runs the postmaster), etcd on the Sentinel hosts (node1-3).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time

import pytest

from tests.e2e.util import (
    NODES,
    ROOT,
    Airflow,
    address,
    http,
    http_status_from,
    inv,
    inventory,
    postgres_hosts,
    secrets,
    ssh,
)

pytestmark = pytest.mark.e2e

ROLE_UNITS = {
    "redis": "redis-server", "sentinel": "redis-sentinel", "postgres": "patroni@15-main", "etcd": "etcd",
    "nginx": "nginx",
    "api_server": "airflow-api-server", "scheduler": "airflow-scheduler", "dag_processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer", "worker": "airflow-worker", "flower": "airflow-flower",
}


def roles():
    """host -> roles as the deploy sees them (the `etcd` role follows the Sentinels)."""
    return {h.name: set(h.roles) for h in inventory().hosts.values()}


def redis_cli(host, port, args, password_key):
    pw = secrets()[password_key]
    return ssh(host, f"REDISCLI_AUTH='{pw}' redis-cli --no-auth-warning -h {address(host)} -p {port} {args}").stdout


def test_deploy_converged_every_host(deployed):
    assert deployed["rc"] == 0
    recap = deployed["output"].split("host ")[-1]
    for node in NODES:
        assert re.search(rf"^{node}\s+\d+\s+\d+\s+\d+\s+0\s", recap, re.M), recap


def test_redis_one_master_two_replicas_and_sentinels_agree(deployed):
    masters = {n: redis_cli(n, 26379, "SENTINEL get-master-addr-by-name airflow", "sentinel_password").split()[0]
               for n in NODES}
    assert len(set(masters.values())) == 1, masters
    master_ip = next(iter(masters.values()))
    master = next(n for n in NODES if address(n) == master_ip)
    info = redis_cli(master, 6379, "INFO replication", "redis_password")
    assert "role:master" in info and "connected_slaves:2" in info, info
    for node in NODES:
        if node != master:
            assert "role:slave" in redis_cli(node, 6379, "INFO replication", "redis_password")
    ck = redis_cli(NODES[0], 26379, "SENTINEL CKQUORUM airflow", "sentinel_password")
    assert ck.startswith("OK"), ck


def test_unauthenticated_redis_is_refused(deployed):
    out = ssh("node1", f"redis-cli -h {address('node1')} -p 6379 PING").stdout
    assert "NOAUTH" in out, out


def test_postgres_accepts_airflow_from_cluster_hosts_only(deployed):
    """Every node reaches the writable member through the multi-host URL; each member's Patroni-written
    pg_hba admits airflow from 127.0.0.1 and the inventory hosts only, replication/rewind/postgres from the
    members only, all scram-sha-256."""
    pw = secrets()["postgres_password"]
    members = postgres_hosts()
    url = (f"host={','.join(address(m) for m in members)} port=5432 user=airflow dbname=airflow "
           "target_session_attrs=read-write connect_timeout=5")
    for node in NODES:
        res = ssh(node, f"PGPASSWORD='{pw}' psql '{url}' -tAc 'select pg_is_in_recovery()'")
        assert res.stdout.strip() == "f", (node, res.stdout, res.stderr)
    for db in members:
        hba = ssh(db, "cat /etc/postgresql/15/main/pg_hba.conf").stdout
        rows = [ln.split() for ln in hba.splitlines() if ln.startswith("host")]
        airflow = [r[3] for r in rows if r[1:3] == ["airflow", "airflow"]]
        assert sorted(airflow) == sorted(["127.0.0.1/32"] + [f"{address(n)}/32" for n in NODES]), (db, hba)
        internal = {r[3] for r in rows if r[1:3] != ["airflow", "airflow"]}
        assert internal == {f"{address(m)}/32" for m in members}, (db, hba)
        assert all(r[-1] == "scram-sha-256" for r in rows), (db, hba)


def test_shared_keys_identical_on_every_node_and_file_modes(deployed):
    digests = set()
    for node in NODES:
        out = ssh(node, "stat -c '%U:%G %a' /etc/airflow/airflow.env; "
                        "grep -E 'FERNET_KEY|SECRET_KEY|JWT_SECRET' /etc/airflow/airflow.env | sha256sum").stdout
        mode, digest = out.splitlines()
        assert mode == "root:airflow 640"
        digests.add(digest)
    assert len(digests) == 1


def test_every_expected_unit_active_exactly_on_its_hosts(deployed):
    for node, rs in roles().items():
        for role, unit in ROLE_UNITS.items():
            state = ssh(node, f"systemctl is-active {unit}").stdout.strip()
            if role in rs:
                assert state == "active", (node, unit, state)
            elif unit.startswith("airflow-"):
                assert state != "active", (node, unit, state)
        # Patroni runs the postmaster itself: Debian's own instance unit must never start it as well
        if "postgres" in rs:
            assert ssh(node, "systemctl is-active postgresql@15-main").stdout.strip() != "active", node


def test_journal_is_persistent_and_capped_on_every_host(deployed):
    """fabfile/journald.py: the drop-in is what journald runs with (its own view of the disk use, the files)."""
    for node in NODES:
        conf = ssh(node, "systemd-analyze cat-config systemd/journald.conf", check=True).stdout
        assert "SystemMaxUse=1G" in conf and "Storage=persistent" in conf, (node, conf[-800:])
        assert ssh(node, "ls /var/log/journal/*/system.journal", check=False).returncode == 0, node
        assert ssh(node, "systemctl is-active systemd-journald").stdout.strip() == "active", node


def test_health_through_nginx_and_both_api_servers_serve(deployed):
    for _ in range(20):
        status, body = http(f"http://{address('node1')}/api/v2/monitor/health")
        if status == 200 and all(body[k]["status"] == "healthy"
                                 for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
            break
        time.sleep(3)
    assert status == 200 and all(body[k]["status"] == "healthy"
                                 for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")), body
    marker = f"/api/v2/version?probe={int(time.time())}"
    for _ in range(12):
        http(f"http://{address('node1')}{marker}")
    api_hosts = [n for n, r in roles().items() if "api_server" in r]
    served = {n: ssh(n, f"journalctl -u airflow-api-server --since '-5min' | grep -c '{marker.split('?')[1]}'"
                     ).stdout.strip() for n in api_hosts}
    assert all(int(v or 0) > 0 for v in served.values()), served


def test_flower_requires_auth(deployed):
    status, _ = http(f"http://{address('node1')}/flower/")
    assert status == 401
    import base64
    auth = base64.b64encode(f"flower:{secrets()['flower_password']}".encode()).decode()
    status, _ = http(f"http://{address('node1')}/flower/api/workers", headers={"Authorization": f"Basic {auth}"})
    assert status == 200


def test_celery_dag_runs_on_at_least_two_workers(deployed):
    api = Airflow("node1")
    api.wait_dag_loaded("test_ha_celery_workers")
    run_id = api.trigger("test_ha_celery_workers")
    assert api.wait_run("test_ha_celery_workers", run_id, timeout=600) == "success"
    hosts = {ti["hostname"] for ti in api.task_instances("test_ha_celery_workers", run_id)}
    assert len(hosts & set(NODES)) >= 2, hosts


def test_firewall_outsider_refused_peers_allowed(deployed, lab):
    import lab as labapi
    labapi.up(outsider=True)
    try:
        # node3: the database (every member listens), flower, and the Patroni layout's etcd client/peer and
        # Patroni REST ports; node1: redis, sentinel, api-server
        for port in (6379, 26379, 5432, 8080, 5555, 2379, 2380, 8008):
            target = address("node3") if port in (5432, 5555, 2379, 2380, 8008) else address("node1")
            res = ssh("outsider", f"timeout 3 bash -c '</dev/tcp/{target}/{port}' && echo open || echo closed")
            assert res.stdout.strip() == "closed", (port, res.stdout)
            peer = ssh("node2", f"timeout 3 bash -c '</dev/tcp/{target}/{port}' && echo open || echo closed")
            assert peer.stdout.strip() == "open", (port, peer.stdout)
        assert http_status_from("outsider", f"http://{address('node1')}/api/v2/version") == "200"
    finally:
        labapi.stop_node("outsider")


def _pids():
    script = ("for u in redis-server redis-sentinel patroni@15-main etcd nginx airflow-api-server airflow-scheduler "
              "airflow-dag-processor airflow-triggerer airflow-worker airflow-flower; do "
              "echo $u=$(systemctl show -p MainPID --value $u 2>/dev/null); done")
    return {n: ssh(n, script).stdout for n in NODES}


def _etc_sum():
    return {n: ssh(n, "find /etc -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum 2>/dev/null "
                      "| sha256sum").stdout for n in NODES}


def test_second_deploy_changes_nothing_and_restarts_nothing(deployed):
    before = _pids()
    res = inv("deploy")
    assert res.returncode == 0, res.stdout[-3000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert re.search(r", 0 changed,", summary), summary
    assert _pids() == before


def test_check_mode_changes_nothing_and_reports_nothing(deployed):
    etc, pids = _etc_sum(), _pids()
    res = inv("deploy", "--check")
    assert res.returncode == 0, res.stdout[-3000:]
    assert re.search(r", 0 would change,", res.stdout), res.stdout[-1500:]
    assert _etc_sum() == etc and _pids() == pids


def test_worker_concurrency_change_touches_only_workers(deployed, tmp_path):
    """Check mode shows the diff of exactly the worker unit files; the real run restarts only workers."""
    copy = tmp_path / "hosts.yaml"
    text = (ROOT / "hosts.yaml").read_text().replace("worker_concurrency: 4", "worker_concurrency: 3")
    copy.write_text(text)
    (tmp_path / ".secrets").mkdir()
    shutil.copy(ROOT / ".secrets/hosts.yaml", tmp_path / ".secrets/hosts.yaml")
    shutil.copytree(ROOT / "files/dags", tmp_path / "files/dags")
    etc, pids = _etc_sum(), _pids()
    check = inv("deploy", "--check", inventory=copy)
    assert check.returncode == 0, check.stdout[-2000:]
    assert "-ExecStart" in check.stdout and "--concurrency 3" in check.stdout
    assert _etc_sum() == etc
    changed = re.findall(r"^(node\d)\s+(\S+)\s+would change\s+(.*)$", check.stdout, re.M)
    assert {c[2].split(":")[0] for c in changed} == {"file /etc/systemd/system/airflow-worker.service",
                                                     "service airflow-worker",
                                                     "command airflow-worker"}, changed   # + wait until ready
    try:
        res = inv("deploy", inventory=copy)
        assert res.returncode == 0, res.stdout[-2000:]
        after = _pids()
        for node in NODES:
            old = dict(ln.split("=") for ln in pids[node].split())
            new = dict(ln.split("=") for ln in after[node].split())
            for unit, pid in old.items():
                if unit == "airflow-worker" and pid != "0":
                    assert new[unit] != pid, (node, unit)
                else:
                    assert new[unit] == pid, (node, unit)
    finally:
        assert inv("deploy").returncode == 0


def test_no_secret_in_verbose_deploy_output(deployed):
    out = deployed["output"]
    leaked = [k for k, v in secrets().items() if isinstance(v, str) and v in out]
    assert not leaked, f"secrets printed: {leaked}"


def test_lab_limits_are_warnings(deployed):
    assert re.search(r"warn\s+.*LimitNOFILE", deployed["output"]), "no LimitNOFILE warning"


def test_secret_files_modes_on_hosts(deployed):
    out = ssh("node1", "stat -c '%n %U:%G %a' /etc/redis/airflow-ha.conf /etc/airflow/airflow.env "
                       "/etc/nginx/airflow-ha-flower.htpasswd").stdout
    for line in out.splitlines():
        _, _owner, mode = line.split()
        assert mode in ("600", "640"), line
        assert not int(mode[-1]), line


def test_secrets_file_is_private():
    import os
    import stat
    path = ROOT / ".secrets" / "hosts.yaml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def _hash(text):
    return hashlib.sha256(text.encode()).hexdigest()
