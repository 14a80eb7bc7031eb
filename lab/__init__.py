"""The airflow-ha lab: real Debian 12 hosts (systemd as PID 1, sshd) booted with systemd-nspawn
on a private bridge of this machine, so the suite deploys onto real hosts without touching servers.

Public API (everything else is internal)::

    up(names=None, outsider=False, fresh=False) -> list[Node]
    down(); reset(); status() -> list[Node]
    stop_node(name); start_node(name); is_running(name) -> bool
    node_address(name) -> str; ssh_config_path() -> Path; OUTSIDER
"""

from lab.api import down, is_running, reset, start_node, status, stop_node, up
from lab.config import OUTSIDER, inventory_names, node_address, node_names, ssh_config_path
from lab.errors import LabError
from lab.nodes import Node

__all__ = [
    "OUTSIDER",
    "LabError",
    "Node",
    "down",
    "inventory_names",
    "is_running",
    "node_address",
    "node_names",
    "reset",
    "ssh_config_path",
    "start_node",
    "status",
    "stop_node",
    "up",
]
