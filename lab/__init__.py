"""The airflow-ha lab: real Debian 12 hosts (systemd as PID 1, sshd) booted with systemd-nspawn
on a private bridge of this machine, so the suite deploys onto real hosts without touching servers.

Public API (everything else is internal)::

    up(names=None, outsider=False, fresh=False) -> list[Node]
    down(); reset(); status() -> list[Node]
    stop_node(name); start_node(name); is_running(name) -> bool; Power() (off/on, for failover drills)
    node_address(name) -> str; ssh_config_path() -> Path; OUTSIDER
"""

import importlib

#: public name -> the module that defines it; loaded on first use, so `inv` (which mounts lab.tasks for every
#: command) does not import the whole lab before a deploy (start-up time)
_WHERE = {**dict.fromkeys(("Power", "down", "is_running", "reset", "start_node", "status", "stop_node", "up"),
                          "lab.api"),
          **dict.fromkeys(("OUTSIDER", "inventory_names", "node_address", "node_names", "ssh_config_path"),
                          "lab.config"),
          "LabError": "lab.errors", "Node": "lab.nodes"}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lab' has no attribute {name!r}")


__all__ = [
    "OUTSIDER",
    "LabError",
    "Node",
    "Power",
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
