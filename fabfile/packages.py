"""OS packages every host needs, time sync, the cluster's names in /etc/hosts, optional package proxy."""

from __future__ import annotations

from dataclasses import dataclass

from . import airflow, etcd, firewall, keepalived, nginx, pgsql, redis
from .core.component import Component
from .core.steps import File, Line, Packages, Service, Warn

NAME = "packages"
#: proxy for apt/dnf on the hosts (pip installs offline from the wheelhouse)
@dataclass(frozen=True)
class PackagesSettings:
    http_proxy: str | None = None


@dataclass(frozen=True)
class OsNames:
    """The base system of one platform (docs/platforms.md: each entry and its source)."""

    base: tuple[str, ...]        # every host
    timesync: tuple[str, ...]
    timesync_unit: str
    proxy_conf: str              # apt: a file of its own; dnf: the `proxy=` line of dnf.conf


NAMES = {
    "debian": OsNames(base=("ca-certificates", "curl", "sudo", "rsync", "logrotate", "acl", "tar"),
                      timesync=("chrony",), timesync_unit="chrony", proxy_conf="/etc/apt/apt.conf.d/80airflow-ha-proxy"),
    # no "curl": EL9 installs curl-minimal (@core), which conflicts with the full curl package; either one
    # provides /usr/bin/curl. semanage comes from policycoreutils-python-utils.
    "rhel": OsNames(base=("ca-certificates", "sudo", "rsync", "logrotate", "acl", "tar", "policycoreutils-python-utils"),
                    timesync=("chrony",), timesync_unit="chronyd", proxy_conf="/etc/dnf/dnf.conf"),
}


def names(platform) -> OsNames:
    return NAMES[platform.family]


def applies(inv, host) -> bool:
    return True


def role_packages(ctx) -> list[str]:
    """Distribution packages for the roles of this host, in one install. keepalived's and ufw's are in it too
    (their own steps then only check them); pgBackRest adds its package in its own step (only when backups are
    on), and firewalld keeps its own step: it starts filtering as soon as it is installed."""
    plat, host = ctx.platform, ctx.host
    base = names(plat)
    out = [*base.base, *base.timesync]
    if host.has(*airflow.ROLES):
        out += [*airflow.python_packages(plat), *pgsql.names(plat).client_packages]
    if host.has("redis", "sentinel"):
        out += redis.names(plat).packages
    if host.has("sentinel"):
        out += redis.names(plat).sentinel_packages
    if host.has("postgres"):
        pg = pgsql.names(plat)
        out += pg.patroni_packages if pgsql.patroni_mode(ctx.inv) else pg.packages
    if host.has("etcd") and pgsql.patroni_mode(ctx.inv):
        out += etcd.names(plat).packages
    if nginx.runs_nginx(host):
        out += nginx.names(plat).packages
    if keepalived.applies(ctx.inv, host):    # its own Packages step then finds it installed (no 2nd apt run)
        out += keepalived.PACKAGES
    if firewall.kind(ctx) == "ufw":   # installed disabled (ENABLED=no): the firewall component enables it
        out += firewall.PACKAGES[plat.family]["ufw"]
    return list(dict.fromkeys(out))


def steps(ctx) -> list:
    plat = ctx.platform
    if ctx.host.has(*airflow.ROLES):
        airflow.check_python(ctx)   # refuse a Python/wheelhouse mismatch before the first change
    out = []
    proxy = ctx.inv.settings.http_proxy
    if proxy and plat.pkg == "apt":
        out.append(File(names(plat).proxy_conf, content=f'Acquire::http::Proxy "{proxy}";\n'
                                                          f'Acquire::https::Proxy "{proxy}";\n'))
    elif proxy:
        out.append(Line(target="dnf proxy", path=names(plat).proxy_conf, line=f"proxy={proxy}",
                        replace="^proxy="))
    if pgsql.patroni_mode(ctx.inv) and ctx.host.has("postgres") and plat.family == "debian":
        # Patroni creates (or takes over) the cluster: the postgresql package must not make an empty one
        out.append(Line(target="createcluster.conf", path=pgsql.names(plat).createcluster_conf,
                        line="create_main_cluster = false", replace=r"^#?\s*create_main_cluster"))
    out.append(Packages(target="os packages", names=tuple(role_packages(ctx)), manager=plat.pkg))
    for name, address in sorted(ctx.run.addresses.items()):
        out.append(Line(target=f"/etc/hosts {name}", path="/etc/hosts", line=f"{address} {name}",
                        replace=rf"^[0-9a-f.:]+\s+{name}$"))
    # chrony needs CAP_SYS_TIME: in containers it is "condition failed" (the host's clock is shared).
    if ctx.facts.in_container:
        out.append(Warn(target="time sync", message=f"{names(plat).timesync_unit} cannot run in a container "
                        f"({ctx.facts.container}): the host shares the machine's clock"))
    else:
        out.append(Service(names(plat).timesync_unit))
    return out


class OsPackages(Component):
    """OS packages, time sync and /etc/hosts, before anything else."""

    name = NAME
    settings = PackagesSettings
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    names = staticmethod(names)
COMPONENT = OsPackages()
