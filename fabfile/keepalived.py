"""keepalived: one address (`cluster.vip`) that survives any host, moved between the nginx hosts by VRRP.

Only with `cluster.vip` set, on every nginx host: unicast VRRP to the other nginx hosts (no multicast
needed), PASS authentication with `vrrp_password` from the secrets file (8 characters: PASS uses no
more), `virtual_router_id` from `cluster.vip_router_id` or derived from the cluster name. Every instance
starts as BACKUP, priorities follow the inventory order (first nginx host highest), and `nopreempt`
keeps the VIP where it is when a former holder returns (one move per failure, not two). A track script
takes the VIP away from a host whose nginx reaches no api-server. The interface is
`cluster.vip_interface`, else the one carrying the host's cluster address (facts: `ip -o -4 addr`).
The firewall allows VRRP (IP protocol 112) from the nginx peers (fabfile/firewall.py); it runs first.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from . import selinux
from .core.component import Check, Component
from .core.errors import InventoryError, UserError
from .core.steps import Command, File, Packages, Service
from .core.templates import render

NAME = "keepalived"
@dataclass(frozen=True)
class KeepalivedSettings:
    vip: str | None = None             # IPv4 address keepalived moves between the nginx hosts (VRRP)
    vip_interface: str | None = None   # default: the interface carrying the host's cluster address
    vip_router_id: int = 0             # VRRP virtual_router_id 1-255; 0 = derived from the cluster name
CONF = "/etc/keepalived/keepalived.conf"
SCRIPT_USER = "keepalived_script"   # keepalived's default script user: the track script never runs as root
CHECK = "/etc/keepalived/airflow-ha-check.sh"
#: the same on every platform (Debian 12: 2.2.7; EL9: AppStream)
PACKAGES = ("keepalived",)
UNIT = "keepalived"
MAX_ROUTER_ID = 255   # VRRP's virtual router id is one byte


def applies(inv, host) -> bool:
    return bool(inv.settings.vip) and host.has("nginx")


def router_id(inv) -> int:
    """`vip_router_id`, else 1-255 derived from the cluster name (stable, differs between clusters)."""
    given = inv.settings.vip_router_id
    return given or 1 + int(hashlib.sha256(inv.settings.name.encode()).hexdigest(), 16) % 255


def priority(inv, host) -> int:
    """Inventory order: the first nginx host 200, the next 199, ... (only the first election uses it)."""
    return 200 - [h.name for h in inv.with_role("nginx")].index(host.name)


def interface(ctx) -> str:
    given = ctx.inv.settings.vip_interface
    found = ctx.facts.interfaces.get(ctx.address)
    if given or found:
        return given or found
    raise UserError(f"no interface of {ctx.host.name} carries its cluster address {ctx.address}",
                    f"{ctx.inv.path}: cluster.vip_interface",
                    "set cluster.vip_interface to the interface the VIP belongs on")


def check_script(inv) -> str:
    """The track script: the local nginx gets an answer from some api-server.

    Any HTTP status below 502 counts (`/api/v2/version` answers 401 without a token); 502-504 or no answer
    mean no api-server is reachable. `-m 5`: a request that first tries a powered-off api-server waits
    proxy_connect_timeout (2 s) before nginx tries the next one, and that is still an answer. It does not
    ask `/monitor/health`, which needs the database: a dead database host must not take the VIP away
    from every healthy nginx.
    """
    ports = inv.ports
    if inv.settings.tls.enabled:
        url = f"-k https://127.0.0.1:{ports.https}/api/v2/version"
    else:
        url = f"http://127.0.0.1:{ports.http}/api/v2/version"
    return ("#!/bin/sh\n# Managed by airflow-ha: keepalived's track script (fabfile/keepalived.py).\n"
            f"code=$(/usr/bin/curl -s -m 5 -o /dev/null -w '%{{http_code}}' {url})\n"
            '[ "$code" -ge 200 ] 2>/dev/null && [ "$code" -lt 502 ]\n')


def config(ctx) -> str:
    inv, run, host = ctx.inv, ctx.run, ctx.host
    vip = inv.settings.vip
    if vip in run.addresses.values():
        owner = next(n for n, a in run.addresses.items() if a == vip)
        raise UserError(f"vip {vip} is the address of host {owner}", f"{inv.path}: cluster.vip",
                        "the VIP must be an address no host owns: pick a free one in the same subnet")
    return render("keepalived/keepalived.conf.j2", host=host.name, vip=vip, interface=interface(ctx),
                  router_id=router_id(inv), priority=priority(inv, host), address=ctx.address,
                  peers=[(h.name, run.addresses[h.name]) for h in inv.with_role("nginx") if h != host],
                  password=ctx.secrets["vrrp_password"], check=CHECK, script_user=SCRIPT_USER)


#: keepalived 2.2.7 (Debian 12) ends `--config-test` of a valid config that has a vrrp_script with SIGTERM
#: (exit 143, seen on the lab); a real error exits 1-5 and prints the offending line. Both 0 and 143 pass.
CONFIG_TEST = (f"rc=0; keepalived --config-test -f {CONF} 2>&1 || rc=$?\n"
               "[ $rc -eq 0 ] || [ $rc -eq 143 ] || { echo \"config test failed ($rc)\"; exit 1; }")


def steps(ctx) -> list:
    unit = UNIT
    return [
        Packages(target="keepalived", names=PACKAGES, manager=ctx.platform.pkg),
        Command(f"user {SCRIPT_USER}", unless=f"getent passwd {SCRIPT_USER}",
                script=f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {SCRIPT_USER}"),
        File(CHECK, check_script(ctx.inv), mode=0o755),
        File(CONF, config(ctx), mode=0o600, notify=(unit,)),
        Command(unit, desc="keepalived --config-test", script=CONFIG_TEST, only_if_notified=True),
        *selinux.steps_for_keepalived(ctx),
        Service(unit, reload_only=True),
    ]


def validate(inv) -> None:
    """`vip` is an IPv4 address no host has; `vip_interface` only with it; router id 0 (derived) or 1-255."""
    c, path = inv.settings, inv.path
    if c.vip is None:
        for key, value in (("vip_interface", c.vip_interface), ("vip_router_id", c.vip_router_id)):
            if value:
                raise InventoryError(f"{key} without vip", f"{path}: cluster.{key}",
                                     "set cluster.vip (the address clients use) or remove this key")
        return
    try:
        vip = ipaddress.IPv4Address(c.vip)
    except ValueError:
        raise InventoryError(f"vip {c.vip!r} is not an IPv4 address", f"{path}: cluster.vip",
                             "give a free IPv4 address in the nginx hosts' subnet, e.g. 10.0.0.100") from None
    owner = next((h.name for h in inv.hosts.values() if h.address == str(vip)), None)
    if owner:
        raise InventoryError(f"vip {vip} is the address of host {owner}", f"{path}: cluster.vip",
                             "the VIP must be an address no host owns: pick a free one in the same subnet")
    if not 0 <= c.vip_router_id <= MAX_ROUTER_ID:
        raise InventoryError(f"vip_router_id {c.vip_router_id} is not in 1-255", f"{path}: cluster.vip_router_id",
                             "use 1-255 (unique among the VRRP routers of this network), or 0 to derive it")


# -- `inv health` -------------------------------------------------------------------------------------------
def health_probe(run, host) -> list[str]:
    """Whether this host holds the VIP now."""
    return [f'echo "@@vip $(ip -o -4 addr show to {run.inv.settings.vip}/32 | wc -l)"'] if applies(run.inv, host) else []


def health_summary(run, answers) -> list[Check]:
    """The "vip" row: exactly one nginx host holds it."""
    vip = run.inv.settings.vip
    if not vip:
        return []
    return [vip_check(vip, {h: a["vip"][-1].strip() not in ("", "0") for h, a in answers.items() if "vip" in a})]


def vip_check(vip: str, held: dict) -> Check:
    """The VIP row from each nginx host's answer (host -> holds it): exactly one holder is ok."""
    holders = [h for h, has in held.items() if has]
    if len(holders) == 1:
        return Check("cluster", "vip", "ok", f"{vip} on {holders[0]}")
    detail = f"{vip} on {' and '.join(holders)}" if holders else f"{vip} on no host ({len(held)} answered)"
    return Check("cluster", "vip", "fail", detail)


class Keepalived(Component):
    """The VIP on the nginx hosts (only with `cluster.vip`)."""

    name = NAME
    settings = KeepalivedSettings
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    validate = staticmethod(validate)
    health_probe = staticmethod(health_probe)
    health_summary = staticmethod(health_summary)

    def units(self, run, host) -> list[str]:
        return [UNIT] if applies(run.inv, host) else []


COMPONENT = Keepalived()
