"""`inv lab.*`: the lab as invoke tasks (mounted in tasks.py as the `lab` collection)."""

from __future__ import annotations

import functools
import os

from invoke import Collection, task
from invoke.exceptions import Exit

import lab
from lab.config import ssh_config_path


def _clear_errors(fn):
    """LabError -> one message and exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except lab.LabError as e:
            raise Exit(f"lab: error: {e}", code=1) from None

    return wrapper


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s, hour = int(seconds), 3600
    return f"{s // hour}h{s % hour // 60:02d}m" if s >= hour else f"{s // 60}m{s % 60:02d}s"


def _table(nodes: list[lab.Node]) -> None:
    from tabulate import tabulate
    rows = [(n.name, n.address, n.state, _uptime(n.uptime)) for n in nodes]
    print(tabulate(rows, headers=["name", "address", "state", "uptime"]))


@task(help={"nodes": "boot node1..nodeN (default: one host per inventory host)",
            "outsider": "also boot `outsider`, a host that is not in the inventory",
            "fresh": "discard the hosts' changes first (pristine hosts)",
            "inventory": "inventory file (default: $AIRFLOW_HA_INVENTORY or hosts.yaml)"})
@_clear_errors
def up(c, nodes=0, outsider=False, fresh=False, inventory=None):
    """Boot the lab hosts (builds the base image once); re-runnable."""
    lab.up(outsider=outsider, fresh=fresh, nodes_count=int(nodes) or None, inventory=inventory)
    _table(lab.status())


@task
@_clear_errors
def down(c):
    """Power every lab host off and remove the bridge and the lab's ssh names."""
    lab.down()


@task(help={"nodes": "boot node1..nodeN", "outsider": "also boot `outsider`"})
@_clear_errors
def reset(c, nodes=0, outsider=False):
    """down, discard every host's changes, up: pristine hosts."""
    lab.reset(outsider=outsider, nodes_count=int(nodes) or None)
    _table(lab.status())


@task
@_clear_errors
def status(c):
    """Table of the lab hosts: name, address, state, uptime."""
    _table(lab.status())


@task(name="stop-node", help={"name": "host to power off", "hard": "pull the plug (no clean shutdown)"})
@_clear_errors
def stop_node(c, name, hard=False):
    """Power one host off, cleanly or --hard (failover drills)."""
    print(f"lab: {name} {'stopped' if lab.stop_node(name, hard=hard) else 'was not running'}")


@task(name="start-node", help={"name": "host to power on"})
@_clear_errors
def start_node(c, name):
    """Power one host on and wait until it is ready."""
    node = lab.start_node(name)
    print(f"lab: {node.name} {node.state}")


@task(help={"name": "host to log into"})
@_clear_errors
def ssh(c, name):
    """Open a shell on a lab host."""
    lab.node_address(name)
    os.execvp("ssh", ["ssh", "-F", str(ssh_config_path()), name])


ns = Collection("lab", up, down, reset, status, stop_node, start_node, ssh)
