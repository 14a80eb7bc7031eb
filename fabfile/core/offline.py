"""The offline planner: the complete planned change list of a deploy, for every host, without any host.

Spec tests (tests/spec) use it to check platforms we cannot boot here (Ubuntu, EL9): facts come from an
/etc/os-release text, every step sees the state of a fresh host, and the plan is printed as readable
shell (files as text, not base64) to compare with reviewed golden files.

What differs from a real run, on purpose:
* no I/O at all: no SSH, no secrets file (placeholders such as `<fernet_key>`), no local wheelhouse or
  constraints (placeholders), addresses only from the inventory's `address:` keys (spec inventories
  must set them);
* facts: the os-release text plus a synthetic tail (root, container "none", 2 CPUs, 4 GiB, no firewall
  active, SELinux enforcing where the platform uses it, the inventory address on eth0);
* state: every probe answers "absent" (nothing installed, no file, no command done), except where that
  word would mean something else: `service` answers what systemctl prints for a unit that does not
  exist (nothing), `user` answers nothing (no such user), and `absent` answers "present" (files the
  packages install, e.g. nginx's default site, are assumed there so their removal shows);
* the Redis master is the first redis host (what redis.prepare finds on a fresh cluster);
* `cluster.python_version` follows the platform (`Platform.python_version`), as a user deploying to
  that platform must set it (see facts.py);
* a component's `finalize_steps(run)` (airflow: db migrate, admin user) is planned on its first host.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

from .errors import InventoryError
from .facts import parse_facts
from .inventory import Inventory
from .runner import HostContext, Options, Run
from .secrets import GENERATORS
from .steps import File, Service

#: probe answer per step kind on a fresh host (default "absent\n"), see the module docstring
FRESH_STATE = {"service": "\n\n", "user": "", "absent": "present\n"}


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


class OfflineRun(Run):
    """A Run that never connects: fixed facts, placeholder secrets, inventory addresses."""

    offline = True

    def __post_init__(self):
        self.secrets = {key: f"<{key}>" for key in GENERATORS}
        self.mask = lambda text: text
        missing = [h.name for h in self.inv.hosts.values() if not h.address]
        if missing:
            raise InventoryError(f"host {', '.join(missing)} has no 'address:'", f"{self.inv.path}: hosts",
                                 "offline plans never resolve names: give every host an address")
        self.addresses = {h.name: h.address for h in self.inv.hosts.values()}
        self.ssh_config = None
        self.remotes, self.facts, self.failed = {}, {}, {}
        self.counts = {h.name: Counter() for h in self.hosts}
        self.seconds = {h.name: 0.0 for h in self.hosts}
        self.checks = Counter()
        self.results, self.pending, self.data, self.restarts = [], {}, {}, []
        self.connect_probes, self.answers = {}, {}
        self._print = threading.Lock()
        self.started = time.monotonic()

    def remote(self, name):
        raise RuntimeError("offline planning must not open a connection")

    def converge(self, host, component, steps):
        raise RuntimeError("offline planning must not converge; use plan_offline()")


def synthetic_facts(os_release_text: str, hostname: str, address: str = ""):
    """Facts of a fresh host of that distribution (PlatformError for an unsupported one); `address` on eth0."""
    platform = parse_facts(os_release_text).platform    # raises before anything else happens
    tail = (f"uid=0\nhostname={hostname}\nvirt=none\nnproc=2\nmem_kb=4194304\n"
            f"selinux={'enforcing' if platform.selinux else 'absent'}\n"
            + (f"inet4=eth0 {address}/24\n" if address else ""))
    return parse_facts(f"{os_release_text.rstrip()}\n@@facts\n{tail}")


def plan_offline(inv: Inventory, os_release_text: str, components=None) -> dict[str, list[PlannedStep]]:
    """host name -> the steps a deploy would run on a fresh host of that distribution, in order."""
    if components is None:
        from .. import stack
        components = stack.COMPONENTS
    first = synthetic_facts(os_release_text, "")         # the platform error comes first, host-free
    inv = dataclasses.replace(inv, cluster={**inv.cluster, "python_version": first.platform.python_version
                                            or inv.cluster["python_version"]})
    hosts = list(inv.hosts.values())
    run = OfflineRun(inv, hosts, Options(check=True, silent=True))
    run.facts = {h.name: synthetic_facts(os_release_text, h.name, run.addresses[h.name]) for h in hosts}
    redis_hosts = inv.with_role("redis")
    if redis_hosts:
        run.data["redis_master"] = run.addresses[redis_hosts[0].name]
    plans: dict[str, list[PlannedStep]] = {h.name: [] for h in hosts}
    for component in components:
        applicable = [h for h in hosts if component.applies(inv, h)]
        for host in applicable:
            ctx = HostContext(run, host, run.facts[host.name])
            plans[host.name] += _plan(run, host, component.NAME, component.steps(ctx))
        if applicable and hasattr(component, "finalize_steps"):
            plans[applicable[0].name] += _plan(run, applicable[0], component.NAME, component.finalize_steps(run))
    return plans


def _plan(run: Run, host, component: str, steps: list) -> list[PlannedStep]:
    """Plan like Run.converge: notifications accumulate across steps and components of a host."""
    notified: set = set(run.pending.get(host.name, ()))
    planned = []
    for step in steps:
        change = step.plan(FRESH_STATE.get(step.kind, "absent\n"), notified)
        if change is not None:
            notified.update(change.notify)
        planned.append((step, change))
    run.pending[host.name] = notified
    out, reloaded = [], "daemon-reload" not in notified
    for step, change in planned:
        if change is None:
            continue
        if not reloaded and isinstance(step, Service) and not change.warning:
            out.append(PlannedStep(component, "systemd", "daemon-reload (a unit file changed)",
                                   "systemctl daemon-reload"))
            reloaded = True
        out.append(PlannedStep(component, step.label, change.desc, readable(step, change), change.warning))
    return out


def readable(step, change) -> str:
    """The change's shell as a reviewer wants to read it: file contents as text, base64 decoded or elided."""
    if isinstance(step, File) and change.new_content is not None:
        text = step.content if isinstance(step.content, str) else f"(binary, {len(step.data)} bytes)\n"
        return f"write {step.target} ({step.owner}:{step.group} {format(step.mode, 'o')})\n{text}"
    script = change.script
    if change.stream:
        script = f"stream (tar from the control machine) | {change.stream[0]}" + (
            f"\n{script}" if script.strip() not in ("", "true") else "")
    return _elide_base64(_decode_heredocs(script))


_HEREDOC = re.compile(r"base64 -d > (\S+) <<'__AIRFLOW_HA_EOF__'\n(.*?)__AIRFLOW_HA_EOF__\n", re.S)
_B64_RUN = re.compile(r"(?m)(?:^[A-Za-z0-9+/]{76}\n)+(?:^[A-Za-z0-9+/=]{1,76}\n)?")


def _decode_heredocs(script: str) -> str:
    def text(m):
        try:
            body = base64.b64decode(m.group(2)).decode()
        except (ValueError, UnicodeDecodeError):
            return m.group(0)
        return f"cat > {m.group(1)} <<'__AIRFLOW_HA_EOF__'\n{body}__AIRFLOW_HA_EOF__\n"
    return _HEREDOC.sub(text, script)


def _elide_base64(script: str) -> str:
    return _B64_RUN.sub("<base64 data elided>\n", script)


def format_plan(plans: dict[str, list[PlannedStep]], title: str) -> str:
    """The plan as one text: the golden-file format of tests/spec."""
    parts = [f"# {title}\n# offline plan of `deploy` on fresh hosts (fabfile/core/offline.py); review every change\n"]
    for host, steps in plans.items():
        parts.append(f"\n===== {host} ({len(steps)} changes) =====\n")
        parts += [s.render() for s in steps]
    return "".join(parts)
