"""End-to-end checks of the lab itself: real hosts, reachable by name, with no way out."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import lab as labapi
from lab import nodes
from lab.config import BLACKHOLE_METRIC, BRIDGE, GUARD_TABLE, NETWORK, REPO

pytestmark = pytest.mark.e2e


def ssh(name: str, command: str, config: Path | None = None, check: bool = True) -> str:
    r = subprocess.run(["ssh", "-F", str(config or labapi.ssh_config_path()), name, command],
                       capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert r.returncode == 0, f"{name}: {command}: {r.stderr}"
    return r.stdout.strip()


def host_json(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True,
                                     check=True).stdout or "[]")


def test_systemd_is_pid1_and_running(lab):
    for node in lab:
        assert ssh(node.name, "cat /proc/1/comm") == "systemd"
        state = ssh(node.name, "systemctl is-system-running", check=False)
        failed = ssh(node.name, "systemctl --failed --no-legend", check=False)
        assert state == "running", f"{node.name} is {state}: {failed}"


def test_hostname_is_the_inventory_name(lab):
    assert [n.name for n in lab] == labapi.inventory_names()
    for node in lab:
        assert ssh(node.name, "hostname") == node.name


def test_each_host_has_its_own_address_on_the_bridge(lab):
    addresses = [n.address for n in lab]
    assert len(set(addresses)) == len(addresses)
    for node in lab:
        assert ipaddress.ip_address(node.address) in NETWORK
        assert node.address == labapi.node_address(node.name)
        assert f"inet {node.address}/24" in ssh(node.name, "ip -4 -o addr show dev host0")
    ports = {link["ifname"] for link in host_json("link", "show", "master", BRIDGE)}
    assert {f"vb-{n.name}" for n in lab} <= ports


def test_ssh_checks_host_keys(lab, tmp_path):
    cfg = labapi.ssh_config_path().read_text()
    assert "StrictHostKeyChecking yes" in cfg and "UserKnownHostsFile" in cfg
    first, second = lab[0], lab[1]
    # a known_hosts that pins the wrong key for the first host must make ssh refuse it
    known = labapi.ssh_config_path().with_name("known_hosts").read_text().splitlines()
    wrong = [f"{first.name},{first.address} {ln.split(' ', 1)[1]}" for ln in known
             if ln.startswith(f"{second.name},")]
    (tmp_path / "known_hosts").write_text("\n".join(wrong) + "\n")
    (tmp_path / "ssh_config").write_text(cfg.replace(str(labapi.ssh_config_path().with_name("known_hosts")),
                                                     str(tmp_path / "known_hosts")))
    r = subprocess.run(["ssh", "-F", str(tmp_path / "ssh_config"), first.name, "true"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 255 and "host key" in r.stderr.lower(), r.stderr


def test_fab_and_ssh_reach_hosts_by_name_with_no_flags(lab, tmp_path):
    fab = REPO / ".venv/bin/fab"
    fab = str(fab) if fab.exists() else shutil.which("fab")
    names = ",".join(n.name for n in lab)
    r = subprocess.run([fab, "-H", names, "--", "hostname"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [n.name for n in lab]
    r = subprocess.run(["ssh", lab[0].name, "hostname"], capture_output=True, text=True, timeout=30, check=False)
    assert r.stdout.strip() == lab[0].name, r.stderr


def test_hosts_have_no_route_out(lab):
    for node in lab:
        assert ssh(node.name, "ip -4 route show default") == ""
        assert ssh(node.name, "ip -6 route show default") == ""
        for route in json.loads(ssh(node.name, "ip -j -4 route show")):
            assert ipaddress.ip_network(route["dst"], strict=False).subnet_of(NETWORK), route
            assert "gateway" not in route, route


def test_control_machine_safety_net():
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    guard = subprocess.run(["nft", "list", "table", "inet", GUARD_TABLE], capture_output=True,
                           text=True, check=True).stdout
    assert "hook forward" in guard
    assert f'iifname "{BRIDGE}" oifname != "{BRIDGE}" drop' in guard
    assert f'oifname "{BRIDGE}" iifname != "{BRIDGE}" drop' in guard
    holes = [r for r in host_json("-4", "route", "show", "type", "blackhole") if r["dst"] == str(NETWORK)]
    assert holes and holes[0]["metric"] == BLACKHOLE_METRIC
    bridge = [r for r in host_json("-4", "route", "show", "dev", BRIDGE) if r["dst"] == str(NETWORK)]
    assert bridge and bridge[0].get("metric", 0) < BLACKHOLE_METRIC


def test_apt_goes_through_the_lab_cache(lab):
    node = lab[0].name
    conf = ssh(node, "apt-config dump | grep -i -e 'Acquire::http::Proxy ' -e 'Acquire::http::Timeout '")
    assert '"http://10.213.0.1:3142"' in conf and '"20"' in conf
    ssh(node, "timeout 120 apt-get -q update")


def test_outsider_boots_outside_the_inventory(lab):
    was_running = labapi.is_running(labapi.OUTSIDER)
    try:
        nodes = labapi.up(outsider=True)
        out = next(n for n in nodes if n.name == labapi.OUTSIDER)
        assert labapi.OUTSIDER not in labapi.inventory_names()
        assert out.address not in {n.address for n in lab}
        assert ssh(labapi.OUTSIDER, "hostname") == labapi.OUTSIDER
    finally:
        if not was_running:
            labapi.stop_node(labapi.OUTSIDER)


def test_stop_and_start_one_host(lab):
    node = lab[-1]
    assert labapi.stop_node(node.name)
    assert not labapi.is_running(node.name)
    with pytest.raises(OSError):
        socket.create_connection((node.address, 22), timeout=2).close()
    assert [n.state for n in labapi.status() if n.name == node.name] == ["stopped"]
    started = labapi.start_node(node.name)
    assert started.state == "running" and labapi.is_running(node.name)
    assert ssh(node.name, "hostname") == node.name


def test_reboot_inside_a_host_comes_back(lab):
    """`systemctl reboot` inside: nspawn exits 133 and the lab's loop boots the host again."""
    node = lab[-1]
    rec = nodes.launcher(node.name)
    before = nodes.container_init(rec)
    ssh(node.name, "systemctl reboot", check=False)
    deadline = time.monotonic() + 60
    while nodes.container_init(rec) in (before, None):
        assert time.monotonic() < deadline, "the host did not come back from its reboot"
        time.sleep(0.2)
    assert nodes.launcher(node.name) == rec  # same launcher loop, new boot
    assert nodes.wait_ready(node.name, node.address, rec) == "running"
