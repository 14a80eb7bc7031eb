"""What the runner asks of the world, and the shell scripts it sends a host to ask it.

A run reads its state from a `StateSource`: the control machine's secrets and files, each host's address,
and a connection per host that gathers facts and probes steps. Real runs use `remote.SSHHosts`; the spec
tests feed the same runner with fresh hosts (`offline.FreshHosts`) that answer from a given state, so
every plan (deploy, --check, the fast path, the spec tests) is made by one planner.

`ShellHost` is what a connection does over its `sh`: one facts round trip (plus the components' connect
questions), one probe round trip per plan (batched where one command answers many steps), and the apply
script, whose markers tell each change's exit status and time, stopping at the first failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import profile
from .facts import FACTS_SCRIPT
from .steps import BATCHES, Change, Service, Step


class StateSource(Protocol):
    """Where a run's state comes from (see the module docstring)."""

    def secrets(self, inv, check: bool) -> dict: ...

    def addresses(self, inv) -> dict[str, str]: ...

    def connect(self, name: str, timeout: float): ...

    def read_local(self, path: Path, name: str) -> bytes: ...


class ShellHost:
    """A host the runner reaches with shell scripts; a subclass gives `name` and `sh(script, timeout)`."""

    name = ""

    def sh(self, script: str, timeout: float | None = None):
        raise NotImplementedError

    def gather(self, questions: dict[str, str]) -> tuple[str, dict[str, str]]:
        """(facts output, answer per question) in one round trip: the questions are shell, asked with the facts."""
        return read_facts(self.sh(facts_script(questions), timeout=30).out)

    def probe(self, steps: list) -> list[str]:
        """Each step's state, in order, from one round trip (batched where a batch can).

        A batch whose output cannot be read (e.g. not one `systemctl show` block per unit) costs one more
        round trip: its steps' own probes, one by one.
        """
        sections, groups = probe_sections(steps)
        if profile.PROFILE:
            labels = [section_kind(m, steps) for m, _ in sections]
            out = self.sh(profile.timed_probe_script(sections), timeout=300).out
            out = profile.take_probe_times(out, labels, self.name)
        else:
            out = self.sh(join_sections(sections), timeout=300).out
        states, retry = read_states(out, steps, groups)
        if retry and out.strip():      # no answer at all (timeout): the states stay empty, as they always did
            own = join_sections([(f"@@probe {j}", steps[i].probe()) for j, i in enumerate(retry)])
            again = split(self.sh(own, timeout=300).out, len(retry))
            for j, i in enumerate(retry):
                states[i] = again[j]
        return states


# -- facts ---------------------------------------------------------------------------------------------------
def facts_script(questions: dict[str, str]) -> str:
    """The facts script, then each question's shell after an `@@connect <name>` marker (errors silenced)."""
    asked = "".join(f"\necho '@@connect {n}'\n{{ {sh}\n}} 2>/dev/null" for n, sh in questions.items() if sh)
    return FACTS_SCRIPT + asked + "\n"


def read_facts(out: str) -> tuple[str, dict[str, str]]:
    """(the facts part, {question name: its answer}) of the facts script's output."""
    facts, *parts = re.split(r"^@@connect (\S+)\n", out, flags=re.M)
    return facts, dict(zip(parts[::2], parts[1::2], strict=True))


# -- probes --------------------------------------------------------------------------------------------------
def probe_sections(steps) -> tuple[list[tuple[str, str]], dict[str, list[int]]]:
    """The probe script's sections (marker, shell): one per batch kind, then each step's own (rest of
    its) probe; and the step indexes of each batch."""
    groups: dict[str, list[int]] = {}
    for i, step in enumerate(steps):
        if step.batch() in BATCHES:
            groups.setdefault(step.batch(), []).append(i)
    batched = {i for idx in groups.values() for i in idx}
    sections = [(f"@@batch {kind}", BATCHES[kind].script([steps[i] for i in idx])) for kind, idx in groups.items()]
    for i, step in enumerate(steps):
        body = step.own_probe() if i in batched else step.probe()
        if body:
            sections.append((f"@@probe {i}", body))
    return sections, groups


def section_kind(marker: str, steps) -> tuple[str, str]:
    """(kind, label) of a probe section, for the profile."""
    what, key = marker[2:].split(" ", 1)
    if what == "batch":
        return f"batch: {key}", key
    step = steps[int(key)]
    return profile.probe_kind(step) + (" (rest)" if step.batch() in BATCHES else ""), step.label


def join_sections(sections) -> str:
    """One script: each section's marker echoed, then its shell with errors silenced."""
    return "".join(f"echo '{marker}'\n{{ {body}\n}} 2>/dev/null\n" for marker, body in sections)


def early_probe_script(steps) -> str:
    """The steps' own probes, one `@@early <i>` section each: a component asks them with the facts
    (its `connect_probe`) and hands the answer to `Run.converged_early`."""
    return join_sections([(f"@@early {i}", step.probe()) for i, step in enumerate(steps)])


def probe_script(steps) -> str:
    return join_sections(probe_sections(steps)[0])


def read_states(out: str, steps, groups: dict[str, list[int]]) -> tuple[list[str], list[int]]:
    """Each step's state from a probe script's output, and the steps whose batch could not be read."""
    own = split(out, len(steps))
    batches: dict[str, str] = {}
    current = None
    for line in out.splitlines(True):
        if line.startswith(("@@batch ", "@@probe ")):
            current = line.split()[1] if line.startswith("@@batch ") else None
        elif current is not None:
            batches[current] = batches.get(current, "") + line
    states, retry = list(own), []
    for kind, idx in groups.items():
        got = BATCHES[kind].states(batches.get(kind, ""), [steps[i] for i in idx])
        if got is None or len(got) != len(idx):
            retry += idx
            continue
        for i, state in zip(idx, got, strict=True):
            states[i] = state + own[i]
    return states, sorted(retry)


def split(out: str, n: int, marker: str = "@@probe") -> list[str]:
    """The text after each `<marker> <i>` line, for i < n ("" where none); batch sections are skipped."""
    chunks = [""] * n
    current = None
    for line in out.splitlines(True):
        if line.startswith("@@batch "):
            current = None
            continue
        m = re.match(rf"^{marker} (\d+)$", line.strip()) if line.startswith(marker) else None
        if m:
            current = int(m.group(1))
            continue
        if current is not None and current < n:
            chunks[current] += line
    return chunks


# -- apply ---------------------------------------------------------------------------------------------------
@dataclass
class DaemonReload(Step):
    """Not a component's step: the runner's `systemctl daemon-reload` before the first service action of an
    apply, once a unit file changed (a step notified "daemon-reload")."""

    kind = "systemd"

    @property
    def label(self) -> str:
        return self.kind


RELOAD = (DaemonReload(), Change("daemon-reload (a unit file changed)", "systemctl daemon-reload"))


def reload_position(changes, reload: bool) -> int | None:
    """Where daemon-reload goes among (step, change) pairs: before the first service action (None: nowhere)."""
    if not reload:
        return None
    return next((i for i, (step, change) in enumerate(changes)
                 if isinstance(step, Service) and not change.warning), None)


def in_apply_order(changes, reload: bool) -> list:
    """The (step, change) pairs as the apply runs them: RELOAD inserted where `reload_position` puts it."""
    at = reload_position(changes, reload)
    return list(changes) if at is None else [*changes[:at], RELOAD, *changes[at:]]


def apply_script(todo, reload: bool) -> str:
    """The apply script: each change in its own `set -e` subshell between `@@begin i` and `@@end i rc ms`;
    the first change that fails ends the script (exit 0: the markers carry the status)."""
    at = reload_position(todo, reload)
    parts = ["exec 2>&1"]
    for i, (_step, change) in enumerate(todo):
        if i == at:
            parts.append(RELOAD[1].script)
        parts.append(f"echo '@@begin {i}'; s=$(date +%s%N)\n( set -e\n{change.script}\n)\n"
                     f"rc=$?; echo \"@@end {i} $rc $(( ($(date +%s%N) - s) / 1000000 ))\"; "
                     "[ $rc -eq 0 ] || exit 0")
    return "\n".join(parts) + "\n"


def parse_apply(out: str) -> dict[int, tuple[int, int, str]]:
    """{change index: (exit status, milliseconds, its output)} for each change the apply script ran."""
    done, buf, current = {}, [], None
    for line in out.splitlines():
        if line.startswith("@@begin "):
            current, buf = int(line.split()[1]), []
        elif line.startswith("@@end ") and current is not None:
            _, i, rc, ms = line.split()
            done[int(i)] = (int(rc), int(ms), "\n".join(buf))
            current = None
        else:
            buf.append(line)
    return done
