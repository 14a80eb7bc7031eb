"""Inventory: load `hosts.yaml`, apply documented defaults, validate everything before any connection.

Schema (README "Inventory" shows an example):

    cluster:            # optional; every key has a default (CLUSTER_DEFAULTS)
      <key>: <value>
    hosts:              # required, at least one host
      <ssh name>:
        roles: [<role>, ...]
        address: <ip>   # optional cluster address; default: HostName from ssh_config, else DNS
        <override>: ... # optional per-host overrides of HOST_OVERRIDABLE cluster keys
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import InventoryError

ROLES = (
    "redis", "sentinel", "postgres", "api_server", "scheduler", "dag_processor",
    "triggerer", "worker", "flower", "nginx", "monitoring", "etcd", "backup",
)

#: cluster key -> default. The type of the default is the type the key must have (None = optional str).
CLUSTER_DEFAULTS: dict = {
    "name": "airflow",
    "airflow_version": "3.3.2",
    "python_version": "3.11",          # wheelhouse/constraints target (Debian 12: 3.11, Ubuntu 24.04/EL9: 3.12)
    "constraints_url": None,           # optional official constraints URL instead of the shipped file
    "wheelhouse": None,                # local wheelhouse dir; default /var/cache/airflow-ha/wheelhouse-<v>-py<p>
    "worker_concurrency": 4,
    "parallelism": 32,
    "api_workers": 2,
    "worker_queues": ["default"],      # Celery queues a worker consumes; per host overridable
    "worker_stop_timeout": 600,        # seconds a worker may spend finishing tasks on stop (warm shutdown)
    # seconds a task may stay "queued" (sent, not started) before a scheduler re-sends it; after 3 times it
    # fails. A task whose worker host died while starting it waits this long (README "Lost workers").
    "task_queued_timeout": 600,        # Airflow's default
    "admin_user": "admin",
    "ports": {
        "redis": 6379, "sentinel": 26379, "postgres": 5432, "api": 8080,
        "worker_log": 8793, "flower": 5555, "http": 80, "https": 443,
        "statsd": 9125, "statsd_exporter": 9102, "node_exporter": 9100,
        "redis_exporter": 9121, "postgres_exporter": 9187, "prometheus": 9090,
        "etcd_client": 2379, "etcd_peer": 2380, "patroni_api": 8008,   # Patroni mode only
    },
    "redis": {"mode": "replication", "master_name": "airflow", "down_after_ms": 5000,
              "failover_timeout_ms": 60000, "maxmemory": "0"},   # 0 = no limit (noeviction: a full broker refuses)
    # max_connections 0 = computed from the number of Airflow processes. The rest applies to Patroni mode
    # (postgres on >= 2 hosts, fabfile/patroni.py): Patroni's DCS timing (loop_wait + 2*retry_timeout <= ttl)
    # and synchronous_mode (a commit is on a standby before the client hears "ok"; costs one network
    # round trip per commit, and writes wait while no standby is in sync).
    "postgres": {"max_connections": 0, "synchronous_mode": True, "ttl": 30, "loop_wait": 10,
                 "retry_timeout": 10},
    "tls": {"enabled": False, "cert": None, "key": None},
    "http_proxy": None,                # proxy for apt/dnf on the hosts (pip installs offline from the wheelhouse)
    "firewall": "auto",                # auto (platform default) | ufw | firewalld
    "monitoring_cidr": None,           # extra source allowed to scrape exporters
    "dags_dir": "files/dags",          # local DAG folder synced by dags.deploy (relative to the inventory)
    "ha_test_dags": False,             # also ship files/dags-ha-test/ (sample + drill load DAGs): labs, not production
    "dag_releases_keep": 5,
    "secrets": None,                   # secrets file; default .secrets/<inventory name>.yaml beside it
    "ssh_config": None,                # ssh_config for the runner; default: the lab's if it is up, else ~/.ssh
    "parallel": 10,                    # hosts worked on at once
    "check_timeout": 10,               # seconds per health check
    "connect_timeout": 3,              # seconds to open an SSH connection (TCP, banner, auth) before "unreachable"
    "monitoring": False,               # statsd + exporters on every host
    "vip": None,                       # IPv4 address keepalived moves between the nginx hosts (VRRP)
    "vip_interface": None,             # default: the interface carrying the host's cluster address
    "vip_router_id": 0,                # VRRP virtual_router_id 1-255; 0 = derived from the cluster name
    # pgBackRest (fabfile/backup.py): the repository is the `backup` host, else `repo_path` (a local or
    # shared mount), else S3 (`s3_bucket` + `s3_endpoint` + `s3_region`; key and secret in the secrets file
    # as backup_s3_key / backup_s3_key_secret). None of them = no backups (health and --check warn).
    # Schedules are systemd OnCalendar expressions; "" turns a schedule off. max_age_hours 0 = derived
    # (24 with a diff schedule, else 168): health warns past it + 6 h, fails at twice that.
    "backup": {"repo_path": None, "full_schedule": "Sun *-*-* 01:00:00", "diff_schedule": "Mon..Sat *-*-* 01:00:00",
               "retention_full": 2, "max_age_hours": 0, "s3_bucket": None, "s3_endpoint": None,
               "s3_region": None, "s3_uri_style": None},
}
#: keys that take any positive number (whole or not), e.g. connect_timeout: 1.5
POSITIVE_NUMBERS = ("cluster.connect_timeout",)
HOST_OVERRIDABLE = ("worker_concurrency", "firewall", "api_workers", "worker_queues")
HOST_KEYS = ("roles", "address", *HOST_OVERRIDABLE)
FIREWALLS = ("auto", "ufw", "firewalld")

#: roles that run Airflow processes (fabfile/airflow.py ROLES)
AIRFLOW_ROLES = ("api_server", "scheduler", "dag_processor", "triggerer", "worker", "flower")

#: which ports (names in cluster.ports) each role listens on
ROLE_PORTS = {
    "redis": ("redis",), "sentinel": ("sentinel",), "postgres": ("postgres",), "api_server": ("api",),
    "worker": ("worker_log",), "flower": ("flower",), "nginx": ("http", "https"),
    "etcd": ("etcd_client", "etcd_peer"),
}
#: Patroni mode: every postgres host also serves Patroni's REST API (leader checks, /cluster for health)
PATRONI_PORTS = ("patroni_api",)

#: with `monitoring: true`: exporter -> (roles of the hosts that run it, () = every host; ports it listens on).
#: The one table of what runs where: fabfile/monitoring.py plans from it, the port check reads it.
EXPORTERS = {
    "node_exporter": ((), ("node_exporter",)),
    "statsd_exporter": (AIRFLOW_ROLES, ("statsd_exporter", "statsd")),
    "redis_exporter": (("redis", "sentinel"), ("redis_exporter",)),
    "postgres_exporter": (("postgres",), ("postgres_exporter",)),
    "prometheus": (("monitoring",), ("prometheus",)),
}


@dataclass(frozen=True)
class Host:
    """One inventory host: name, roles, address and per-host variables."""

    name: str
    roles: frozenset
    address: str | None
    vars: dict = field(default_factory=dict, compare=False, hash=False)

    def has(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)


@dataclass
class Inventory:
    """The validated inventory: cluster settings and hosts."""

    path: Path
    cluster: dict
    hosts: dict  # name -> Host, in file order

    def with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts.values() if role in h.roles]

    @property
    def patroni(self) -> bool:
        """Patroni mode: PostgreSQL on two or more hosts (one host = the single database, no Patroni)."""
        return len(self.with_role("postgres")) >= 2

    def var(self, host: Host, key: str):
        """A cluster setting as seen by one host (per-host overrides win)."""
        return host.vars.get(key, self.cluster[key])

    def select(self, names: str | list | None) -> list[Host]:
        """Hosts named by `--hosts a,b` (all when empty); unknown names are an InventoryError."""
        if not names:
            return list(self.hosts.values())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in names if n not in self.hosts]
        if unknown:
            raise InventoryError(
                f"host {', '.join(unknown)} is not in the inventory", str(self.path),
                f"use one of: {', '.join(self.hosts)} — or add it under 'hosts:'")
        return [self.hosts[n] for n in dict.fromkeys(names)]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load silently keeps the last of two equal keys; we refuse them (duplicate hosts)."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise InventoryError(
                f"duplicate key '{key}' (line {seen[key] + 1} and line {key_node.start_mark.line + 1})",
                loader.name, "each host (and each key) may appear only once: merge the two entries")
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def default_path() -> Path:
    return Path(os.environ.get("AIRFLOW_HA_INVENTORY", "hosts.yaml"))


def load(path: str | Path | None = None) -> Inventory:
    """Read, merge defaults and validate. Raises InventoryError naming file, key and fix."""
    path = Path(path) if path else default_path()
    if not path.is_file():
        raise InventoryError("inventory file not found", str(path),
                             "create it (see README 'Inventory') or pass --inventory / AIRFLOW_HA_INVENTORY")
    try:
        with open(path) as fh:
            loader = _UniqueKeyLoader(fh)
            loader.name = str(path)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InventoryError(f"invalid YAML: {getattr(exc, 'problem', exc)}", where,
                             "fix the YAML syntax (indentation, colons, brackets)") from None
    if not isinstance(data, dict):
        raise InventoryError("expected a mapping with 'cluster:' and 'hosts:'", str(path),
                             "see README 'Inventory' for the schema")
    unknown = set(data) - {"cluster", "hosts"}
    if unknown:
        raise InventoryError(f"unknown top-level key '{sorted(unknown)[0]}'", str(path),
                             "only 'cluster:' and 'hosts:' are allowed at the top level")
    cluster = _merge(CLUSTER_DEFAULTS, data.get("cluster") or {}, path, "cluster")
    hosts = _default_etcd(_hosts(data.get("hosts"), cluster, path))
    inv = Inventory(path=path.resolve(), cluster=cluster, hosts=hosts)
    validate(inv)
    return inv


def _type_name(value) -> str:
    return {bool: "true/false", int: "a number", str: "a string", dict: "a mapping", list: "a list"}.get(
        type(value), type(value).__name__)


def _merge(defaults: dict, given: dict, path, where: str) -> dict:
    if not isinstance(given, dict):
        raise InventoryError(f"expected a mapping, got {_type_name(given)}", f"{path}: {where}",
                             "write 'key: value' pairs under it")
    out = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        out[key] = _check_type(value, default, path, f"{where}.{key}")
    for key in given:
        if key not in defaults:
            raise InventoryError(f"unknown key '{key}'", f"{path}: {where}.{key}",
                                 f"known keys: {', '.join(defaults)}")
    return out


def _check_type(value, default, path, where):
    if where in POSITIVE_NUMBERS:
        return _positive_number(value, path, where)
    if isinstance(default, dict):
        return _merge(default, value, path, where)
    if default is None:
        if value is not None and not isinstance(value, str):
            raise InventoryError(f"expected a string, got {_type_name(value)} ({value!r})",
                                 f"{path}: {where}", "quote the value")
        return value
    if isinstance(default, bool) and not isinstance(value, bool):
        raise InventoryError(f"expected true/false, got {value!r}", f"{path}: {where}", "use true or false")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InventoryError(f"expected {_type_name(default)}, got {_type_name(value)} ({value!r})",
                                 f"{path}: {where}", f"write a whole number such as {default}, without quotes")
        if value < 0:
            raise InventoryError(f"must not be negative ({value})", f"{path}: {where}", "use a number >= 0")
    if isinstance(default, list) and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise InventoryError(f"expected a list of names, got {value!r}", f"{path}: {where}",
                             f"write a list such as {default}")
    if isinstance(default, str) and not isinstance(value, str):
        raise InventoryError(f"expected a string, got {_type_name(value)} ({value!r})",
                             f"{path}: {where}", f"quote it, e.g. '{value}'")
    return value


def _positive_number(value, path, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InventoryError(f"expected a positive number, got {value!r}", f"{path}: {where}",
                             "write a number of seconds greater than 0, without quotes, e.g. 3")
    return value


def _hosts(raw, cluster, path) -> dict:
    if not raw or not isinstance(raw, dict):
        raise InventoryError("no hosts", f"{path}: hosts", "list at least one host with its roles under 'hosts:'")
    hosts = {}
    for name, spec in raw.items():
        where = f"{path}: hosts.{name}"
        if not isinstance(name, str) or not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
            raise InventoryError(f"invalid host name {name!r}", where, "use an SSH host name such as node1")
        spec = spec or {}
        if not isinstance(spec, dict):
            raise InventoryError(f"expected a mapping, got {_type_name(spec)}", where,
                                 "write 'roles: [...]' under the host")
        for key in spec:
            if key not in HOST_KEYS:
                raise InventoryError(f"unknown key '{key}'", f"{where}.{key}", f"known keys: {', '.join(HOST_KEYS)}")
        roles = spec.get("roles") or []
        if not isinstance(roles, list):
            raise InventoryError(f"expected a list of roles, got {_type_name(roles)}", f"{where}.roles",
                                 "write roles: [redis, worker]")
        for role in roles:
            if role not in ROLES:
                raise InventoryError(f"unknown role '{role}'", f"{where}.roles",
                                     f"known roles: {', '.join(ROLES)}")
        address = spec.get("address")
        if address is not None:
            try:
                ipaddress.ip_address(str(address))
            except ValueError:
                raise InventoryError(f"address {address!r} is not an IP address", f"{where}.address",
                                     "give the host's cluster IP, or leave it out to use the SSH HostName") from None
        overrides = {k: _check_type(spec[k], cluster[k], path, f"hosts.{name}.{k}")
                     for k in HOST_OVERRIDABLE if k in spec}
        hosts[name] = Host(name=name, roles=frozenset(roles), address=address and str(address), vars=overrides)
    return hosts


def _default_etcd(hosts: dict) -> dict:
    """Patroni mode with no `etcd` host named: etcd runs where the Sentinels run (an odd number already)."""
    patroni = sum("postgres" in h.roles for h in hosts.values()) >= 2
    if not patroni or any("etcd" in h.roles for h in hosts.values()):
        return hosts
    return {n: (Host(h.name, h.roles | {"etcd"}, h.address, h.vars) if "sentinel" in h.roles else h)
            for n, h in hosts.items()}


def _check_patroni(inv: Inventory) -> None:
    """Patroni mode needs an odd etcd membership (a majority survives one loss) and sane DCS timing."""
    path, pg = inv.path, inv.cluster["postgres"]
    etcd = inv.with_role("etcd")
    if etcd and not inv.patroni:
        raise InventoryError("hosts have the 'etcd' role but PostgreSQL runs on one host (no Patroni)",
                             f"{path}: hosts", "give the 'postgres' role to 2 or more hosts (3 recommended) "
                             "for Patroni, or remove the 'etcd' role")
    if not inv.patroni:
        return
    if not etcd:
        raise InventoryError(
            f"{len(inv.with_role('postgres'))} postgres hosts (Patroni mode) but no etcd host: Patroni needs a "
            "DCS", f"{path}: hosts", "give the 'etcd' role to 3 hosts (or to none: it then follows the "
            "'sentinel' role), or keep one postgres host")
    if len(etcd) % 2 == 0:
        raise InventoryError(
            f"{len(etcd)} etcd hosts ({', '.join(h.name for h in etcd)}): an even number of members cannot form "
            "a safer majority than one member less", f"{path}: hosts", "give the 'etcd' role to an odd number "
            "of hosts (3 recommended, 5 to survive two losses)")
    if pg["ttl"] < 20 or pg["loop_wait"] < 1 or pg["loop_wait"] + 2 * pg["retry_timeout"] > pg["ttl"]:
        raise InventoryError(
            f"Patroni timing ttl={pg['ttl']} loop_wait={pg['loop_wait']} retry_timeout={pg['retry_timeout']} "
            "breaks loop_wait + 2*retry_timeout <= ttl (ttl >= 20)", f"{path}: cluster.postgres",
            "use the defaults ttl: 30, loop_wait: 10, retry_timeout: 10, or raise ttl")


def validate(inv: Inventory) -> None:
    """Refuse an inventory the cluster cannot run on (InventoryError: what, where, fix)."""
    path, c = inv.path, inv.cluster
    if c["redis"]["mode"] == "cluster":
        raise InventoryError(
            "redis.mode 'cluster' is not supported: Celery/kombu has no Redis Cluster transport (CROSSSLOT/"
            "MovedError; kombu offers redis, rediss and sentinel only), and a 3-master Redis Cluster without "
            "replicas is not HA either", f"{path}: cluster.redis.mode",
            "use 'replication' (the default): 1 master + replicas, failover by 3 Sentinels, sentinel:// broker URLs")
    if c["redis"]["mode"] != "replication":
        raise InventoryError(f"unknown redis.mode {c['redis']['mode']!r}", f"{path}: cluster.redis.mode",
                             "use 'replication'")
    if not re.fullmatch(r"\d+(kb|mb|gb)?", str(c["redis"]["maxmemory"]).lower()):
        raise InventoryError(f"redis.maxmemory {c['redis']['maxmemory']!r} is not a Redis memory size",
                             f"{path}: cluster.redis.maxmemory", "write e.g. 0 (no limit), 512mb or 2gb")
    for role, fix in (("postgres", "give one host (single database) or 3 hosts (Patroni) the 'postgres' role"),
                      ("redis", "give one or more hosts (3 recommended) the 'redis' role"),
                      ("api_server", "give at least one host (2 for HA) the 'api_server' role"),
                      ("scheduler", "give at least one host (2 for HA) the 'scheduler' role"),
                      ("dag_processor", "give one host the 'dag_processor' role"),
                      ("worker", "give at least one host the 'worker' role"),
                      ("nginx", "give at least one host the 'nginx' role")):
        if not inv.with_role(role):
            raise InventoryError(f"no host has the '{role}' role", f"{path}: hosts", fix)
    _check_patroni(inv)
    sentinels = len(inv.with_role("sentinel"))
    if sentinels % 2 == 0:
        raise InventoryError(
            f"{sentinels} sentinel hosts: an {'empty' if not sentinels else 'even'} number of Sentinels cannot "
            "form a safe majority", f"{path}: hosts",
            "give the 'sentinel' role to an odd number of hosts (3 recommended)")
    if c["firewall"] not in FIREWALLS:
        raise InventoryError(f"unknown firewall {c['firewall']!r}", f"{path}: cluster.firewall",
                             f"use one of: {', '.join(FIREWALLS)}")
    for host in inv.hosts.values():
        if inv.var(host, "firewall") not in FIREWALLS:
            raise InventoryError(f"unknown firewall {inv.var(host, 'firewall')!r}",
                                 f"{path}: hosts.{host.name}.firewall", f"use one of: {', '.join(FIREWALLS)}")
        if inv.var(host, "worker_concurrency") < 1:
            raise InventoryError("worker_concurrency must be at least 1",
                                 f"{path}: hosts.{host.name}.worker_concurrency", "use 1 or more")
        _check_ports(inv, host)
        _check_queues(inv, host)
    if not any("default" in inv.var(h, "worker_queues") for h in inv.with_role("worker")):
        raise InventoryError("no worker serves the 'default' queue: tasks without a queue would never run",
                             f"{path}: worker_queues", "add 'default' to the worker_queues of at least one worker")
    _check_vip(inv)
    _check_backup(inv)
    tls = c["tls"]
    if bool(tls["cert"]) != bool(tls["key"]):
        raise InventoryError("tls.cert and tls.key must be given together", f"{path}: cluster.tls",
                             "give both paths, or neither to generate a self-signed pair")


def _check_vip(inv: Inventory) -> None:
    """`vip` is an IPv4 address no host has; `vip_interface` only with it; router id 0 (derived) or 1-255."""
    c, path = inv.cluster, inv.path
    if c["vip"] is None:
        for key in ("vip_interface", "vip_router_id"):
            if c[key]:
                raise InventoryError(f"{key} without vip", f"{path}: cluster.{key}",
                                     "set cluster.vip (the address clients use) or remove this key")
        return
    try:
        vip = ipaddress.IPv4Address(c["vip"])
    except ValueError:
        raise InventoryError(f"vip {c['vip']!r} is not an IPv4 address", f"{path}: cluster.vip",
                             "give a free IPv4 address in the nginx hosts' subnet, e.g. 10.0.0.100") from None
    owner = next((h.name for h in inv.hosts.values() if h.address == str(vip)), None)
    if owner:
        raise InventoryError(f"vip {vip} is the address of host {owner}", f"{path}: cluster.vip",
                             "the VIP must be an address no host owns: pick a free one in the same subnet")
    if not 0 <= c["vip_router_id"] <= 255:
        raise InventoryError(f"vip_router_id {c['vip_router_id']} is not in 1-255", f"{path}: cluster.vip_router_id",
                             "use 1-255 (unique among the VRRP routers of this network), or 0 to derive it")


CALENDAR = re.compile(r"^[A-Za-z0-9*.,:/~ +-]*$")


def _check_backup(inv: Inventory) -> None:
    """One repository: at most one `backup` host, not also S3; S3 complete; sane retention and schedules."""
    b, path = inv.cluster["backup"], inv.path
    hosts = inv.with_role("backup")
    if len(hosts) > 1:
        raise InventoryError(f"{len(hosts)} backup hosts ({', '.join(h.name for h in hosts)}): pgBackRest "
                             "keeps one repository here", f"{path}: hosts", "give the 'backup' role to one host")
    if hosts and b["s3_bucket"]:
        raise InventoryError("a backup host and backup.s3_bucket: two repositories", f"{path}: cluster.backup",
                             "keep the 'backup' role or the S3 settings, not both")
    if hosts and inv.patroni and hosts[0].has("postgres"):
        raise InventoryError(f"backup host {hosts[0].name} is also a Patroni member: the repository would be "
                             "lost with that member", f"{path}: hosts.{hosts[0].name}.roles",
                             "give the 'backup' role to a host without 'postgres'")
    missing = [k for k in ("s3_endpoint", "s3_region") if b["s3_bucket"] and not b[k]]
    if missing:
        raise InventoryError(f"backup.s3_bucket without backup.{missing[0]}", f"{path}: cluster.backup",
                             "set s3_bucket, s3_endpoint and s3_region together (e.g. s3.us-east-1.amazonaws.com, "
                             "us-east-1)")
    if b["s3_uri_style"] not in (None, "host", "path"):
        raise InventoryError(f"backup.s3_uri_style {b['s3_uri_style']!r}", f"{path}: cluster.backup.s3_uri_style",
                             "use host (AWS) or path (most S3-compatible stores, e.g. MinIO)")
    if b["repo_path"] is not None and not b["repo_path"].startswith("/"):
        raise InventoryError(f"backup.repo_path {b['repo_path']!r} is not absolute", f"{path}: cluster.backup.repo_path",
                             "write an absolute path such as /var/lib/pgbackrest")
    if b["retention_full"] < 1:
        raise InventoryError("backup.retention_full must be at least 1", f"{path}: cluster.backup.retention_full",
                             "keep 2 or more full backups (the default is 2)")
    for key in ("full_schedule", "diff_schedule"):
        if not CALENDAR.match(b[key]):
            raise InventoryError(f"backup.{key} {b[key]!r} is not a systemd calendar expression",
                                 f"{path}: cluster.backup.{key}", "write e.g. 'Sun *-*-* 01:00:00' or 'daily', "
                                 "'' for none (`systemd-analyze calendar` checks it)")
    if not b["full_schedule"]:
        raise InventoryError("backup.full_schedule is empty: differential backups need a full one",
                             f"{path}: cluster.backup.full_schedule", "use e.g. 'Sun *-*-* 01:00:00' (the default)")


def exporters(host: Host) -> list[str]:
    """The exporters a host runs when monitoring is on, in EXPORTERS order."""
    return [e for e, (roles, _) in EXPORTERS.items() if not roles or host.has(*roles)]


def listening(inv: Inventory, host: Host) -> list[str]:
    """Every port (name in cluster.ports) the host will listen on."""
    services = [p for role in sorted(host.roles) for p in ROLE_PORTS.get(role, ())]
    if inv.patroni and host.has("postgres"):
        services += list(PATRONI_PORTS)
    if inv.cluster["monitoring"]:
        services += [p for e in exporters(host) for p in EXPORTERS[e][1]]
    return services


def _check_ports(inv: Inventory, host: Host) -> None:
    ports = inv.cluster["ports"]
    used: dict[int, str] = {22: "ssh"}
    for service in listening(inv, host):
        port = ports[service]
        if used.setdefault(port, service) != service:
            raise InventoryError(
                f"two services on port {port} of host {host.name}: {used[port]} and {service}",
                f"{inv.path}: cluster.ports.{service} (host {host.name})",
                f"give '{service}' (or '{used[port]}') a port no other service of {host.name} uses, "
                "under cluster.ports")


QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_queues(inv: Inventory, host: Host) -> None:
    where = f"{inv.path}: hosts.{host.name}.worker_queues"
    queues = inv.var(host, "worker_queues")
    if "worker_queues" in host.vars and not host.has("worker"):
        raise InventoryError("worker_queues on a host without the 'worker' role", where,
                             "add the 'worker' role or remove worker_queues from this host")
    if not queues or len(set(queues)) != len(queues):
        raise InventoryError(f"worker_queues must list one or more distinct queues, got {queues!r}", where,
                             "e.g. worker_queues: [default, heavy]")
    bad = [q for q in queues if not QUEUE_NAME.match(q)]
    if bad:
        raise InventoryError(f"invalid queue name {bad[0]!r}", where,
                             "use letters, digits, '_', '.' and '-' (Celery queue names)")


def resolve_address(inv: Inventory, host: Host, ssh_lookup) -> str:
    """The host's cluster address: inventory `address`, else the ssh_config HostName, else DNS."""
    if host.address:
        return host.address
    target = ssh_lookup(host.name).get("hostname", host.name)
    try:
        return str(ipaddress.ip_address(target))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(target, 22, socket.AF_INET)[0][4][0]
    except OSError:
        raise InventoryError(f"cannot resolve host '{host.name}'", f"{inv.path}: hosts.{host.name}",
                             "set 'address:' for it, add it to your ssh_config, or bring the lab up "
                             "(inv lab.up)") from None
