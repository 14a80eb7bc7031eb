"""The lab's bridge and its safety net: forward guard (nftables) and a blackhole route.

Safety (non-negotiable): the machine keeps ip_forward at 0, nothing is forwarded into or out of the
bridge, and the whole lab range is blackholed, so with the bridge down nothing addressed to a lab host
leaves the machine. Guard and blackhole stay in place after `down` on purpose.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from lab.config import BLACKHOLE_METRIC, BRIDGE, CONTROL_ADDR, GUARD_TABLE, NETWORK
from lab.errors import LabError
from lab.proc import run

GUARD = f"""table inet {GUARD_TABLE} {{}}
delete table inet {GUARD_TABLE}
table inet {GUARD_TABLE} {{
  chain forward_guard {{
    type filter hook forward priority filter - 10; policy accept;
    iifname "{BRIDGE}" oifname != "{BRIDGE}" drop comment "lab hosts never leave the bridge"
    oifname "{BRIDGE}" iifname != "{BRIDGE}" drop comment "nothing is forwarded onto the bridge"
  }}
}}
"""
CONTROL_CIDR = f"{CONTROL_ADDR}/{NETWORK.prefixlen}"


def _ip_json(*args: str) -> list[dict]:
    return json.loads(run(["ip", "-j", *args]).stdout or "[]")


def bridge_state() -> str:
    """'absent', 'ours' (a bridge named BRIDGE holding CONTROL_ADDR/24) or a reason it is not ours."""
    links = [link for link in _ip_json("-d", "link", "show") if link.get("ifname") == BRIDGE]
    if not links:
        return "absent"
    kind = links[0].get("linkinfo", {}).get("info_kind")
    if kind != "bridge":
        return f"{BRIDGE} exists but is a {kind or 'plain'} interface, not a bridge"
    addrs = {f"{a['local']}/{a['prefixlen']}" for i in _ip_json("-4", "addr", "show", "dev", BRIDGE)
             for a in i.get("addr_info", [])}
    if addrs - {CONTROL_CIDR}:
        return f"{BRIDGE} carries {', '.join(sorted(addrs))}, not only {CONTROL_CIDR}"
    return "ours"


def range_conflicts() -> list[str]:
    """Addresses or routes of something else than the lab that use the lab range."""
    found = []
    for iface in _ip_json("-4", "addr", "show"):
        if iface.get("ifname") == BRIDGE:
            continue
        for a in iface.get("addr_info", []):
            net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            if net.overlaps(NETWORK):
                found.append(f"address {a['local']}/{a['prefixlen']} on {iface['ifname']}")
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") == BRIDGE or route.get("table") == "local":
            continue
        net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        if route.get("type") == "blackhole" and net == NETWORK:
            continue  # ours (any metric)
        if net.overlaps(NETWORK) and net.prefixlen >= NETWORK.prefixlen:
            found.append(f"route {dst} via {route.get('dev') or route.get('type')}")
    return found


def ensure_bridge() -> str:
    """Create the bridge or adopt ours; return 'created' or 'adopted'. Clear error on a conflict."""
    state = bridge_state()
    if state not in ("absent", "ours"):
        raise LabError(f"bridge range in use: {state}; remove it or free {NETWORK}")
    conflicts = range_conflicts()
    if conflicts:
        raise LabError(f"the lab range {NETWORK} is already in use on this machine "
                       f"({'; '.join(conflicts)}); the lab will not share it")
    if state == "absent":
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    ipv6 = Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6")
    if ipv6.exists():
        ipv6.write_text("1")
    if state == "absent":
        run(["ip", "addr", "add", CONTROL_CIDR, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    return "created" if state == "absent" else "adopted"


def remove_bridge() -> None:
    if bridge_state() == "ours":
        run(["ip", "link", "del", BRIDGE])


def ensure_guard() -> None:
    """(Re)write the forward guard atomically."""
    run(["nft", "-f", "-"], input=GUARD)


def guard_rules() -> str:
    """The guard table as nft prints it ('' when absent)."""
    return run(["nft", "list", "table", "inet", GUARD_TABLE], check=False).stdout


def ensure_blackhole() -> None:
    if not blackhole_present():
        run(["ip", "route", "add", "blackhole", str(NETWORK), "metric", str(BLACKHOLE_METRIC)])


def blackhole_present() -> bool:
    return any(r.get("dst") == str(NETWORK) and r.get("metric") == BLACKHOLE_METRIC
               for r in _ip_json("-4", "route", "show", "type", "blackhole"))


def ensure_network() -> str:
    """Blackhole and guard first, then the bridge: there is never a moment without the safety net."""
    ensure_blackhole()
    ensure_guard()
    return ensure_bridge()
