"""Inventory: load `hosts.yaml`, apply documented defaults, validate everything before any connection.

Schema (README "Inventory" shows an example):

    cluster:            # optional; every key has a default (cluster_defaults)
      <key>: <value>
    hosts:              # required, at least one host
      <ssh name>:
        roles: [<role>, ...]
        address: <ip>   # optional cluster address; default: HostName from ssh_config, else DNS
        <override>: ... # optional per-host overrides of the cluster keys components allow (host_settings)

The keys, roles, ports and checks beyond core's own come from the components (core/component.py), given
as a Registry by fabfile/components.py: this module names no component.

Typed settings: once every value has passed its type check, the validator builds frozen dataclasses, and
code reads attributes, never `cluster[...]` string lookups:

    inv.settings                # the whole `cluster:` block: one frozen dataclass (settings_class) that
                                # inherits CoreSettings and every component's settings dataclass
    inv.settings.worker_stop_timeout    inv.settings.redis.master_name   (a nested block: its own dataclass)
    inv.ports.redis             # = inv.settings.ports: every component's ports (Ports, made from default_ports);
                                # a port named at run time (Role.ports): getattr(inv.ports, name)
    inv.settings_for(host)      # the same with the host's overrides applied (the keys in host_settings)

The defaults and types stay the dataclasses' (a default's type is the type the key must have); the error
messages are the validator's. To change a setting in memory (`inv upgrade`: the target version), replace the
whole object: `inv.settings = dataclasses.replace(inv.settings, airflow_version=...)`. `inv.cluster` is a
read-only mapping of the same values, for reading in tests.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .component import Registry, defaults
from .errors import InventoryError


@dataclass(frozen=True)
class CoreSettings:
    """The cluster keys core reads itself; every component brings its own (Component.settings, default_ports).
    The type of a default is the type the key must have (None = optional str)."""

    name: str = "airflow"
    secrets: str | None = None         # secrets file; default .secrets/<inventory name>.yaml beside it
    ssh_config: str | None = None      # ssh_config for the runner; default: the lab's if it is up, else ~/.ssh
    parallel: int = 10                 # hosts worked on at once
    check_timeout: int = 10            # seconds per health check
    connect_timeout: float = 3         # seconds to open an SSH connection (TCP, banner, auth) before "unreachable"


CORE_DEFAULTS: dict = defaults(CoreSettings)
#: keys that take any positive number (whole or not), e.g. connect_timeout: 1.5
POSITIVE_NUMBERS = ("cluster.connect_timeout",)


def cluster_defaults(registry: Registry) -> dict:
    """Every `cluster:` key with its default: core's, `ports` (every component's), then each component's."""
    return {**CORE_DEFAULTS, "ports": registry.default_ports(), **registry.settings()}


@functools.cache
def settings_class(registry: Registry) -> type:
    """The typed `cluster:` block: a frozen dataclass inheriting CoreSettings and every component's settings,
    plus `ports` (Ports: one int field per component port)."""
    ports = dataclasses.make_dataclass(
        "Ports", [(name, int, field(default=port)) for name, port in registry.default_ports().items()], frozen=True)
    ports.__doc__ = "`cluster.ports`: every component's ports by name (Component.default_ports)."
    # the last base's fields come first: core's, the components' in component order, then ports
    bases = (*reversed(registry.settings_classes()), CoreSettings)
    cls = dataclasses.make_dataclass("Settings", [("ports", ports, field(default_factory=ports))], bases=bases,
                                     frozen=True)
    cls.__doc__ = "The inventory's `cluster:` block, typed (core/inventory.py)."
    ports.__module__ = cls.__module__ = __name__
    return cls


def _build(cls: type, values: dict):
    """An instance of settings dataclass `cls` from validated values (a nested settings dataclass from its mapping)."""
    proto = cls()
    return cls(**{f.name: _build(type(getattr(proto, f.name)), values[f.name])
                  if dataclasses.is_dataclass(getattr(proto, f.name)) else values[f.name]
                  for f in dataclasses.fields(cls)})


def as_dict(settings) -> dict:
    """Settings as plain mappings (nested settings too): what the inventory file says, defaults applied."""
    return {f.name: as_dict(v) if dataclasses.is_dataclass(v := getattr(settings, f.name))
            else list(v) if isinstance(v, list) else v for f in dataclasses.fields(settings)}


def host_keys(registry: Registry) -> tuple[str, ...]:
    """The keys a host entry may have: its roles and address, and the settings components let it override."""
    return ("roles", "address", *registry.host_settings())


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
    """The validated inventory: typed cluster settings and hosts, and the components it was checked against."""

    path: Path
    settings: Any   # an instance of settings_class(registry): the `cluster:` block, typed
    hosts: dict  # name -> Host, in file order
    registry: Registry = field(compare=False, repr=False)

    @property
    def ports(self):
        """`cluster.ports`, typed: `inv.ports.redis`."""
        return self.settings.ports

    @property
    def cluster(self) -> MappingProxyType:
        """The `cluster:` block as a read-only mapping (a copy of `settings`, for tests that read it by key):
        code in fabfile/ reads `settings` and `ports` (tests/unit/test_settings.py keeps it so)."""
        return MappingProxyType(as_dict(self.settings))

    def settings_for(self, host: Host):
        """The cluster settings as seen by one host: its overrides (host_settings) win."""
        return dataclasses.replace(self.settings, **host.vars) if host.vars else self.settings

    def with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts.values() if role in h.roles]

    def var(self, host: Host, key: str):
        """A cluster setting named at run time, as seen by one host (code reads `settings_for(host).<key>`)."""
        return getattr(self.settings_for(host), key)

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


def load(path: str | Path | None, registry: Registry) -> Inventory:
    """Read, merge defaults and validate against the components' roles and ports (fabfile/components.py
    passes them: core names none). Raises InventoryError naming file, key and fix."""
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
    cluster = _merge(cluster_defaults(registry), data.get("cluster") or {}, path, "cluster")
    hosts = _hosts(data.get("hosts"), cluster, path, registry)
    for component in registry.components:
        hosts = component.default_roles(hosts)
    inv = Inventory(path=path.resolve(), settings=_build(settings_class(registry), cluster), hosts=hosts,
                    registry=registry)
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


def _hosts(raw, cluster, path, registry: Registry) -> dict:
    known_roles, known_keys, overridable = tuple(registry.roles()), host_keys(registry), registry.host_settings()
    if not raw or not isinstance(raw, dict):
        raise InventoryError("no hosts", f"{path}: hosts", "list at least one host with its roles under 'hosts:'")
    hosts = {}
    for name, given in raw.items():
        where = f"{path}: hosts.{name}"
        if not isinstance(name, str) or not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
            raise InventoryError(f"invalid host name {name!r}", where, "use an SSH host name such as node1")
        spec = given or {}
        if not isinstance(spec, dict):
            raise InventoryError(f"expected a mapping, got {_type_name(spec)}", where,
                                 "write 'roles: [...]' under the host")
        for key in spec:
            if key not in known_keys:
                raise InventoryError(f"unknown key '{key}'", f"{where}.{key}", f"known keys: {', '.join(known_keys)}")
        roles = spec.get("roles") or []
        if not isinstance(roles, list):
            raise InventoryError(f"expected a list of roles, got {_type_name(roles)}", f"{where}.roles",
                                 "write roles: [redis, worker]")
        for role in roles:
            if role not in known_roles:
                raise InventoryError(f"unknown role '{role}'", f"{where}.roles",
                                     f"known roles: {', '.join(known_roles)}")
        address = spec.get("address")
        if address is not None:
            try:
                ipaddress.ip_address(str(address))
            except ValueError:
                raise InventoryError(f"address {address!r} is not an IP address", f"{where}.address",
                                     "give the host's cluster IP, or leave it out to use the SSH HostName") from None
        overrides = {k: _check_type(spec[k], cluster[k], path, f"hosts.{name}.{k}")
                     for k in overridable if k in spec}
        hosts[name] = Host(name=name, roles=frozenset(roles), address=address and str(address), vars=overrides)
    return hosts


def validate(inv: Inventory) -> None:
    """Refuse an inventory the cluster cannot run on (InventoryError: what, where, fix): a host for every
    required role, each component's checks in component order, no two services on one port of a host."""
    for role in inv.registry.roles().values():
        if role.required and not inv.with_role(role.name):
            raise InventoryError(f"no host has the '{role.name}' role", f"{inv.path}: hosts", role.required)
    for component in inv.registry.components:
        component.validate(inv)
    for host in inv.hosts.values():
        _check_ports(inv, host)


def _check_ports(inv: Inventory, host: Host) -> None:
    used: dict[int, str] = {22: "ssh"}
    for service in inv.registry.listening(inv, host):
        port = getattr(inv.ports, service)
        if used.setdefault(port, service) != service:
            raise InventoryError(
                f"two services on port {port} of host {host.name}: {used[port]} and {service}",
                f"{inv.path}: cluster.ports.{service} (host {host.name})",
                f"give '{service}' (or '{used[port]}') a port no other service of {host.name} uses, "
                "under cluster.ports")


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
