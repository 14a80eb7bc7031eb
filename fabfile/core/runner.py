"""The runner: components over hosts, in parallel, with ok/changed/failed per step and a recap.

Per host and component: one round trip to probe every step, a local plan, one round trip to apply the
changes (none when nothing differs). A host that fails is marked failed and skipped by later
components; the other hosts go on. `--check` prints the plan and file diffs and changes nothing.

Rolling by default: a component is probed and planned on all its hosts in parallel; if any plan restarts
(or reloads) a unit that is running now, its hosts are applied one at a time, each followed by the
component's `gate(run, host)` if it has one (None = healthy, else why not; polled up to `gate_timeout`).
A failed apply or gate marks that host failed and stops the roll: later hosts keep their old, running
config. The other hooks of the contract (core/component.py) choose `roll_order(run, hosts)`, or
`roll_plans(run, plans)` when a host's
plan rolls in several parts (Airflow services: per role across hosts on a version change),
`before_restart(run, host, units)` (Redis: master last, failed over first; api-servers: drained from
every nginx) and `after_restart(run, host)` once the gate passed (api-servers: back into every nginx).
First starts (fresh deploy) stay parallel, and a converged host still costs one probe round trip
(`speculate`); inside it, steps of one kind share one command (steps.BATCHES: `systemctl show`,
`stat`/`sha256sum`, `dpkg-query`).
`AIRFLOW_HA_PROFILE` records where the time goes (profile.py). `--check` ends with the restarts in roll order,
those that cost downtime marked (`Service(downtime=...)`).

A run never asks whether its hosts are real: secrets, addresses and connections come from its state source
(protocol.StateSource: SSH by default, fresh hosts for the spec tests), so they all plan through this module.
"""

from __future__ import annotations

import base64
import difflib
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import profile, templates
from . import secrets as secrets_mod
from .component import Component
from .errors import UserError
from .facts import Facts, parse_facts
from .inventory import Host, Inventory
from .protocol import StateSource, apply_script, in_apply_order, parse_apply, reload_position, split
from .readable import readable
from .remote import Unreachable
from .sshhosts import SSHHosts
from .steps import Change, File, Preview

STATUS_ORDER = ("ok", "changed", "warn", "failed")
SHOWN_LINES = 12   # -v: the first lines of each planned command


@dataclass
class Options:
    """How a run behaves (CLI flags)."""

    check: bool = False
    verbose: bool = False
    quiet: bool = False
    silent: bool = False      # print nothing at all (health, which prints its own table/JSON)
    serial: int = 0           # 0 = all hosts at once; N = rolling batches of N hosts
    parallel: int = 0         # pool size; 0 = the inventory's `parallel`
    gate_timeout: float = 180  # seconds a host may take to be healthy after a restart (rolling)
    gate_interval: float = 2   # seconds between two gate checks


@dataclass
class HostContext:
    """What a component sees when it plans one host."""

    run: Run
    host: Host
    facts: Facts

    @property
    def inv(self) -> Inventory:
        return self.run.inv

    @property
    def platform(self):
        return self.facts.platform

    @property
    def address(self) -> str:
        return self.run.addresses[self.host.name]

    @property
    def secrets(self) -> dict:
        return self.run.secrets

    @property
    def settings(self):
        """The cluster settings as this host sees them (its overrides win): `ctx.settings.worker_concurrency`."""
        return self.inv.settings_for(self.host)


@dataclass
class StepResult:
    """One step's outcome on one host, as the recap counts it."""

    host: str
    component: str
    label: str
    status: str
    desc: str = ""
    output: str = ""
    seconds: float = 0.0


@dataclass
class HostPlan:
    """One component's probed and planned steps on one host, not yet applied."""

    host: Host
    component: str
    planned: list              # (step, change or None)
    probe_secs: float
    before: set                # the host's notifications before this plan (restored if it is skipped)
    part: str = ""             # which part of the host's plan this is, when it rolls in parts (roll_plans)

    @property
    def name(self) -> str:
        return f"{self.host.name} ({self.part})" if self.part else self.host.name

    @property
    def changes(self) -> list:
        """The planned changes, warnings included."""
        return [(s, c) for s, c in self.planned if c is not None]

    @property
    def todo(self) -> list:
        """The changes to apply (warnings change nothing)."""
        return [(s, c) for s, c in self.changes if not c.warning]

    @property
    def restarts(self) -> list:
        return [(s, c) for s, c in self.todo if c.restart]


@dataclass
class Run:
    """One deploy (or health) run over the selected hosts: connections, facts, results.

    Its state comes from `source` (default: SSH to the inventory's hosts; see protocol.StateSource).
    """

    inv: Inventory
    hosts: list
    opts: Options = field(default_factory=Options)
    source: StateSource | None = None

    def __post_init__(self):
        self.source = self.source or SSHHosts(self.inv)
        self.secrets = self.source.secrets(self.inv, self.opts.check)
        self.mask = secrets_mod.masker(self.secrets)
        self.addresses = self.source.addresses(self.inv)
        self.remotes: dict = {}        # host -> its connection (a protocol.ShellHost)
        self.facts: dict[str, Facts] = {}
        self.failed: dict[str, str] = {}
        self.errors: dict[str, Exception] = {}   # host -> the exception that failed it, when one did
        self.refused: dict[str, str] = {}  # hosts whose platform is unsupported: nothing may change anywhere
        self.counts = {h.name: Counter() for h in self.hosts}
        self.seconds = defaultdict(float, {h.name: 0.0 for h in self.hosts})  # + hosts asked outside a -H subset
        self.checks: Counter = Counter()   # host -> steps probed (the recap's "N checks")
        self.results: list[StepResult] = []
        self.pending: dict = {}        # host -> services notified so far in this run
        self.data: dict = {}           # cross-host facts a component's prepare() found (e.g. redis master)
        self.connect_probes: dict = {}  # name -> fn(run, host): shell asked with the facts (see connect)
        self.answers: dict = {}        # name -> {host: what that shell printed at connect}
        self.restarts: list[str] = []  # restarts in the order they were (--check: would be) done
        self.actions: dict = {}        # host -> (component, step, change) applied (--check: would be), in order
        self._print = threading.Lock()
        self._opening = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self.unreachable: dict[str, str] = {}   # host -> why its connection could not be opened
        self.started = time.monotonic()

    # -- output -----------------------------------------------------------------------------------
    def say(self, text: str, always: bool = False) -> None:
        if self.opts.silent or (self.opts.quiet and not always):
            return
        with self._print:
            print(self.mask(text), flush=True)

    def record(self, res: StepResult) -> None:
        self.results.append(res)
        if res.host in self.counts:
            self.counts[res.host][res.status] += 1
            self.seconds[res.host] += res.seconds
        verb = {"changed": "would change" if self.opts.check else "changed"}.get(res.status, res.status)
        line = f"{res.host:<10} {res.component:<10} {verb:<12} {res.label}"
        if res.desc and res.status != "ok":
            line += f": {res.desc}"
        if res.status != "ok" or self.opts.verbose:
            line += f" ({res.seconds:.1f}s)"
        self.say(line, always=res.status == "failed")
        if res.output and (res.status == "failed" or self.opts.verbose):
            self.say("\n".join("    | " + ln for ln in res.output.rstrip().splitlines()[-40:]),
                     always=res.status == "failed")

    # -- hosts ------------------------------------------------------------------------------------
    def alive(self, hosts=None) -> list:
        return [h for h in (self.hosts if hosts is None else hosts) if h.name not in self.failed]

    def fail_host(self, host: Host, component: str, reason: str, error: Exception | None = None) -> None:
        self.failed[host.name] = reason
        if error is not None:
            self.errors.setdefault(host.name, error)
        self.record(StepResult(host.name, component, "host", "failed", reason))

    def remote(self, name: str):
        """The connection to any inventory host (opened on first use, once even when threads race).

        A host that could not be reached is remembered for the run: later callers get Unreachable at once
        instead of waiting another connect_timeout.
        """
        with self._opening:
            lock = self._host_locks.setdefault(name, threading.Lock())
        with lock:
            if name in self.unreachable:
                raise Unreachable(self.unreachable[name])
            if name not in self.remotes:
                try:
                    self.remotes[name] = self.source.connect(name, self.inv.settings.connect_timeout)
                except Unreachable as exc:
                    self.unreachable[name] = str(exc)
                    raise
            return self.remotes[name]

    def parallel(self, fn, hosts) -> list:
        size = self.opts.parallel or self.inv.settings.parallel
        hosts = list(hosts)
        if not hosts:
            return []
        with ThreadPoolExecutor(max_workers=min(size, len(hosts))) as pool:
            return list(pool.map(fn, hosts))

    def connect(self, hosts=None) -> None:
        """Open one connection per host and gather its facts (one round trip), in parallel.

        The same round trip runs each `connect_probes` shell (read-only questions components ask of every
        host before planning, e.g. the Redis master a Sentinel names); answers go to `answers[name][host]`.
        """
        def one(host):
            t0 = time.monotonic()
            try:
                with profile.span("ssh open", host.name):
                    rem = self.remote(host.name)
                with profile.span("facts", host.name):
                    questions = {n: fn(self, host) for n, fn in self.connect_probes.items()}
                    facts, answers = rem.gather({n: sh for n, sh in questions.items() if sh})
                    self.facts[host.name] = parse_facts(facts)
                    for name, text in answers.items():
                        self.answers.setdefault(name, {})[host.name] = text
            except Unreachable as exc:
                self.fail_host(host, "connect", f"unreachable: {exc}", exc)
            except UserError as exc:
                self.fail_host(host, "facts", exc.message, exc)
                self.refused[host.name] = exc.message
            except Exception as exc:  # one host's surprise must not stop the others
                self.fail_host(host, "connect", f"unreachable: {type(exc).__name__}: {exc}", exc)
            else:
                self.seconds[host.name] += time.monotonic() - t0
        self.parallel(one, [h for h in (self.hosts if hosts is None else hosts) if h.name not in self.facts])

    def context(self, host: Host) -> HostContext:
        return HostContext(self, host, self.facts[host.name])

    # -- components -------------------------------------------------------------------------------
    def apply_component(self, component: Component, hosts=None, finalize_hosts=None, prepared=False,
                        background: list | None = None) -> None:
        """Run one component on the given (default: all selected, alive) hosts.

        Every host is probed and planned in parallel. If no plan restarts a running unit, the changes are
        applied in parallel; otherwise the hosts roll one at a time (`_roll`). With `background` (a list),
        a component that names a `finalize_before` has its finalize started in a thread, appended there.
        """
        hosts = [h for h in self.alive(hosts) if component.applies(self.inv, h)]
        if not prepared:
            with profile.span(f"prepare {component.name}"):
                component.prepare(self, hosts)
        plans = [p for p in self.parallel(lambda h: self._plan_component(component, h), hosts) if p]
        if any(p.restarts for p in plans):
            with profile.span(f"roll {component.name}"):
                self._roll(component, plans)
        else:
            self.parallel(lambda p: self._guard(component.name, p.host, lambda: self._finish(p)), plans)
        finalize_on = self.alive(finalize_hosts if finalize_hosts is not None else hosts)
        if background is not None and component.finalize_before:
            background.append(Background(f"finalize {component.name}", component.finalize_before,
                                         lambda: self._finalize(component, finalize_on)))
        else:
            self._finalize(component, finalize_on)

    def _finalize(self, component: Component, hosts: list) -> None:
        with profile.span(f"finalize {component.name}"):
            component.finalize(self, hosts)

    def speculate(self, components: list[Component], host: Host) -> int:
        """Fast path: probe every step of every component in ONE round trip and plan them in order.

        Returns the index of the first component that has something to change (len(components) when the
        host is already converged). The components before it are recorded as converged; from it on the
        normal per-component path runs (its probes see what earlier applies changed). In --check mode
        nothing is applied, so the speculative plan is the whole answer.
        """
        try:
            with profile.span("steps (local: render, hash)", host.name):
                ctx = self.context(host)
                planned = [(i, c, c.steps(ctx)) for i, c in enumerate(components) if c.applies(self.inv, host)]
        except Exception:  # let the normal path report it
            return 0
        flat = [s for _, _, steps in planned for s in steps]
        if not flat:
            return len(components)
        t0 = time.monotonic()
        self.checks[host.name] += len(flat)
        with profile.span("probe (all components)", host.name):
            states = iter(self.remote(host.name).probe(flat))
        secs = (time.monotonic() - t0) / len(flat)
        with profile.span("plan (local)", host.name):
            return self._speculate_plan(host, components, planned, states, secs)

    def _speculate_plan(self, host: Host, components, planned, states, secs: float) -> int:
        """speculate(), once the probe answered: plan in order, stop at the first component with changes."""
        notified: set = set(self.pending.get(host.name, ()))
        converged, changes = [], False
        for i, component, steps in planned:
            rows = []
            for step in steps:
                change = step.plan(next(states), notified)
                if change is not None and not change.warning and not self.opts.check:
                    for res in converged:
                        self.record(res)
                    return i
                if change is not None:
                    notified.update(change.notify)
                    changes = changes or not change.warning
                status = "ok" if change is None else ("warn" if change.warning else "changed")
                rows.append(StepResult(host.name, component.name, step.label, status,
                                       change.desc if change else "", seconds=secs))
            converged += rows
        if changes:
            return 0       # --check with changes: the normal path prints the diffs
        for res in converged:
            self.record(res)
        return len(components)

    def _plan_component(self, component: Component, host: Host) -> HostPlan | None:
        return self._guard(component.name, host,
                           lambda: self._probe_plan(host, component.name, component.steps(self.context(host))))

    def _guard(self, component: str, host: Host, fn):
        """fn(), with any exception marking `host` failed (the other hosts go on)."""
        try:
            return fn()
        except Unreachable as exc:
            self.fail_host(host, component, f"unreachable: {exc}", exc)
        except UserError as exc:
            self.fail_host(host, component, exc.message, exc)
        except Exception as exc:
            self.fail_host(host, component, f"{type(exc).__name__}: {exc}", exc)
        return None

    def converge(self, host: Host, component: str, steps: list) -> list[StepResult]:
        """Probe, plan and (unless --check) apply `steps` on `host`. Returns the step results."""
        plan = self._probe_plan(host, component, steps)
        return self._finish(plan) if plan else []

    def converged_early(self, host: Host, component: str, steps: list, asked: str) -> bool:
        """True, with `steps` recorded ok and no round trip, when `asked` (the output of
        `early_probe_script(steps)` run on `host` earlier in this run, e.g. with the facts) shows every
        step converged; False, nothing recorded, when a step has something to do or no answer (the caller
        then converges them). Only for steps nothing earlier in the run can undo."""
        states = split(asked, len(steps), "@@early")
        notified = set(self.pending.get(host.name, ()))
        if not steps or not all(state.strip() and step.plan(state, notified) is None
                                for step, state in zip(steps, states, strict=True)):
            return False
        self.checks[host.name] += len(steps)
        for step in steps:
            self.record(StepResult(host.name, component, step.label, "ok"))
        return True

    def _probe_plan(self, host: Host, component: str, steps: list) -> HostPlan | None:
        """One round trip probes every step; the plan is made locally (nothing changes yet)."""
        if not steps:
            return None
        t0 = time.monotonic()
        self.checks[host.name] += len(steps)
        with profile.span(f"probe {component}", host.name):
            states = self.remote(host.name).probe(steps)
        before = set(self.pending.get(host.name, ()))
        notified = set(before)
        planned: list[tuple] = []
        for step, state in zip(steps, states, strict=True):
            change = step.plan(state, notified)
            if change is not None:
                notified.update(change.notify)
            planned.append((step, change))
        self.pending[host.name] = notified   # notifications reach services of later components too
        return HostPlan(host, component, planned, (time.monotonic() - t0) / len(steps), before)

    def _finish(self, plan: HostPlan) -> list[StepResult]:
        """Record the plan's unchanged steps and warnings; apply its changes (--check: show them)."""
        host, component = plan.host, plan.component
        rem = self.remote(host.name)
        results = []
        for step, change in plan.planned:
            if change is None:
                results.append(StepResult(host.name, component, step.label, "ok", seconds=plan.probe_secs))
            elif change.warning:
                results.append(StepResult(host.name, component, step.label, "warn", change.desc))
        todo = plan.todo
        reload = self._take_reload(host, todo)
        self.actions.setdefault(host.name, []).extend(
            (component, step, change) for step, change in in_apply_order(plan.changes, reload))
        if self.opts.verbose:
            self._show_commands(host, component, todo)
        if self.opts.check:
            self._show_diffs(rem, host, todo)
            results += [StepResult(host.name, component, s.label, "changed", c.desc) for s, c in todo]
        elif todo:
            results += self._apply(rem, host, component, todo, reload)
        for res in results:
            self.record(res)
        if any(r.status == "failed" for r in results):
            self.failed[host.name] = f"{component} failed"
        return results

    def _take_reload(self, host: Host, todo: list) -> bool:
        """Whether this apply runs `systemctl daemon-reload`: a unit file changed (this component or an
        earlier one) and a service acts now. Taking it clears the notification."""
        pending = self.pending[host.name]
        if "daemon-reload" not in pending or reload_position(todo, True) is None:
            return False
        pending.discard("daemon-reload")
        return True

    # -- rolling restarts -------------------------------------------------------------------------
    def _roll(self, component: Component, plans: list[HostPlan]) -> None:
        """Apply host by host (inventory order, or the component's `roll_order` / `roll_plans`), gating each
        restart.

        Before a host whose plan restarts units, the component's optional `before_restart(run, host,
        units)` may return (what it does, action); action() -> None or why not (e.g. Redis fails its
        master over first). After it, `gate(run, host)` is polled until it returns None (healthy) or
        `gate_timeout` passes. A failure marks the host failed and stops the roll: the hosts after it
        keep their old config and running units. --check only lists the restarts, in this order.
        """
        name = component.name
        order = component.roll_plans(self, plans)
        restarting = [p for p in order if p.restarts]
        verb = "would restart" if self.opts.check else "restarts"
        self.say(f"{'rolling':<10} {name:<10} {verb} one host at a time: {' -> '.join(p.name for p in restarting)}")
        if self.opts.check:
            self.parallel(lambda p: self._guard(name, p.host, lambda: self._finish(p)), plans)
        stopped = ""
        for plan in order:
            lines = self._restart_lines(component, plan, restarting)
            if self.opts.check:
                self.restarts += lines
            elif stopped:
                self._skip(plan, stopped)
            else:
                why = self._roll_host(component, plan)
                stopped = f"roll stopped at {plan.name}: {why}" if why else ""
                self.restarts += [] if why else lines

    def _roll_host(self, component: Component, plan: HostPlan) -> str | None:
        """Apply one host's changes in a roll; None if it is healthy afterwards, else why not."""
        name, host = component.name, plan.host
        before = self._before_restart(component, plan)
        if before:
            self.say(f"{host.name:<10} {name:<10} {before[0]}")
            why = self._guard(name, host, before[1])
            if host.name in self.failed:
                return self.failed[host.name]
            if why:
                self.fail_host(host, name, f"not restarted: {why}")
                return why
        self._guard(name, host, lambda: self._finish(plan))
        if host.name in self.failed:
            return self.failed[host.name]
        if not plan.restarts:
            return None
        why = self._await_gate(component, host)
        if why is None and before:
            why = self._guard(name, host, lambda: component.after_restart(self, host))
            if why:
                self.fail_host(host, name, f"after restart: {why}")
        return why

    def _before_restart(self, component: Component, plan: HostPlan):
        if not plan.restarts:
            return None
        return component.before_restart(self, plan.host, [s.target for s, _ in plan.restarts])

    def _await_gate(self, component: Component, host: Host) -> str | None:
        """Poll the component's `gate(run, host)` until healthy (None) or `opts.gate_timeout` passes."""
        if component.gate is None:
            return None
        t0 = time.monotonic()
        while True:
            why = self._guard_gate(component, host)
            waited = time.monotonic() - t0
            if why is None:
                self.say(f"{host.name:<10} {component.name:<10} healthy after restart ({waited:.1f}s)")
                return None
            if waited >= self.opts.gate_timeout:
                self.fail_host(host, component.name, f"not healthy {waited:.0f}s after restart: {why}")
                return why
            time.sleep(self.opts.gate_interval)

    def _guard_gate(self, component: Component, host: Host) -> str | None:
        try:
            return component.gate(self, host)
        except Exception as exc:  # a gate that cannot ask yet is "not healthy yet"
            return f"{type(exc).__name__}: {exc}"

    def _skip(self, plan: HostPlan, why: str) -> None:
        """A host the roll did not reach: nothing applied, its notifications forgotten."""
        self.pending[plan.host.name] = plan.before
        desc = f"skipped, {len(plan.todo)} change(s) not applied ({why})"
        self.record(StepResult(plan.host.name, plan.component, "rolling restart", "warn", desc))

    def _restart_lines(self, component: Component, plan: HostPlan, restarting: list) -> list[str]:
        """The --check / recap lines of one host's restarts: in roll order, downtime marked."""
        if not plan.restarts:
            return []
        head = f"{plan.host.name:<10} {component.name:<10} "
        before = self._before_restart(component, plan)
        lines = [head + before[0]] if before else []
        where = f"rolling {restarting.index(plan) + 1}/{len(restarting)}"
        for step, change in plan.restarts:
            verb = "reload" if getattr(step, "reload_only", False) else "restart"
            tag = f"DOWNTIME: {change.downtime}" if change.downtime else where
            lines.append(f"{head}{verb} {step.target} ({tag})")
        return lines

    def _apply(self, rem, host, component, todo, reload: bool) -> list[StepResult]:
        streamed = {}
        for i, (_step, change) in enumerate(todo):
            if change.stream:
                t0 = time.monotonic()
                command, chunks = change.stream
                res = rem.stream_to(command, chunks(), timeout=1800)
                streamed[i] = (res, time.monotonic() - t0)
                if not res.ok:
                    break
        t0 = time.monotonic()
        with profile.span(f"apply {component}", host.name):
            res = rem.sh(apply_script(todo, reload), timeout=3600)
        wall = time.monotonic() - t0
        done = parse_apply(res.out)
        for i, (sres, secs) in streamed.items():
            rc, ms, out = done.get(i, (0, 0, ""))
            done[i] = (rc or sres.rc, int(secs * 1000) + ms, (sres.err or sres.out) + out)
        results = []
        for i, (step, change) in enumerate(todo):
            if i in done:
                rc, ms, out = done[i]
                status = "changed" if rc == 0 else "failed"
                results.append(StepResult(host.name, component, step.label, status, change.desc,
                                          self.mask(out), ms / 1000))
            else:
                reason = "not run: an earlier step failed" if done else (res.err or res.out or "no output")
                results.append(StepResult(host.name, component, step.label, "failed", change.desc,
                                          self.mask(reason.strip()[-2000:]), wall if not done else 0))
                break
        return results

    def _show_commands(self, host, component, todo) -> None:
        """-v: the shell each planned change runs (file contents are shown as diffs by --check, not here)."""
        for step, change in todo:
            text = readable(step, change)
            if isinstance(step, File):
                text = text.splitlines()[0]
            lines = text.rstrip().splitlines()
            more = len(lines) - SHOWN_LINES
            shown = lines[:SHOWN_LINES] + ([f"... ({more} more lines)"] if more > 0 else [])
            self.say(f"{host.name:<10} {component:<10} $ " + "\n    ".join(shown))

    def _show_diffs(self, rem, host, todo) -> None:
        """--check: one round trip reads the current state of every previewed target; print the diffs."""
        previews = diff_sources(todo)
        if not previews or self.opts.quiet:
            return
        olds = split(rem.sh(diff_script(previews), timeout=60).out, len(previews), marker="@@file")
        for preview, old_b64 in zip(previews, olds, strict=True):
            text = render_diff(host.name, preview, _b64_text(old_b64))
            if text:
                self.say(text)

    # -- end --------------------------------------------------------------------------------------
    def recap(self) -> int:
        if self.restarts:
            heading = "restarts (in this order)" if self.opts.check else "restarted (in this order)"
            self.say("\n".join([f"{heading}:"] + [f"  {line}" for line in self.restarts]), always=True)
        rows = []
        for h in self.hosts:
            c = self.counts[h.name]
            rows.append([h.name, c["ok"], c["changed"], c["warn"], c["failed"],
                         f"{self.seconds[h.name]:.1f}", self.failed.get(h.name, "")[:70]])
        heading = "would change" if self.opts.check else "changed"
        from tabulate import tabulate  # only the recap needs it (start-up time)
        self.say(tabulate(rows, headers=["host", "ok", heading, "warn", "failed", "seconds", "error"]),
                 always=True)
        trips = sum(r.round_trips for r in self.remotes.values())
        self.say(f"{len(self.hosts)} host(s), {len(self.failed)} failed, "
                 f"{sum(c['changed'] for c in self.counts.values())} {heading}, {trips} SSH round trips, "
                 f"{sum(self.checks.values())} checks, {time.monotonic() - self.started:.1f}s", always=True)
        return 1 if self.failed else 0

    def close(self) -> None:
        for r in self.remotes.values():
            r.close()


def diff_sources(todo) -> list[Preview]:
    """What --check compares with the host: each change's preview, and the desired text of each file."""
    out = []
    for step, change in todo:
        if change.preview:
            out.append(change.preview)
        elif isinstance(step, File) and change.new_content is not None:
            out.append(Preview(step.target, change.new_content))
    return out


def diff_script(previews) -> str:
    """One remote script printing each preview's current state, base64-encoded, after a marker."""
    return "".join(f"echo '@@file {i}'\n{{ {p.current_script()}\n}} 2>/dev/null | base64; echo\n"
                   for i, p in enumerate(previews))


def render_diff(host: str, preview: Preview, current: str) -> str:
    """The unified diff (or the preview's own comparison) of `current` against the desired state."""
    where = f"{host}:{preview.target}"
    if preview.compare:
        body = preview.compare(current, preview.desired).rstrip("\n")
        return f"{where} (current -> planned)\n" + "\n".join(f"  {line}" for line in body.splitlines())
    diff = difflib.unified_diff(current.splitlines(True), preview.desired.splitlines(True),
                                f"{where} (current)", f"{where} (planned)")
    return "".join(diff).rstrip("\n")


def _b64_text(data: str) -> str:
    try:
        return base64.b64decode(data.strip() or b"").decode(errors="replace")
    except ValueError:
        return ""


def execute(inv: Inventory, hosts: list, components: list[Component], opts: Options, preflight=None, finish=None,
            source: StateSource | None = None) -> int:
    """Connect, run the components in order (batches of N hosts with --serial), print the recap.

    Restarts roll one host at a time within each batch (see the module docstring).
    `preflight(run, hosts)`, if given, runs after connecting and before any change; a UserError it
    raises stops the run with nothing changed. `finish(run)`, if given, runs after the last component
    and before the recap (e.g. a health gate); it may mark hosts failed.
    """
    with profile.span("secrets + ssh config (local)"):
        run = Run(inv, hosts, opts, source=source)
    return run_components(run, components, preflight, finish)


def run_components(run: Run, components: list[Component], preflight=None, finish=None) -> int:
    """execute() on a Run already made: what every deploy, --check and offline plan goes through."""
    hosts, serial = run.hosts, run.opts.serial
    run.connect_probes = {c.name: c.connect_probe for c in components}
    # while the connections wait on the network: import Jinja2 and load the templates the plans render
    threading.Thread(target=_warm_templates, name="warm-templates", daemon=True).start()
    try:
        with profile.span("connect + facts (all hosts)"):
            run.connect()
        if run.refused:
            run.say("nothing changed: every host must run a supported platform first", always=True)
            return run.recap()
        if preflight:
            with profile.span("preflight (dependencies)"):
                preflight(run, run.alive())
        batches = [hosts[i:i + serial] for i in range(0, len(hosts), serial)] if serial else [hosts]
        for batch in batches:
            for component in components:
                with profile.span(f"prepare {component.name}"):
                    component.prepare(run, [h for h in run.alive(batch) if component.applies(run.inv, h)])
            with profile.span("speculate (all hosts)"):
                start = dict(zip([h.name for h in run.alive(batch)],
                                 run.parallel(lambda h: run.speculate(components, h), run.alive(batch)), strict=True))
            # --check (and the offline plan) run it in place: its plan lines keep the component order
            background: list[Background] | None = None if run.opts.check else []
            for i, component in enumerate(components):
                todo = [h for h in batch if start.get(h.name, 0) <= i]
                Background.join(b for b in background or () if b.before == component.name)
                with profile.span(f"component {component.name}"):
                    run.apply_component(component, todo, finalize_hosts=batch, prepared=True, background=background)
            Background.join(background or ())
        later = Background("afterwards", "", lambda: _afterwards(run, components))
        if run.opts.check:
            Background.join([later])
        if finish:
            with profile.span("health gate"):
                finish(run)
        Background.join([later])
        with profile.span("recap"):
            return run.recap()
    finally:
        with profile.span("close"):
            run.close()


def _afterwards(run: Run, components: list[Component]) -> None:
    hosts = run.alive()
    for component in components:
        with profile.span(f"afterwards {component.name}"):
            component.afterwards(run, [h for h in hosts if component.applies(run.inv, h)])


class Background:
    """Work beside the run's main thread: a component's finalize beside the next components
    (`Component.finalize_before`: `db migrate` while the DAGs are unpacked and import-checked, the one host
    migrating leaves the other core idle; issue 18), the components' `afterwards` beside the health gate.
    Joined before the component named `before`, or at the end; its error is raised there, as if it had run
    in place."""

    def __init__(self, label: str, before: str, fn):
        self.label, self.before, self.error, self.joined = label, before, None, False
        self.thread = threading.Thread(target=self._run, args=(fn,), name=label, daemon=True)
        self.thread.start()

    def _run(self, fn) -> None:
        try:
            fn()
        except BaseException as exc:  # raised again by join, in the main thread
            self.error = exc

    @staticmethod
    def join(items) -> None:
        for item in [i for i in items if not i.joined]:
            with profile.span(f"wait for {item.label}"):
                item.thread.join()
            item.joined = True
            if item.error is not None:
                raise item.error


def _warm_templates() -> None:
    try:
        with profile.span("warm templates (background)"):
            templates.warm()
    except Exception:  # only a head start: a broken template fails where it is rendered
        pass


def fail(exc: UserError) -> None:
    print(f"error: {exc.message}", file=sys.stderr)
    raise SystemExit(exc.exit_code)


__all__ = ["Change", "HostContext", "Options", "Run", "execute", "fail", "run_components"]
