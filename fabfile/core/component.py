"""The component contract: what the runner, the CLI and the inventory may ask of a component.

A component is one module of fabfile/ with one subclass of `Component` (its `COMPONENT`), its templates in
files/<name>/, and one line in fabfile/components.py. Every hook has a default here, so the runner calls
hooks and never asks whether a component has one. This module names no component: core stays below them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .facts import Platform
    from .inventory import Host, Inventory
    from .runner import HostContext, HostPlan, Run
    from .steps import Step


#: what one host answered health's round trip: tag -> the text after each `@@<tag> ` line, in order
Answers = dict[str, list[str]]


@dataclass
class Check:
    """One health check's verdict on one host (or "cluster"): what `inv health` prints as a row."""

    host: str
    check: str
    status: str   # ok | warn | fail
    detail: str = ""


@dataclass(frozen=True)
class Role:
    """A role an inventory host may have, and the ports (names in `cluster.ports`) a host with it listens on."""

    name: str
    ports: tuple[str, ...] = ()
    public: bool = False     # reachable from anywhere (else from cluster hosts only)
    required: str = ""       # a cluster needs a host with it: the fix shown when none has it ("" = optional)


class Component:
    """One part of the stack, converged on the hosts it `applies` to (see the hooks below)."""

    name: ClassVar[str]
    #: the inventory roles this component brings (each role belongs to one component)
    roles: ClassVar[tuple[Role, ...]] = ()
    #: the `cluster:` keys it brings: a frozen dataclass whose fields are the keys, with their defaults (a
    #: default's type is the type the key must have; None = an optional string; a nested settings dataclass
    #: = a mapping of its own, e.g. `cluster.redis`). The inventory holds them typed: core/inventory.py.
    settings: ClassVar[type | None] = None
    #: the ports it brings (names in `cluster.ports`), with their default numbers
    default_ports: ClassVar[dict[str, int]] = {}
    #: which of its settings a host may override
    host_settings: ClassVar[tuple[str, ...]] = ()

    #: the later component before which `finalize` must be done, when it may run beside the components in
    #: between (a deploy runs it in a thread); "" = it runs before the next component starts
    finalize_before: ClassVar[str] = ""

    #: optional: (run, host) -> None once the host is healthy after a restart, else why not. Polled by a
    #: rolling restart before the next host restarts; None = no gate (the roll goes straight on).
    gate: Callable[[Run, Host], str | None] | None = None

    @property
    def description(self) -> str:
        """What the component does: its module's docstring (`inv <name>.deploy --help`)."""
        return sys.modules[type(self).__module__].__doc__ or ""

    def applies(self, inv: Inventory, host: Host) -> bool:
        """Whether the component has anything to do on `host`."""
        raise NotImplementedError

    def steps(self, ctx: HostContext) -> list[Step]:
        """The host's desired state, as steps the runner probes, plans and applies in order."""
        raise NotImplementedError

    # -- the inventory: checked before any connection ----------------------------------------------------
    def default_roles(self, hosts: dict[str, Host]) -> dict[str, Host]:
        """The hosts, with the roles the component gives when the inventory names none (etcd: the Sentinels)."""
        return hosts

    def validate(self, inv: Inventory) -> None:
        """Refuse an inventory the component cannot run on: raise InventoryError (what, where, fix)."""

    # -- what the component listens on and runs: read by the port check, the firewall and health -------
    def listens(self, inv: Inventory, host: Host) -> list[str]:
        """The ports (names in cluster.ports) the component's processes listen on at `host`."""
        return [p for role in self.roles if host.has(role.name) for p in role.ports]

    def peer_ports(self, inv: Inventory) -> list[str]:
        """The ports every host opens to the cluster's hosts only (the same on every host)."""
        return [p for role in self.roles if not role.public for p in role.ports]

    def public_ports(self, inv: Inventory, host: Host) -> list[str]:
        """The ports `host` opens to anyone."""
        return [p for role in self.roles if role.public and host.has(role.name) for p in role.ports]

    def units(self, run: Run, host: Host) -> list[str]:
        """The systemd units the component keeps active on `host` (health checks each one)."""
        return []

    def names(self, platform: Platform) -> object | None:
        """What the component's packages, units, paths and users are called on `platform`: a small frozen
        dataclass in its module (Ansible's vars/<os>.yml). None when nothing of it differs between platforms."""
        return None

    # -- optional hooks: the defaults do nothing --------------------------------------------------------
    def local_artifacts(self, inv: Inventory) -> None:
        """Build what the steps read on the control machine (wheelhouse, DAG bundle) before any host is reached."""

    def connect_probe(self, run: Run, host: Host) -> str:
        """Shell asked of every host with its facts (same round trip), read by `prepare`; "" = no question."""
        return ""

    def prepare(self, run: Run, hosts: list[Host]) -> None:
        """Cross-host facts the steps need (e.g. the Redis master), before any host of a batch is planned."""

    def finalize(self, run: Run, hosts: list[Host]) -> None:
        """Once after the component ran on `hosts` (e.g. `db migrate` on one host)."""

    def afterwards(self, run: Run, hosts: list[Host]) -> None:
        """Once after every component ran on `hosts` (all batches), in a thread beside the run's finish (the
        health gate), before the recap: work nothing the deploy starts needs (e.g. Airflow's admin user)."""

    def roll_order(self, run: Run, hosts: list[Host]) -> list[Host]:
        """The order hosts restart in during a rolling restart (default: inventory order)."""
        return hosts

    def roll_plans(self, run: Run, plans: list[HostPlan]) -> list[HostPlan]:
        """The host plans in roll order; a component whose hosts roll in several parts splits them here."""
        by_name = {p.host.name: p for p in plans}
        return [by_name[h.name] for h in self.roll_order(run, [p.host for p in plans])]

    def before_restart(self, run: Run, host: Host, units: list[str]) -> tuple[str, Callable] | None:
        """(what it does, action) to run before `host` restarts `units`; action() -> None or why not."""
        return None

    def after_restart(self, run: Run, host: Host) -> str | None:
        """After a `before_restart` host passed its gate: undo what it did; None or why not."""
        return None

    # -- `inv health` (fabfile/health.py gathers and renders; the rows are the component's) -------------
    def health_probe(self, run: Run, host: Host) -> list[str]:
        """Shell lines asked of `host` in health's one round trip, each printing `@@<tag> <answer>` lines."""
        return []

    def health_rows(self, run: Run, host: Host, answers: Answers) -> list[Check]:
        """`host`'s rows from what it answered (`answers[tag]`: the text after each `@@<tag> `, in order)."""
        return []

    def health_checks(self, run: Run) -> list[Check]:
        """Rows the control machine checks itself (client libraries through SSH forwards), in parallel with
        the hosts' own checks. A host in `run.failed` is named by its own rows: skip it."""
        return []

    def database_checks(self, run: Run, cursor) -> list[Check]:
        """Rows read from the Airflow database's primary, over the connection its health check opened
        (an exception fails that check's row)."""
        return []

    def health_summary(self, run: Run, answers: dict[str, Answers]) -> list[Check]:
        """Cross-host rows from what every host answered (host -> its answers), once all of them did."""
        return []


def defaults(settings: type) -> dict:
    """A settings dataclass's keys with their defaults, as the inventory validates them: a nested settings
    dataclass becomes a mapping of its own keys and defaults."""
    return dataclasses.asdict(settings())


@dataclass(frozen=True)
class Registry:
    """The ordered components, and what core asks of all of them at once: settings, roles, ports, units."""

    components: tuple[Component, ...] = ()

    def settings(self) -> dict:
        """Every component's `cluster:` keys with their defaults (nested settings as mappings), in component order."""
        return {key: default for c in self.components if c.settings for key, default in defaults(c.settings).items()}

    def settings_classes(self) -> tuple[type, ...]:
        """The components' settings dataclasses, in component order."""
        return tuple(c.settings for c in self.components if c.settings)

    def default_ports(self) -> dict[str, int]:
        return {name: port for c in self.components for name, port in c.default_ports.items()}

    def host_settings(self) -> tuple[str, ...]:
        return tuple(key for c in self.components for key in c.host_settings)

    def roles(self) -> dict[str, Role]:
        """Every role a host may have, by name, in component order."""
        return {role.name: role for c in self.components for role in c.roles}

    def listening(self, inv: Inventory, host: Host) -> list[str]:
        """Every port (name in cluster.ports) `host` will listen on."""
        return [p for c in self.components for p in c.listens(inv, host)]

    def peer_ports(self, inv: Inventory) -> list[str]:
        return [p for c in self.components for p in c.peer_ports(inv)]

    def public_ports(self, inv: Inventory, host: Host) -> list[str]:
        return [p for c in self.components for p in c.public_ports(inv, host)]

    def units(self, run: Run, host: Host) -> list[str]:
        return [u for c in self.components for u in c.units(run, host)]
