"""Host firewall: SSH and HTTP(S) public; Redis, Sentinel, PostgreSQL, api-server, log server, Flower and
exporters open to cluster hosts only. ufw (Debian/Ubuntu) or firewalld (EL9), or as the inventory says;
exactly one firewall is active (the other is stopped and disabled first).
HTTP(S) is public only on hosts with the nginx role (a local-only nginx listens on 127.0.0.1). With
`cluster.vip`, nginx hosts accept VRRP (IP protocol 112) from the other nginx hosts: ufw >= 0.36 knows
`proto vrrp` (ufw/util.py supported_protocols), firewalld a rich rule `protocol value="vrrp"` in the
peers' zone (a peer's packets are dispatched to that zone by their source address).

A no-op starts no `ufw` (a Python program: its start-up was two thirds of a no-op's time on the hosts,
issue 18). The policy is read from the files ufw itself writes (`ENABLED=yes`, `DEFAULT_INPUT_POLICY`)
plus its chain in the kernel; the rules from a stamp: after the rules were verified with `ufw show added`,
the apply writes the wanted rules' hash beside the hash of `/etc/ufw/user*.rules` (the files ufw loads and
`ufw show added` reads). Any change to those files (`ufw allow/delete` by hand, a reinstall) or to the
wanted rules breaks the stamp, and the full comparison and repair run again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import keepalived
from .core.component import Component
from .core.errors import InventoryError, PlatformError
from .core.steps import Command, Packages, Service

NAME = "firewall"
@dataclass(frozen=True)
class FirewallSettings:
    firewall: str = "auto"             # auto (the platform's default) | ufw | firewalld; per host overridable
FIREWALLS = ("auto", "ufw", "firewalld")
#: firewall -> its packages, per platform family (ufw is EPEL-only on EL9: refused there)
PACKAGES = {"debian": {"ufw": ("ufw",), "firewalld": ("firewalld",)}, "rhel": {"ufw": (), "firewalld": ("firewalld",)}}
ZONE = "airflow-ha"
SSH_PORT = 22


def applies(inv, host) -> bool:
    return True


def kind(ctx) -> str:
    wanted = ctx.settings.firewall
    return ctx.platform.firewall if wanted == "auto" else wanted


def public_ports(ctx) -> list[int]:
    """SSH, and what the host's components open to anyone (the components declare it: core/component.py)."""
    ports = ctx.inv.ports
    return [SSH_PORT] + [getattr(ports, n) for n in ctx.inv.registry.public_ports(ctx.inv, ctx.host)]


def peer_ports(ctx) -> list[int]:
    """Every component's cluster-only ports, on every host (a host added later finds them open)."""
    ports = ctx.inv.ports
    return sorted({getattr(ports, n) for n in ctx.inv.registry.peer_ports(ctx.inv)})


def peer_sources(ctx) -> list[str]:
    sources = sorted(set(ctx.run.addresses.values()))
    if ctx.inv.settings.monitoring_cidr:
        sources.append(ctx.inv.settings.monitoring_cidr)
    return sources


def vrrp_peers(ctx) -> list[str]:
    """Addresses VRRP adverts come from: the other keepalived (nginx) hosts, when this host runs one."""
    inv, host = ctx.inv, ctx.host
    if not keepalived.applies(inv, host):
        return []
    return [ctx.run.addresses[h.name] for h in inv.with_role("nginx") if h != host and keepalived.applies(inv, h)]


def ufw_rules(ctx) -> list[str]:
    """Rules in the exact form `ufw show added` prints them (so the probe can compare)."""
    rules = [f"ufw allow {p}/tcp" for p in public_ports(ctx)]
    plist = ",".join(str(p) for p in peer_ports(ctx))
    rules += [f"ufw allow from {src} to any port {plist} proto tcp" for src in peer_sources(ctx)]
    rules += [f"ufw allow from {peer} proto vrrp" for peer in vrrp_peers(ctx)]
    return rules


def rich_rules(ctx) -> list[str]:
    """firewalld rich rules of the peers' zone, as `--list-rich-rules` prints them."""
    return [f'rule family="ipv4" source address="{peer}" protocol value="vrrp" accept' for peer in vrrp_peers(ctx)]


def steps(ctx) -> list:
    fw = kind(ctx)
    packages = PACKAGES[ctx.platform.family][fw]
    if not packages:
        raise PlatformError(f"{fw} is not packaged for {ctx.platform.name}", f"firewall (host {ctx.host.name})",
                            f"use firewall: {ctx.platform.firewall} (or auto) for this host")
    other = "firewalld" if fw == "ufw" else "ufw"
    out = [Packages(target=fw, names=packages, manager=ctx.platform.pkg, may_start=True)]
    if other in ctx.facts.active_firewalls:
        out.append(Command(f"disable {other}", script=_disable(other),
                           unless=f"! systemctl is-active -q {other}"))
    out += _ufw(ctx) if fw == "ufw" else _firewalld(ctx)
    return out


def _disable(fw: str) -> str:
    if fw == "ufw":
        return "ufw --force disable >/dev/null; systemctl disable --now ufw"
    return "systemctl disable --now firewalld"


#: the files ufw writes and loads (`ufw show added` reads the rule files); the stamp of verified rules
UFW_CONF, UFW_DEFAULTS = "/etc/ufw/ufw.conf", "/etc/default/ufw"
UFW_RULE_FILES = ("/etc/ufw/user.rules", "/etc/ufw/user6.rules")
UFW_STAMP = "/var/lib/airflow-ha/ufw-rules.stamp"


def ufw_rules_stamp(want: list[str]) -> str:
    """Shell printing the stamp line: the wanted rules' hash, then the hash of the rule files as they are."""
    wanted = hashlib.sha256("\n".join(sorted(want)).encode()).hexdigest()[:16]
    return f"echo \"{wanted} $(cat {' '.join(UFW_RULE_FILES)} 2>/dev/null | sha256sum | cut -c1-64)\""


def ufw_policy_ok() -> str:
    """Shell: ufw enabled, incoming denied by default, and its chains loaded (no `ufw` started)."""
    return (f"grep -qx 'ENABLED=yes' {UFW_CONF} && grep -qx 'DEFAULT_INPUT_POLICY=\"DROP\"' {UFW_DEFAULTS} && "
            "iptables -w -n -L ufw-user-input >/dev/null 2>&1")


def _ufw(ctx) -> list:
    want = ufw_rules(ctx)
    listing = "ufw show added 2>/dev/null | grep '^ufw '"
    add = "\n".join(f"{r} >/dev/null" for r in want)
    stamp = ufw_rules_stamp(want)
    # verified with ufw itself, then stamped; the policy step stamps again (the last writer of the files)
    verify_and_stamp = (f"[ \"$({listing} | sort)\" = \"{chr(10).join(sorted(want))}\" ] || "
                        "{ echo 'ufw rules differ from the wanted ones'; exit 1; }\n"
                        f"mkdir -p {UFW_STAMP.rsplit('/', 1)[0]} && {stamp} > {UFW_STAMP}")
    return [
        Command("ufw rules", desc=f"{len(want)} rules (22, http, peers only)",
                unless=f"[ \"$(cat {UFW_STAMP} 2>/dev/null)\" = \"$({stamp})\" ]",
                script=(f"{listing} | while read -r rule; do\n"
                        f"  printf '%s\\n' {_q(want)} | grep -qxF -- \"$rule\" || eval \"ufw delete ${{rule#ufw }}\" "
                        f">/dev/null\ndone\n{add}\n{verify_and_stamp}")),
        Command("ufw policy", desc="deny incoming by default, enable",
                unless=ufw_policy_ok(),
                script="ufw default deny incoming >/dev/null\nufw default allow outgoing >/dev/null\n"
                       f"ufw --force enable >/dev/null\nsystemctl enable ufw 2>/dev/null\n{verify_and_stamp}"),
        Service("ufw"),
    ]


def _q(rules) -> str:
    return " ".join("'" + r + "'" for r in rules)


def _firewalld(ctx) -> list:
    sources = peer_sources(ctx)
    public = [p for p in public_ports(ctx) if p != SSH_PORT]
    peer = " ".join(f"{p}/tcp" for p in sorted({SSH_PORT, *public, *peer_ports(ctx)}))
    fc = "firewall-cmd --permanent"
    rich = rich_rules(ctx)
    want_zone = f"sources: {' '.join(sources)}|ports: {peer}|rich: {';'.join(sorted(rich))}"
    want_public = f"services: ssh|ports: {' '.join(f'{p}/tcp' for p in public)}"
    return [
        Service("firewalld"),
        Command("zone airflow-ha", desc=f"peers-only zone for {len(sources)} sources"
                + (f", VRRP from {len(rich)} peers" if rich else ""),
                unless=(f"[ \"$({fc} --zone={ZONE} --list-sources 2>/dev/null | sed 's/^/sources: /')|"
                        f"$({fc} --zone={ZONE} --list-ports | sed 's/^/ports: /')|"
                        f"rich: $({fc} --zone={ZONE} --list-rich-rules | sort | paste -sd ';')\" = '{want_zone}' ]"),
                script=("for i in $(seq 90); do firewall-cmd --state >/dev/null 2>&1 && break; sleep 1; done\n"
                        f"{fc} --get-zones | grep -qw {ZONE} || {fc} --new-zone={ZONE}\n"
                        f"for s in $({fc} --zone={ZONE} --list-sources); do {fc} --zone={ZONE} --remove-source=$s; done\n"
                        f"for p in $({fc} --zone={ZONE} --list-ports); do {fc} --zone={ZONE} --remove-port=$p; done\n"
                        f"{fc} --zone={ZONE} --list-rich-rules | while read -r r; do "
                        f"{fc} --zone={ZONE} --remove-rich-rule=\"$r\"; done\n"
                        + "".join(f"{fc} --zone={ZONE} --add-source={s}\n" for s in sources)
                        + "".join(f"{fc} --zone={ZONE} --add-port={p}\n" for p in peer.split())
                        + "".join(f"{fc} --zone={ZONE} --add-rich-rule='{r}'\n" for r in rich)
                        + "firewall-cmd --reload")),
        Command("zone public", desc="public: ssh + http(s) only",
                unless=(f"[ \"services: $({fc} --zone=public --list-services | tr ' ' '\\n' | grep -x ssh)|"
                        f"ports: $({fc} --zone=public --list-ports)\" = '{want_public}' ] && "
                        f"[ \"$({fc} --zone=public --list-services)\" = ssh ]"),
                script=(f"for s in $({fc} --zone=public --list-services); do {fc} --zone=public --remove-service=$s; done\n"
                        f"for p in $({fc} --zone=public --list-ports); do {fc} --zone=public --remove-port=$p; done\n"
                        f"{fc} --zone=public --add-service=ssh\n"
                        + "".join(f"{fc} --zone=public --add-port={p}/tcp\n" for p in public)
                        + "firewall-cmd --reload")),
    ]


def validate(inv) -> None:
    """A firewall this component knows, for the cluster and for each host."""
    for where, wanted in [("cluster.firewall", inv.settings.firewall)] + [
            (f"hosts.{h.name}.firewall", inv.settings_for(h).firewall) for h in inv.hosts.values()]:
        if wanted not in FIREWALLS:
            raise InventoryError(f"unknown firewall {wanted!r}", f"{inv.path}: {where}",
                                 f"use one of: {', '.join(FIREWALLS)}")


class Firewall(Component):
    """One active host firewall: public SSH/HTTP(S), every service port to cluster peers only."""

    name = NAME
    settings = FirewallSettings
    host_settings = ("firewall",)
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    validate = staticmethod(validate)
COMPONENT = Firewall()
