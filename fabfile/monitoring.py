"""Monitoring (`cluster.monitoring: true`): Prometheus exporters on every host, optional Prometheus server.

What runs where (every exporter listens on the host's cluster address; the firewall component opens the
exporter ports to cluster hosts and `monitoring_cidr` only):

* every host: prometheus-node-exporter (:node_exporter);
* Airflow hosts: a StatsD → Prometheus bridge (:statsd_exporter). Airflow sends StatsD to 127.0.0.1:statsd
  ([metrics] statsd_on is always on: switching monitoring on or off restarts no Airflow process).
  Debian 12 and Ubuntu ship no prometheus-statsd-exporter package, and hosts install only distribution
  packages and our wheelhouse, so
  files/monitoring/statsd_exporter.py (PyYAML + prometheus_client, run by the Airflow venv's Python, DynamicUser)
  takes its place: same flags, same mapping format (files/monitoring/statsd_mapping.yml), so the upstream
  binary can replace it without touching the mapping;
* redis/sentinel hosts: prometheus-redis-exporter (:redis_exporter) for the local Redis on /metrics and the
  local Sentinel through its multi-target `/scrape?target=redis://<addr>:<sentinel port>`. Passwords: the
  packaged 1.45 reads `-redis.password-file`, a JSON map {"redis://addr:port": password} that covers both
  the Redis and the Sentinel password (REDIS_PASSWORD in the EnvironmentFile would also apply to the
  Sentinel target, whose password differs). The file is 0640 root:prometheus; argv carries only its path;
* Patroni mode (postgres on >= 2 hosts): the postgres exporter runs on every member (each reports its own
  PostgreSQL: pg_up, replication views); the `prometheus` role is created on the leader only (replicas are
  read-only and receive it by streaming replication; a replica waits for it). Each member's Patroni REST
  API /metrics (patroni_primary/replica/sync_standby, WAL positions) reaches Prometheus through the node
  exporter's textfile collector (job `node`): a 15 s timer fetches it locally and turns Patroni 3.0's
  `None` values (a replica's timeline while it does not stream) into NaN — scraped directly, one such line
  marks the whole target down. Rules of files/monitoring/alerts-patroni.yml.j2: no leader, split brain,
  no sync standby (only with synchronous_mode), replica lag, metrics missing;
* the postgres host: prometheus-postgres-exporter (:postgres_exporter) as Debian's README.Debian
  recommends: a passwordless `prometheus` role (member of pg_monitor) reached over the Unix socket with
  `peer` authentication (pg_hba's `local all all peer` line), so there is no secret at all and no pg_hba
  or network path for it;
* hosts with the `monitoring` role: Prometheus (:prometheus) scraping all of the above of all hosts plus
  Flower's /flower/metrics (flower_worker_online; Flower's basic auth, password from a 0640 file), with the
  alert rules of files/monitoring/alerts.yml; `promtool check config` + `check rules` run before a restart,
  and a failing check leaves the running Prometheus untouched.

Units are configured through their packaged EnvironmentFile (/etc/default/<unit>: ARGS=...), managed whole.
`monitoring: false` (the default): the component still visits every host but only plans "stopped and
disabled" for the exporter units, which costs one probe and changes nothing on a host that never had them;
packages and files stay (turning monitoring back on is then quick).
EL9: BaseOS/AppStream ship no exporters and this suite configures no EPEL/vendor repository, so monitoring
on an EL9 host is refused with one PlatformError (monitoring off works there as everywhere).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from . import backup, patroni, pgsql
from .airflow import ROLES as AIRFLOW_ROLES
from .airflow import VENV
from .core.component import Check, Component, Role
from .core.errors import PlatformError
from .core.steps import Command, File, Packages, Service, periodic_script
from .core.templates import render, static

NAME = "monitoring"
@dataclass(frozen=True)
class MonitoringSettings:
    monitoring: bool = False           # statsd + exporters on every host
    monitoring_cidr: str | None = None  # extra source allowed to scrape exporters
PORTS = {"statsd": 9125, "statsd_exporter": 9102, "node_exporter": 9100, "redis_exporter": 9121,
         "postgres_exporter": 9187, "prometheus": 9090}
STATSD_UNIT = "airflow-ha-statsd-exporter"
STATSD_SCRIPT = "/usr/local/lib/airflow-ha/statsd_exporter.py"
STATSD_MAPPING = "/etc/airflow-ha/statsd_mapping.yml"
REDIS_PASSWORDS = "/etc/prometheus/airflow-ha-redis-passwords.json"
FLOWER_PASSWORD = "/etc/prometheus/airflow-ha-flower.password"
PROM_CONFIG = "/etc/prometheus/prometheus.yml"
PROM_RULES = "/etc/prometheus/airflow-ha-alerts.yml"
PROM_RULES_PATRONI = "/etc/prometheus/airflow-ha-alerts-patroni.yml"
PROM_RULES_BACKUP = "/etc/prometheus/airflow-ha-alerts-backup.yml"
PG_ROLE = "prometheus"
PATRONI_METRICS = "airflow-ha-patroni-metrics"
PATRONI_METRICS_SCRIPT = "/usr/local/lib/airflow-ha/patroni-metrics.sh"
SCRAPE_INTERVAL = "15s"
#: exporter -> (roles of the hosts that run it, () = every host; the ports it listens on, the first one
#: scraped and named like the exporter). The one table of what runs where: steps, port check, firewall.
EXPORTERS = {
    "node_exporter": ((), ("node_exporter",)),
    "statsd_exporter": (AIRFLOW_ROLES, ("statsd_exporter", "statsd")),   # statsd: 127.0.0.1 only
    "redis_exporter": (("redis", "sentinel"), ("redis_exporter",)),
    "postgres_exporter": (("postgres",), ("postgres_exporter",)),
    "prometheus": (("monitoring",), ("prometheus",)),
}


def applies(inv, host) -> bool:
    return True   # also with monitoring off: exporters left from an earlier run are stopped (see docstring)


@dataclass(frozen=True)
class MonitoringNames:
    """The packaged exporters of one platform (docs/platforms.md)."""

    units: dict[str, str]   # exporter -> its unit, in the package of the same name
    defaults_dir: str       # <dir>/<unit>: the EnvironmentFile (ARGS=...) of every exporter unit
    textfile_dir: str       # node_exporter's textfile collector reads <dir>/*.prom (the package's own directory)


#: Debian/Ubuntu only: no statsd_exporter package exists (STATSD_SCRIPT takes its place); EL9's BaseOS/AppStream
#: ship no exporters and this suite configures no EPEL or vendor repository (monitoring refuses EL9 hosts)
NAMES = {"debian": MonitoringNames(units={
    "node_exporter": "prometheus-node-exporter", "redis_exporter": "prometheus-redis-exporter",
    "postgres_exporter": "prometheus-postgres-exporter", "prometheus": "prometheus"}, defaults_dir="/etc/default",
    textfile_dir="/var/lib/prometheus/node-exporter")}


def names(platform) -> MonitoringNames | None:
    """None where no exporter is packaged."""
    return NAMES.get(platform.family)


def exporters(inv, host) -> list[str]:
    """The exporters (port names in cluster.ports) a host runs when monitoring is on, in EXPORTERS order."""
    return [e for e, (roles, _) in EXPORTERS.items() if not roles or host.has(*roles)]


def _unit(plat, exporter: str) -> str:
    return STATSD_UNIT if exporter == "statsd_exporter" else names(plat).units[exporter]


def steps(ctx) -> list:
    inv, plat, host = ctx.inv, ctx.platform, ctx.host
    packaged = names(plat)
    if not inv.settings.monitoring:
        if not packaged:
            return []          # never installable here, nothing to stop
        return ([Service(_unit(plat, e), present=False) for e in EXPORTERS]
                + [Service(f"{PATRONI_METRICS}.timer", present=False)])
    if not packaged:
        raise PlatformError(f"monitoring is not available on {plat.name}: its repositories ship no Prometheus "
                            "exporters", f"cluster.monitoring (host {host.name})",
                            "set monitoring: false, or run the monitored hosts on Debian 12 / Ubuntu")
    wanted = exporters(inv, host)
    pkgs = tuple(package for e, package in packaged.units.items() if e in wanted)
    out = [Packages(target="monitoring packages", names=pkgs, manager=plat.pkg)]
    for exporter in EXPORTERS:
        if exporter in wanted:
            out += EXPORTER_STEPS[exporter](ctx)
        else:
            out.append(Service(_unit(plat, exporter), present=False))
    return out


def listen(ctx, exporter: str) -> str:
    return f"{ctx.address}:{getattr(ctx.inv.ports, exporter)}"


def _defaults(ctx, unit: str, args: str, env=()) -> File:
    return File(f"{names(ctx.platform).defaults_dir}/{unit}",
                render("monitoring/exporter.default.j2", unit=unit, args=args, env=list(env)), notify=(unit,))


def _node(ctx) -> list:
    unit = _unit(ctx.platform, "node_exporter")
    textfile_dir = names(ctx.platform).textfile_dir
    args = f"--web.listen-address={listen(ctx, 'node_exporter')} --collector.textfile.directory={textfile_dir}"
    extra = _patroni_metrics(ctx)    # unit files before the first service action (the runner's one daemon-reload)
    return ([_defaults(ctx, unit, args)] + [s for s in extra if not isinstance(s, Service)] + [Service(unit)]
            + [s for s in extra if isinstance(s, Service)])


def _patroni_metrics(ctx) -> list:
    """Patroni members: a 15 s timer copies the REST API's /metrics (None → NaN) to the textfile collector."""
    timer = f"{PATRONI_METRICS}.timer"
    if not (pgsql.patroni_mode(ctx.inv) and ctx.host.has("postgres")):
        return [Service(timer, present=False)]
    url = f"http://{ctx.address}:{ctx.inv.ports.patroni_api}/metrics"
    script = render("monitoring/patroni-metrics.sh.j2", url=url, textfile_dir=names(ctx.platform).textfile_dir)
    return periodic_script("fabfile/monitoring.py", PATRONI_METRICS, PATRONI_METRICS_SCRIPT, script,
                           "Patroni /metrics for node_exporter", "Patroni /metrics every 15 s",
                           {"OnBootSec": "15s", "OnUnitActiveSec": "15s", "AccuracySec": "1s"})


def _statsd(ctx) -> list:
    unit = STATSD_UNIT
    service = render("monitoring/airflow-ha-statsd-exporter.service.j2", python=f"{VENV}/bin/python",
                     script=STATSD_SCRIPT, mapping=STATSD_MAPPING, statsd_port=ctx.inv.ports.statsd,
                     listen=listen(ctx, "statsd_exporter"))
    return [
        File(STATSD_SCRIPT, static("monitoring/statsd_exporter.py").decode(), mode=0o755, notify=(unit,)),
        File(STATSD_MAPPING, static("monitoring/statsd_mapping.yml").decode(), notify=(unit,)),
        File(f"/etc/systemd/system/{unit}.service", service, notify=("daemon-reload", unit)),
        Service(unit),
    ]


def redis_password_map(ctx) -> dict:
    ports, addr = ctx.inv.ports, ctx.address
    out = {}
    if ctx.host.has("redis"):
        out[f"redis://{addr}:{ports.redis}"] = ctx.secrets["redis_password"]
    if ctx.host.has("sentinel"):
        out[f"redis://{addr}:{ports.sentinel}"] = ctx.secrets["sentinel_password"]
    return out


def _redis(ctx) -> list:
    unit, ports = _unit(ctx.platform, "redis_exporter"), ctx.inv.ports
    target = f"redis://{ctx.address}:{ports.redis if ctx.host.has('redis') else ports.sentinel}"
    args = (f"-web.listen-address={listen(ctx, 'redis_exporter')} -redis.addr={target} "
            f"-redis.password-file={REDIS_PASSWORDS}")
    return [
        File(REDIS_PASSWORDS, json.dumps(redis_password_map(ctx), indent=1, sort_keys=True) + "\n",
             owner="root", group="prometheus", mode=0o640, notify=(unit,)),
        _defaults(ctx, unit, args),
        Service(unit),
    ]


def _postgres(ctx) -> list:
    plat = ctx.platform
    unit, pg_user = _unit(plat, "postgres_exporter"), pgsql.names(plat).user
    port = ctx.inv.ports.postgres
    dsn = f"user={PG_ROLE} host=/run/postgresql port={port} dbname=postgres sslmode=disable"
    check = (f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_ROLE}' AND rolcanlogin "
             f"AND pg_has_role('{PG_ROLE}', 'pg_monitor', 'MEMBER')")
    psql = f"runuser -u {pg_user} -- psql -p {port}"
    has_role = f"{psql} -tAc {shlex.quote(check)} | grep -qx 1"
    create = (f"{psql} -v ON_ERROR_STOP=1 -q <<'__SQL__'\n"
              f"SELECT 'CREATE ROLE {PG_ROLE} LOGIN' WHERE NOT EXISTS "
              f"(SELECT FROM pg_roles WHERE rolname = '{PG_ROLE}')\\gexec\n"
              f"ALTER ROLE {PG_ROLE} WITH LOGIN;\n"
              f"GRANT pg_monitor TO {PG_ROLE};\n"
              "__SQL__")
    if pgsql.patroni_mode(ctx.inv):
        create = role_on_leader_only(psql, has_role, create)
    return [
        Command(f"postgres role {PG_ROLE}", desc=f"create login role {PG_ROLE} in pg_monitor (peer auth, no password)"
                + (" on the leader; replicas wait for it" if pgsql.patroni_mode(ctx.inv) else ""),
                unless=has_role, script=create),
        _defaults(ctx, unit, f"--web.listen-address={listen(ctx, 'postgres_exporter')}",
                  env=[("DATA_SOURCE_NAME", dsn)]),
        Service(unit),
    ]


def role_on_leader_only(psql: str, has_role: str, create: str, wait_s: int = 120) -> str:
    """Patroni mode: create the role where PostgreSQL accepts writes; a replica waits until it streams in."""
    return (f"if [ \"$({psql} -tAc 'SELECT pg_is_in_recovery()')\" = f ]; then\n{create}\nexit\nfi\n"
            f"for i in $(seq {wait_s // 2}); do {has_role} && exit 0; sleep 2; done\n"
            f"echo 'role {PG_ROLE} not replicated from the leader after {wait_s}s'; exit 1")


def scrape_jobs(ctx) -> dict:
    """Values of prometheus.yml.j2: every exporter of every host, by cluster address."""
    inv, addrs, ports = ctx.inv, ctx.run.addresses, ctx.inv.ports
    hosts = list(inv.hosts.values())

    def targets(exporter, pick=lambda h: True):
        return [(h.name, f"{addrs[h.name]}:{getattr(ports, exporter)}") for h in hosts
                if exporter in exporters(inv, h) and pick(h)]
    jobs = [("node", "/metrics", targets("node_exporter")),
            ("airflow", "/metrics", targets("statsd_exporter")),
            ("redis", "/metrics", targets("redis_exporter", lambda h: h.has("redis"))),
            ("postgres", "/metrics", targets("postgres_exporter"))]
    sentinels = [(h.name, f"redis://{addrs[h.name]}:{ports.sentinel}", f"{addrs[h.name]}:{ports.redis_exporter}")
                 for h in inv.with_role("sentinel")]
    flower = inv.with_role("flower")
    return {"cluster": inv.settings.name, "scrape_interval": SCRAPE_INTERVAL, "rules": PROM_RULES,
            "patroni_rules": PROM_RULES_PATRONI if pgsql.patroni_mode(inv) else None,
            "backup_rules": PROM_RULES_BACKUP if backup.enabled(inv) else None,
            "prometheus": listen(ctx, "prometheus"), "prometheus_host": ctx.host.name,
            "jobs": [j for j in jobs if j[2]], "sentinels": sentinels,
            "flower": (flower[0].name, f"{addrs[flower[0].name]}:{ports.flower}") if flower else None,
            "flower_password_file": FLOWER_PASSWORD}


def patroni_rules(inv) -> str:
    """The Patroni alert rules, with "no sync standby" only under synchronous_mode."""
    return render("monitoring/alerts-patroni.yml.j2", synchronous_mode=bool(inv.settings.postgres.synchronous_mode),
                  lag_warn_bytes=patroni.LAG_WARN_BYTES, lag_fail_bytes=patroni.LAG_FAIL_BYTES)


def _prometheus(ctx) -> list:
    unit = _unit(ctx.platform, "prometheus")
    config = "prometheus-config"       # notification: validate, then restart
    values = scrape_jobs(ctx)
    rules = [PROM_RULES] + [values[k] for k in ("patroni_rules", "backup_rules") if values[k]]
    out = [
        File(PROM_CONFIG, render("monitoring/prometheus.yml.j2", **values), notify=(config,)),
        File(PROM_RULES, static("monitoring/alerts.yml").decode(), notify=(config,)),
    ]
    if values["patroni_rules"]:
        out.append(File(PROM_RULES_PATRONI, patroni_rules(ctx.inv), notify=(config,)))
    if values["backup_rules"]:
        out.append(File(PROM_RULES_BACKUP, backup.alert_rules(ctx.inv), notify=(config,)))
    if values["flower"]:
        out.append(File(FLOWER_PASSWORD, ctx.secrets["flower_password"], owner="root", group="prometheus",
                        mode=0o640, notify=(config,)))
    out += [
        _defaults(ctx, unit, f"--config.file={PROM_CONFIG} --web.listen-address={listen(ctx, 'prometheus')}"),
        Command(config, desc="promtool check config + rules", only_if_notified=True,
                script=f"promtool check config {PROM_CONFIG} 2>&1\npromtool check rules {' '.join(rules)} 2>&1"),
        Service(unit, listen=(config,)),
    ]
    return out


EXPORTER_STEPS = {"node_exporter": _node, "statsd_exporter": _statsd, "redis_exporter": _redis,
                  "postgres_exporter": _postgres, "prometheus": _prometheus}


# -- `inv health` -------------------------------------------------------------------------------------------
def health_probe(run, host) -> list[str]:
    """With monitoring on: each exporter's /metrics HTTP code."""
    if not run.inv.settings.monitoring:
        return []
    ports = run.inv.ports
    return [f"echo \"@@exporter {exporter} $(curl -s -m 2 -o /dev/null -w '%{{http_code}}' "
            f"http://{run.addresses[host.name]}:{getattr(ports, exporter)}/metrics)\""
            for exporter in exporters(run.inv, host)]


def health_rows(run, host, answers) -> list[Check]:
    """One row per exporter: up when /metrics answered 200."""
    out = []
    for rest in answers.get("exporter", []):
        exporter, code = [*rest.split(), ""][:2]
        out.append(Check(host.name, f"exporter {exporter}", "ok" if code == "200" else "fail",
                         "up" if code == "200" else f"down (HTTP {code or 'no answer'})"))
    return out


class Monitoring(Component):
    """Exporters and Prometheus (`cluster.monitoring`), or their units stopped."""

    name = NAME
    roles = (Role("monitoring"),)
    settings = MonitoringSettings
    default_ports = PORTS
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    names = staticmethod(names)
    health_probe = staticmethod(health_probe)
    health_rows = staticmethod(health_rows)

    def listens(self, inv, host) -> list[str]:
        if not inv.settings.monitoring:
            return []
        return [p for e in exporters(inv, host) for p in EXPORTERS[e][1]]

    def peer_ports(self, inv) -> list[str]:
        """Every exporter's scraped port, to the cluster's hosts (and `monitoring_cidr`: firewall.py)."""
        return list(EXPORTERS) if inv.settings.monitoring else []


COMPONENT = Monitoring()
