"""Fresh hosts without any host: the state source the spec tests feed the real runner with.

Spec tests (tests/spec) check platforms we cannot boot here (Ubuntu, EL9): `plan_offline` runs the real
runner (`runner.run_components`, in --check mode) over `FreshHosts`, and prints what it would apply as
readable shell (files as text, not base64) to compare with reviewed golden files.

What a fresh host answers, on purpose:
* facts: the os-release text plus a synthetic tail (root, container "none", 2 CPUs, 4 GiB, SELinux
  enforcing where the platform uses it, the inventory address on eth0);
* probes: `fresh_state` per step kind: "absent" (nothing installed, no file, no command done), except
  where that word would mean something else: `service` answers what systemctl prints for a unit that does
  not exist (nothing), and `absent` answers "present" (files the packages install, e.g. nginx's default
  site, are assumed there so their removal shows);
* any other question (a Sentinel's master, a Patroni member's state, a file's current text): no output;
* the control machine: placeholder secrets (`<fernet_key>`) and files (`<constraints-….txt>`), addresses
  only from the inventory's `address:` keys (spec inventories must set them).
The spec tests set `cluster.python_version` to the platform's (`Platform.python_version`), as a user
deploying to that platform must (tests/spec/plans.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InventoryError, UserError
from .facts import parse_facts
from .inventory import Inventory
from .protocol import ShellHost
from .readable import readable
from .remote import Result
from .runner import Options, Run, run_components
from .secrets import GENERATORS

#: probe answer per step kind on a fresh host (default "absent\n"), see the module docstring
FRESH_STATE = {"service": "\n\n", "absent": "present\n"}


def fresh_state(step) -> str:
    return FRESH_STATE.get(step.kind, "absent\n")


def placeholder(path: Path, name: str) -> bytes:
    """A control machine file as a fresh plan shows it: its name in angle brackets."""
    return f"<{name}>\n".encode()


def facts_text(os_release_text: str, hostname: str, address: str = "") -> str:
    """What the facts round trip prints on a fresh host of that distribution (PlatformError for an unsupported one)."""
    platform = parse_facts(os_release_text).platform    # raises before anything else happens
    tail = (f"uid=0\nhostname={hostname}\nvirt=none\nnproc=2\nmem_kb=4194304\n"
            f"selinux={'enforcing' if platform.selinux else 'absent'}\n"
            + (f"inet4=eth0 {address}/24\n" if address else ""))
    return f"{os_release_text.rstrip()}\n@@facts\n{tail}"


def synthetic_facts(os_release_text: str, hostname: str, address: str = ""):
    """Facts of a fresh host of that distribution (PlatformError for an unsupported one); `address` on eth0."""
    return parse_facts(facts_text(os_release_text, hostname, address))


class FreshHost(ShellHost):
    """One fresh host: facts from its os-release, every probe answered by `state(step)`."""

    def __init__(self, name: str, facts: str, state: Callable = fresh_state):
        self.name, self.facts, self.state = name, facts, state
        self.round_trips = 0

    def gather(self, questions):
        self.round_trips += 1
        return self.facts, dict.fromkeys(questions, "")

    def probe(self, steps):
        self.round_trips += 1
        return [self.state(step) for step in steps]

    def sh(self, script, timeout=None):
        self.round_trips += 1
        return Result(0, "", "")

    def stream_to(self, command, chunks, timeout=None):
        return self.sh(command)

    def close(self):
        pass


@dataclass
class FreshHosts:
    """A StateSource (protocol.py): every inventory host a FreshHost of one distribution at its inventory
    address; placeholder secrets; control machine files from `local` (default: placeholders)."""

    os_release: str
    state: Callable = fresh_state
    local: Callable[[Path, str], bytes] = placeholder
    given: dict = field(default_factory=dict, init=False)     # host -> the address `addresses` gave it

    def secrets(self, inv, check: bool) -> dict:
        return {key: f"<{key}>" for key in GENERATORS}

    def addresses(self, inv) -> dict[str, str]:
        missing = [h.name for h in inv.hosts.values() if not h.address]
        if missing:
            raise InventoryError(f"host {', '.join(missing)} has no 'address:'", f"{inv.path}: hosts",
                                 "offline plans never resolve names: give every host an address")
        self.given = {h.name: h.address for h in inv.hosts.values()}
        return dict(self.given)

    def connect(self, name: str, timeout: float) -> FreshHost:
        return FreshHost(name, facts_text(self.os_release, name, self.given[name]), self.state)

    def read_local(self, path: Path, name: str) -> bytes:
        return self.local(path, name)


def fresh_run(inv: Inventory, os_release_text: str, opts: Options | None = None, connect: bool = True,
              **source) -> Run:
    """A Run over FreshHosts (facts gathered unless `connect` is False): for tests of one component's steps."""
    run = Run(inv, list(inv.hosts.values()), opts or Options(check=True, silent=True),
              source=FreshHosts(os_release_text, **source))
    if connect:
        run.connect()
    return run


@dataclass
class PlannedStep:
    """One planned change of an offline plan, as the golden files show it."""

    component: str
    label: str
    desc: str
    script: str
    warning: bool = False

    def render(self) -> str:
        head = f"-- {self.component}: {self.label}: {'[warn] ' if self.warning else ''}{self.desc}"
        body = "".join(f"    {line}\n" if line else "\n" for line in self.script.splitlines())
        return head + "\n" + body


def plan_offline(inv: Inventory, os_release_text: str, components: list) -> dict[str, list[PlannedStep]]:
    """host name -> the changes a deploy of `components` would apply to fresh hosts of that distribution,
    in order: the real runner in --check mode; the first host failure is raised."""
    synthetic_facts(os_release_text, "")         # the platform error comes first, host-free
    run = Run(inv, list(inv.hosts.values()), Options(check=True, silent=True), source=FreshHosts(os_release_text))
    run_components(run, components)
    for host in inv.hosts.values():
        if host.name in run.failed:
            raise run.errors.get(host.name) or UserError(run.failed[host.name])
    return {h.name: [PlannedStep(component, step.label, change.desc, readable(step, change), change.warning)
                     for component, step, change in run.actions.get(h.name, [])] for h in inv.hosts.values()}


def format_plan(plans: dict[str, list[PlannedStep]], title: str) -> str:
    """The plan as one text: the golden-file format of tests/spec."""
    parts = [f"# {title}\n# offline plan of `deploy` on fresh hosts (fabfile/core/offline.py); review every change\n"]
    for host, steps in plans.items():
        parts.append(f"\n===== {host} ({len(steps)} changes) =====\n")
        parts += [s.render() for s in steps]
    return "".join(parts)
