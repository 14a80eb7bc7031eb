"""Fixed lab facts: node names and addresses, the bridge, and where state lives."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import yaml

from lab.errors import LabError

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".lab"                      # per checkout: keys, overlays, console logs (git-ignored)
NODES_DIR = STATE / "nodes"
CACHE = Path("/var/cache/airflow-ha")      # machine-wide, survives fresh clones (warm CI)
BASE = CACHE / "lab-base-bookworm"
ACNG_DIR = CACHE / "acng"
RUN = Path("/run/airflow-ha-lab")          # machine-wide record of the PIDs the lab started

BRIDGE = "br-afha"
NETWORK = ipaddress.ip_network("10.213.0.0/24")
CONTROL_ADDR = "10.213.0.1"                # the control machine on the bridge (apt cache); never a gateway
ACNG_PORT = 3142
OUTSIDER = "outsider"                      # an extra host that is NOT in the inventory
OUTSIDER_ADDR = "10.213.0.99"
FIRST_OCTET = 10                           # node i (1-based) = 10.213.0.(10 + i)
MAX_NODES = 88                             # .11 .. .98; .99 is the outsider
GUARD_TABLE = "airflow_ha_labguard"
BLACKHOLE_METRIC = 4242                    # above the bridge's own connected route (metric 0)
SUITE = "bookworm"
BASE_PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,python3,sudo,iproute2"


def inventory_path(path: str | os.PathLike | None = None) -> Path:
    """The inventory: `path`, else $AIRFLOW_HA_INVENTORY, else <repo>/hosts.yaml."""
    return Path(path or os.environ.get("AIRFLOW_HA_INVENTORY") or REPO / "hosts.yaml")


def inventory_names(path: str | os.PathLike | None = None) -> list[str]:
    """Host names of the inventory's top-level `hosts:` mapping, in file order."""
    p = inventory_path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise LabError(f"{p}: inventory not found (set --inventory or AIRFLOW_HA_INVENTORY)") from None
    except yaml.YAMLError as e:
        raise LabError(f"{p}: not valid YAML: {e}") from None
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, dict) or not hosts:
        raise LabError(f"{p}: no `hosts:` mapping with at least one host")
    names = [str(n) for n in hosts]
    if OUTSIDER in names:
        raise LabError(f"{p}: the name {OUTSIDER!r} is reserved for the lab's outsider host")
    return names


def node_names(count: int | None = None, path: str | os.PathLike | None = None) -> list[str]:
    """The first `count` lab hosts: inventory names, then node<i> for positions past its end."""
    names = inventory_names(path)
    if not count:
        return names
    if count > MAX_NODES:
        raise LabError(f"the lab holds at most {MAX_NODES} hosts, asked for {count}")
    extra = [f"node{i}" for i in range(len(names) + 1, count + 1)]
    clash = set(extra) & set(names)
    if clash:
        raise LabError(f"cannot extend the inventory to {count} hosts: {sorted(clash)} already named")
    return (names + extra)[:count]


def node_address(name: str, path: str | os.PathLike | None = None) -> str:
    """The bridge address of a lab host: its 1-based position i in the node list -> 10.213.0.(10+i)."""
    if name == OUTSIDER:
        return OUTSIDER_ADDR
    names = inventory_names(path)
    if name in names:
        index = names.index(name) + 1
    else:
        m = re.fullmatch(r"node(\d+)", name)
        if not m or not len(names) < int(m.group(1)) <= MAX_NODES:
            raise LabError(f"{name!r} is not a lab host (not in {inventory_path(path)} nor node<N> past it)")
        index = int(m.group(1))
    return str(NETWORK.network_address + FIRST_OCTET + index)


def ssh_config_path() -> Path:
    """The lab's own ssh_config (also installed as a managed block in ~/.ssh/config by `up`)."""
    return STATE / "ssh_config"
