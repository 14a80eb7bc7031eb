"""End-to-end: firewalld for real on a Debian lab host, and switching ufw → firewalld → ufw (issue 8, item 4).

After `inv deploy` (fixture `deployed`), node3 is switched to firewalld through an inventory copy that says
`firewall: firewalld` for node3 only, converging just the firewall component. The peers-only policy must
hold with either firewall (outsider refused on the cluster ports, peers allowed, HTTP open), exactly one
firewall is active on every host, a second run changes nothing, and switching back to ufw (the platform
default) leaves ufw alone active again.
"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from tests.e2e.test_health import wait_healthy
from tests.e2e.util import NODES, ROOT, address, http_status_from, inv, ssh

pytestmark = pytest.mark.e2e

#: ports node3 serves to peers only (redis, sentinel, postgres, flower, worker log; the Patroni layout adds
#: etcd client 2379 / peer 2380 and Patroni's REST API 8008) plus the api port it does not serve at all
#: (8080: refused either way, listed because an open 8080 would be a policy hole)
PEER_ONLY = (6379, 26379, 5432, 5555, 8793, 2379, 2380, 8008, 8080)
PEER_SERVED = (6379, 26379, 5432, 5555, 8793, 2379, 2380, 8008)


def tcp(src: str, dst: str, port: int) -> str:
    res = ssh(src, f"timeout 3 bash -c '</dev/tcp/{dst}/{port}' 2>/dev/null && echo open || echo closed")
    return res.stdout.strip()


def firewalls(host: str) -> dict:
    """Which firewall is really active: the service and the tool's own view must agree."""
    out = ssh(host, "echo ufw_unit=$(systemctl is-active ufw 2>/dev/null); "
                    "echo ufw_status=$(ufw status 2>/dev/null | head -1 | awk '{print $2}'); "
                    "echo firewalld_unit=$(systemctl is-active firewalld 2>/dev/null); "
                    "echo firewalld_state=$(firewall-cmd --state 2>/dev/null)").stdout
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "ufw": kv.get("ufw_unit") == "active" and kv.get("ufw_status") == "active",
        "firewalld": kv.get("firewalld_unit") == "active" and kv.get("firewalld_state") == "running",
    }


def assert_policy(expected: dict) -> None:
    """expected: host -> the one firewall that must be active there."""
    for host, fw in expected.items():
        active = firewalls(host)
        assert [name for name, on in active.items() if on] == [fw], (host, active)
    node3 = address("node3")
    for port in PEER_ONLY:
        assert tcp("outsider", node3, port) == "closed", f"outsider reached node3:{port}"
    for port in PEER_SERVED:
        assert tcp("node1", node3, port) == "open", f"peer node1 refused on node3:{port}"
    assert tcp("node3", address("node2"), 6379) == "open", "node3 cannot reach a peer (replies blocked?)"
    assert tcp("outsider", node3, 80) == "open"
    code = http_status_from("outsider", f"http://{node3}/api/v2/version")
    assert code.strip() == "200", code
    # the cluster still works across the switched host: node1 reads Redis on node3 (peer rule)
    pong = ssh("node1", f"REDISCLI_AUTH=\"$(grep -oP '^requirepass \\K.*' /etc/redis/airflow-ha.conf)\" "
                        f"redis-cli --no-auth-warning -h {node3} -p 6379 ping").stdout
    assert pong.strip() == "PONG", pong


def firewalld_inventory(tmp_path):
    """A copy of hosts.yaml with `firewall: firewalld` on node3; secrets next to it as the runner expects."""
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["hosts"]["node3"]["firewall"] = "firewalld"
    data.setdefault("cluster", {})["ssh_config"] = str(ROOT / ".lab" / "ssh_config")
    copy = tmp_path / "hosts-firewalld.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / ".secrets").mkdir()
    shutil.copy(ROOT / ".secrets" / "hosts.yaml", tmp_path / ".secrets" / f"{copy.stem}.yaml")
    return copy


def firewall_deploy(inventory=None, hosts=None):
    args = ["firewall.deploy"] + (["--hosts", hosts] if hosts else [])
    res = inv(*args, timeout=900, inventory=inventory)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return res.stdout.strip().splitlines()[-1]


def test_switch_node3_to_firewalld_and_back(deployed, lab, tmp_path):
    import lab as labapi
    labapi.up(outsider=True)
    copy = firewalld_inventory(tmp_path)
    try:
        assert_policy(dict.fromkeys(NODES, "ufw"))

        firewall_deploy(copy)
        assert_policy({"node1": "ufw", "node2": "ufw", "node3": "firewalld"})
        zone = ssh("node3", "firewall-cmd --zone=airflow-ha --list-sources").stdout.split()
        assert sorted(zone) == sorted(address(n) for n in NODES), zone
        again = firewall_deploy(copy)
        assert re.search(r", 0 changed,", again), f"firewalld rules are not idempotent: {again}"

        firewall_deploy(None, hosts="node3")      # the real inventory: auto = ufw on Debian
        assert_policy(dict.fromkeys(NODES, "ufw"))
        leftover = ssh("node3", "nft list tables 2>/dev/null | grep -c firewalld || true").stdout.strip()
        assert leftover in ("", "0"), "firewalld left its nftables table behind"
        again = firewall_deploy(None, hosts="node3")
        assert re.search(r", 0 changed,", again), again
        wait_healthy()     # etcd quorum, Patroni leader and sync standby survived both switches
    finally:
        inv("firewall.deploy", "--hosts", "node3", timeout=900)   # never leave node3 on firewalld
        labapi.stop_node("outsider")
