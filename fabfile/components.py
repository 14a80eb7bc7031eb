"""The ordered component list: adding a component is one line here (plus its module and files/<name>/).

Order is deploy order (fabfile/stack.py explains it): every component runs on all selected hosts before
the next one starts.
"""

from __future__ import annotations

from pathlib import Path

from . import (
    airflow,
    backup,
    dags,
    etcd,
    firewall,
    journald,
    keepalived,
    monitoring,
    nginx,
    packages,
    postgres,
    redis,
    services,
)
from .core import inventory
from .core.component import Registry
from .core.inventory import Inventory

COMPONENTS = [
    packages.COMPONENT,
    firewall.COMPONENT,
    journald.COMPONENT,
    redis.COMPONENT,
    etcd.COMPONENT,
    postgres.COMPONENT,
    backup.COMPONENT,
    airflow.COMPONENT,
    dags.COMPONENT,
    services.COMPONENT,
    nginx.COMPONENT,
    keepalived.COMPONENT,
    monitoring.COMPONENT,
]
BY_NAME = {c.name: c for c in COMPONENTS}
REGISTRY = Registry(tuple(COMPONENTS))


def load_inventory(path: str | Path | None = None) -> Inventory:
    """The inventory file, validated against every component's roles and ports (before any connection)."""
    return inventory.load(path, REGISTRY)
