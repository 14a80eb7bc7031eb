"""etcd (v3 API): Patroni's distributed configuration store, on the hosts with the `etcd` role.

Only in Patroni mode (`postgres` on >= 2 hosts). With no `etcd` host named, the inventory gives the role
to the Sentinel hosts (`default_roles`); the count must be odd (3 or 5).
Packages: Debian/Ubuntu etcd-server + etcd-client (etcdctl); EL9 etcd from PGDG's pgdg-rhel9-extras.
The packaged unit reads its environment file (Debian: /etc/default/etcd, `EnvironmentFile=-/etc/default/%p`
in etcd.service; EL9: /etc/etcd/etcd.conf), which we own whole.

Security decision: peer-only binding instead of etcd auth. etcd listens on the host's cluster address (and
127.0.0.1), the firewall opens client 2379 / peer 2380 to inventory hosts only, and nothing in etcd is
secret (Patroni keeps the leader lock and member states there, no passwords). etcd RBAC would add a root
user, a role per client and a password in every Patroni config for no gain against a peer that can already
reach PostgreSQL's replication port.

Data dir: /var/lib/etcd/airflow-ha, not the package's /var/lib/etcd/default: Debian starts etcd on install
as a one-member localhost cluster, and a member with data ignores ETCD_INITIAL_CLUSTER. Membership is
fixed at the first start (ETCD_INITIAL_CLUSTER_STATE=new): changing the etcd hosts of a running cluster
needs `etcdctl member add/remove` first (README "High availability"; not automated).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .core.component import Check, Component, Role
from .core.errors import InventoryError
from .core.steps import Directory, File, Packages, Service
from .core.templates import render
from .pgsql import patroni_layout, patroni_mode

NAME = "etcd"
PORTS = {"etcd_client": 2379, "etcd_peer": 2380}    # Patroni mode only


@dataclass(frozen=True)
class EtcdNames:
    """What etcd is called on one platform (docs/platforms.md: each entry and its source)."""

    packages: tuple[str, ...]
    unit: str
    env: str          # the environment file the packaged unit reads, which we own whole
    data: str = "/var/lib/etcd/airflow-ha"   # not the package's /var/lib/etcd/default (a 1-member cluster)


NAMES = {
    "debian": EtcdNames(packages=("etcd-server", "etcd-client"), unit="etcd",
                        env="/etc/default/etcd"),   # etcd.service: EnvironmentFile=-/etc/default/%p
    "rhel": EtcdNames(packages=("etcd",), unit="etcd", env="/etc/etcd/etcd.conf"),   # PGDG's pgdg-rhel9-extras
}


def names(platform) -> EtcdNames:
    return NAMES[platform.family]


def applies(inv, host) -> bool:
    return patroni_mode(inv) and host.has("etcd")


def endpoints(run) -> list[str]:
    """Client URLs of every etcd member (Patroni's `etcd3.hosts`, etcdctl --endpoints)."""
    port = run.inv.ports.etcd_client
    return [f"{run.addresses[h.name]}:{port}" for h in run.inv.with_role("etcd")]


def env(ctx) -> str:
    inv, run = ctx.inv, ctx.run
    ports = inv.ports
    members = ",".join(f"{h.name}=http://{run.addresses[h.name]}:{ports.etcd_peer}" for h in inv.with_role("etcd"))
    return render("etcd/etcd.env.j2", member=ctx.host.name, data_dir=names(ctx.platform).data,
                  address=ctx.address, peer_port=ports.etcd_peer, client_port=ports.etcd_client,
                  initial_cluster=members, token=f"{inv.settings.name}-etcd",
                  version_note="3.4 (Debian 12) / 3.5")


def steps(ctx) -> list:
    etcd = names(ctx.platform)
    unit, data = etcd.unit, etcd.data
    return [
        Packages(target="etcd", names=etcd.packages, manager=ctx.platform.pkg),
        Directory(data, owner="etcd", group="etcd", mode=0o700),
        File(etcd.env, env(ctx), mode=0o644, notify=(unit,)),
        # Restart=always (the package: on-abnormal); a first start waits for a quorum of members, which
        # start in parallel on the other hosts: give it 5 minutes instead of systemd's 90 s
        File(f"/etc/systemd/system/{unit}.service.d/airflow-ha.conf", DROPIN, notify=("daemon-reload", unit)),
        # `config`: until the member has data it has never run with our file, so the first (re)start is a
        # first start on every host at once, not a rolling restart that would wait for a quorum one by one
        Service(unit, config=f"{data}/member"),
    ]


DROPIN = ("# Managed by airflow-ha (fabfile/etcd.py)\n[Service]\nRestart=always\nRestartSec=5\n"
          "TimeoutStartSec=300\n")


def health_script(run, host) -> str:
    """One line: etcdctl's verdict on this member (v3 API, its own client URL)."""
    port = run.inv.ports.etcd_client
    return (f"ETCDCTL_API=3 timeout 5 etcdctl --dial-timeout=2s --command-timeout=3s "
            f"--endpoints=http://{run.addresses[host.name]}:{port} endpoint health 2>&1 | tail -1")


def gate(run, host) -> str | None:
    """After a restart, this member answers healthy (it rejoined the quorum) before the next one restarts."""
    out = run.remote(host.name).sh(health_script(run, host), timeout=15).out.strip()
    return None if "is healthy" in out else f"etcd: {out[:100] or 'no answer'}"


def default_roles(hosts: dict) -> dict:
    """Patroni mode with no `etcd` host named: etcd runs where the Sentinels run (an odd number already)."""
    if not patroni_layout(hosts.values()) or any(h.has("etcd") for h in hosts.values()):
        return hosts
    return {n: (replace(h, roles=h.roles | {"etcd"}) if h.has("sentinel") else h) for n, h in hosts.items()}


def validate(inv) -> None:
    """etcd only in Patroni mode, where it has an odd membership (a majority survives one loss)."""
    path, members, patroni = inv.path, inv.with_role("etcd"), patroni_mode(inv)
    if members and not patroni:
        raise InventoryError("hosts have the 'etcd' role but PostgreSQL runs on one host (no Patroni)",
                             f"{path}: hosts", "give the 'postgres' role to 2 or more hosts (3 recommended) "
                             "for Patroni, or remove the 'etcd' role")
    if not patroni:
        return
    if not members:
        raise InventoryError(
            f"{len(inv.with_role('postgres'))} postgres hosts (Patroni mode) but no etcd host: Patroni needs a "
            "DCS", f"{path}: hosts", "give the 'etcd' role to 3 hosts (or to none: it then follows the "
            "'sentinel' role), or keep one postgres host")
    if len(members) % 2 == 0:
        raise InventoryError(
            f"{len(members)} etcd hosts ({', '.join(h.name for h in members)}): an even number of members cannot "
            "form a safer majority than one member less", f"{path}: hosts", "give the 'etcd' role to an odd "
            "number of hosts (3 recommended, 5 to survive two losses)")


def etcd_checks(members: list[str], answers: dict) -> list[Check]:
    """A row per etcd member (`etcdctl endpoint health`) and the quorum: healthy > half the members."""
    out, healthy = [], 0
    for h in members:
        line = answers.get(h)
        ok = bool(line) and "is healthy" in line and "unhealthy" not in line
        healthy += ok
        out.append(Check(h, "etcd", "ok" if ok else "fail", (line or "no answer")[:90]))
    quorum = len(members) // 2 + 1
    status = "fail" if healthy < quorum else "warn" if healthy < len(members) else "ok"
    out.append(Check("cluster", "etcd quorum", status, f"{healthy}/{len(members)} healthy, quorum {quorum}"))
    return out


def health_probe(run, host) -> list[str]:
    """Patroni mode: this etcd member's own verdict on itself."""
    return [f'echo "@@etcd $({health_script(run, host)})"'] if applies(run.inv, host) else []


def health_summary(run, answers) -> list[Check]:
    """Patroni mode: a row per etcd member and the quorum."""
    if not patroni_mode(run.inv):
        return []
    said = {h: a["etcd"][-1].strip() for h, a in answers.items() if "etcd" in a}
    return etcd_checks([h.name for h in run.inv.with_role("etcd")], said)


class Etcd(Component):
    """Patroni's DCS; a restarted member rejoins the quorum before the next one restarts."""

    name = NAME
    roles = (Role("etcd", ("etcd_client", "etcd_peer")),)
    default_ports = PORTS
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    names = staticmethod(names)
    default_roles = staticmethod(default_roles)
    validate = staticmethod(validate)
    gate = staticmethod(gate)
    health_probe = staticmethod(health_probe)
    health_summary = staticmethod(health_summary)

    def peer_ports(self, inv) -> list[str]:
        return super().peer_ports(inv) if patroni_mode(inv) else []

    def units(self, run, host) -> list[str]:
        return [names(run.facts[host.name].platform).unit] if applies(run.inv, host) else []


COMPONENT = Etcd()
