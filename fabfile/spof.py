"""What in the inventory is still a single point of failure: one pure function over the inventory.

`inv deploy --check` prints the list, `inv health` shows one "warn" row per entry (host "cluster",
check "single point of failure"). The layout is accepted as it is: this only makes it visible.
"""

from __future__ import annotations

#: role -> (what the report calls it, what happens when its one host fails)
ROLES = {
    "postgres": ("database", ""),
    "redis": ("redis", ""),
    "sentinel": ("sentinel", ""),
    "api_server": ("api-server", ""),
    "scheduler": ("scheduler", ""),
    "dag_processor": ("dag-processor", "restarts in place"),
    "triggerer": ("triggerer", ""),
    "worker": ("worker", ""),
    "flower": ("flower", ""),
    "nginx": ("nginx", ""),
    "etcd": ("etcd", "Patroni's DCS: its loss demotes the leader"),
}


def single_points(inv) -> list[str]:
    """One line per single point of failure, e.g. "flower: 1 host (node3)", "no VIP: clients use ..."."""
    out = []
    for role, (what, note) in ROLES.items():
        hosts = inv.with_role(role)
        if len(hosts) == 1:
            out.append(f"{what}: 1 host ({hosts[0].name}{', ' + note if note else ''})")
    nginx = inv.with_role("nginx")
    if not inv.settings.vip and nginx:
        out.append(f"no VIP: clients use {nginx[0].name}'s address (set cluster.vip)")
    return out
