"""OS packages every host needs, time sync, the cluster's names in /etc/hosts, optional package proxy."""

from __future__ import annotations

from . import airflow, nginx
from .core.component import Component
from .core.steps import File, Line, Packages, Service, Warn

NAME = "packages"


def applies(inv, host) -> bool:
    return True


def role_packages(ctx) -> list[str]:
    """Distribution packages for the roles of this host (the services' own components add nothing)."""
    p, host = ctx.platform.packages, ctx.host
    names = p["base"] + p["timesync"]
    if host.has("api_server", "scheduler", "dag_processor", "triggerer", "worker", "flower"):
        names += p["python"] + p["postgres_client"]
    if host.has("redis", "sentinel"):
        names += p["redis"]
    if host.has("sentinel"):
        names += p["sentinel"]
    if host.has("postgres"):
        names += p["patroni"] if ctx.inv.patroni else p["postgres"]
    if host.has("etcd") and ctx.inv.patroni:
        names += p["etcd"]
    if nginx.runs_nginx(host):
        names += p["nginx"]
    return list(dict.fromkeys(names))


def steps(ctx) -> list:
    plat = ctx.platform
    if ctx.host.has(*airflow.ROLES):
        airflow.check_python(ctx)   # refuse a Python/wheelhouse mismatch before the first change
    out = []
    proxy = ctx.inv.cluster["http_proxy"]
    if proxy and plat.pkg == "apt":
        out.append(File(plat.paths["apt_proxy"], content=f'Acquire::http::Proxy "{proxy}";\n'
                                                          f'Acquire::https::Proxy "{proxy}";\n'))
    elif proxy:
        out.append(Line(target="dnf proxy", path=plat.paths["dnf_conf"], line=f"proxy={proxy}",
                        replace="^proxy="))
    if ctx.inv.patroni and ctx.host.has("postgres") and plat.family == "debian":
        # Patroni creates (or takes over) the cluster: the postgresql package must not make an empty one
        out.append(Line(target="createcluster.conf", path=plat.paths["pg_createcluster_conf"],
                        line="create_main_cluster = false", replace=r"^#?\s*create_main_cluster"))
    out.append(Packages(target="os packages", names=tuple(role_packages(ctx)), manager=plat.pkg))
    for name, address in sorted(ctx.run.addresses.items()):
        out.append(Line(target=f"/etc/hosts {name}", path="/etc/hosts", line=f"{address} {name}",
                        replace=rf"^[0-9a-f.:]+\s+{name}$"))
    # chrony needs CAP_SYS_TIME: in containers it is "condition failed" (the host's clock is shared).
    if ctx.facts.in_container:
        out.append(Warn(target="time sync", message=f"{plat.units['timesync']} cannot run in a container "
                        f"({ctx.facts.container}): the host shares the machine's clock"))
    else:
        out.append(Service(plat.units["timesync"]))
    return out


class OsPackages(Component):
    """OS packages, time sync and /etc/hosts, before anything else."""

    name = NAME
    applies = staticmethod(applies)
    steps = staticmethod(steps)


COMPONENT = OsPackages()
