"""Unit tests of the lab's pure parts (no root, no hosts)."""

from __future__ import annotations

import pytest

from lab import config, network, sshcfg
from lab.errors import LabError
from lab.image import replace_block


@pytest.fixture
def inventory(tmp_path, monkeypatch):
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n  db:\n    roles: [postgres]\n  web1:\n    roles: [nginx]\n")
    monkeypatch.setenv("AIRFLOW_HA_INVENTORY", str(path))
    return path


def test_names_come_from_the_inventory_in_order(inventory):
    assert config.inventory_names() == ["db", "web1"]
    assert config.node_names() == ["db", "web1"]
    assert config.node_names(1) == ["db"]
    assert config.node_names(4) == ["db", "web1", "node3", "node4"]


def test_addresses_follow_positions(inventory):
    assert config.node_address("db") == "10.213.0.11"
    assert config.node_address("web1") == "10.213.0.12"
    assert config.node_address("node4") == "10.213.0.14"
    assert config.node_address(config.OUTSIDER) == "10.213.0.99"
    with pytest.raises(LabError):
        config.node_address("node2")  # position 2 is web1
    with pytest.raises(LabError):
        config.node_address("stranger")


def test_default_inventory_is_node1_to_node3(monkeypatch):
    monkeypatch.delenv("AIRFLOW_HA_INVENTORY", raising=False)
    assert config.inventory_names() == ["node1", "node2", "node3"]


def test_bad_inventories_are_clear_errors(tmp_path):
    with pytest.raises(LabError, match="not found"):
        config.inventory_names(tmp_path / "missing.yaml")
    (tmp_path / "x.yaml").write_text("cluster: {}\n")
    with pytest.raises(LabError, match="hosts"):
        config.inventory_names(tmp_path / "x.yaml")
    (tmp_path / "y.yaml").write_text("hosts:\n  outsider: {}\n")
    with pytest.raises(LabError, match="reserved"):
        config.inventory_names(tmp_path / "y.yaml")
    with pytest.raises(LabError, match="at most"):
        config.node_names(200)


def test_managed_block_replaces_any_older_one_and_keeps_the_rest():
    user = "Host *\n    ServerAliveInterval 30\n"
    old = ("# BEGIN airflow-ha lab (/old/checkout)\nHost node1\n    HostName x\n"
           "# END airflow-ha lab (/old/checkout)\n")
    new_block = "# BEGIN airflow-ha lab (/new)\nHost node1\n    HostName y\n# END airflow-ha lab (/new)\n"
    text = replace_block(old + "\n" + user, sshcfg.BEGIN, sshcfg.END, new_block, top=True)
    assert text.startswith(new_block) and text.endswith(user) and "/old/checkout" not in text
    assert replace_block(text, sshcfg.BEGIN, sshcfg.END, "").strip() == user.strip()


def test_host_blocks_check_host_keys():
    text = sshcfg.host_blocks({"node1": "10.213.0.11"})
    assert "Host node1\n    HostName 10.213.0.11\n    User root\n" in text
    assert "StrictHostKeyChecking yes" in text and f"UserKnownHostsFile {sshcfg.KNOWN_HOSTS}" in text


def test_guard_drops_everything_crossing_the_bridge():
    assert "hook forward" in network.GUARD
    assert f'iifname "{config.BRIDGE}" oifname != "{config.BRIDGE}" drop' in network.GUARD
    assert f'oifname "{config.BRIDGE}" iifname != "{config.BRIDGE}" drop' in network.GUARD
