"""Opt-in profile of one run: `AIRFLOW_HA_PROFILE=path.json inv deploy -q` writes where the wall time went.

Recorded (seconds since the process started, read from /proc): the start-up (interpreter, imports, CLI
parsing) up to the deploy's first line, each `span(phase, host)` the runner and stack open (inventory,
local artifacts, connect, prepare, speculate, plan, probe, apply, finalize, recap...), every SSH round
trip tagged with the innermost span of its thread, and, per probe, the time it took on the host
(`probe_script` adds `date +%s%N` stamps between the probes; the cost of one `date` is measured and
subtracted). `bench/profile.py` (`python -m bench.bench profile path.json`) turns it into a table.
Without the variable every hook is a no-op.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from contextlib import contextmanager, nullcontext

ENV = "AIRFLOW_HA_PROFILE"

#: tools whose start-up dominates a `Command` probe, in the order they are looked for
_TOOLS = ("ufw", "firewall-cmd", "systemctl", "psql", "redis-cli", "getent", "nginx", "sha256sum", "readlink")


def _process_start() -> float:
    """time.monotonic() at which this process started (from /proc; now when /proc is not there)."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.monotonic() - max(age, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()


class Profile:
    """Events (phase, host, start, end, thread, extra) relative to process start, written as JSON at exit."""

    def __init__(self, path: str | None = None):
        self.path, self.t0 = path, _process_start()
        self.events: list[dict] = []
        self.remote: list[dict] = []          # per probe: host, kind, seconds on the host
        self._lock = threading.Lock()
        self._local = threading.local()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, phase: str, start: float, end: float, host: str = "", **extra) -> None:
        ev = {"phase": phase, "host": host, "start": round(start, 6), "end": round(end, 6),
              "thread": threading.current_thread().name, **extra}
        with self._lock:
            self.events.append(ev)

    def current(self) -> str:
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else "other"

    @contextmanager
    def span(self, phase: str, host: str = "", **extra):
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(phase)
        start = self.now()
        try:
            yield
        finally:
            stack.pop()
            self.add(phase, start, self.now(), host, **extra)

    def data(self) -> dict:
        return {"wall": self.now(), "events": self.events, "remote": self.remote}

    def write(self) -> None:
        if self.path:
            with open(self.path, "w") as fh:
                json.dump(self.data(), fh, indent=1)


PROFILE: Profile | None = None


def enable(path: str | None) -> Profile:
    """Start profiling (the env variable does this at import); the JSON is written at exit when `path`."""
    global PROFILE  # noqa: PLW0603 - the one process-wide profile span() reads
    PROFILE = Profile(path)
    if path:
        atexit.register(PROFILE.write)
    return PROFILE


def disable() -> None:
    global PROFILE  # noqa: PLW0603 - see enable()
    PROFILE = None


def span(phase: str, host: str = "", **extra):
    """A timed phase (no-op unless profiling)."""
    return PROFILE.span(phase, host, **extra) if PROFILE else nullcontext()


def started(label: str = "start-up (interpreter, imports, CLI)") -> None:
    """Record process start -> now once (the first caller wins)."""
    if PROFILE and not any(e["phase"] == label for e in PROFILE.events):
        PROFILE.add(label, 0.0, PROFILE.now())


def round_trip(host: str, start: float, bytes_out: int) -> None:
    """One SSH round trip that began at `start` (profile clock), tagged with the thread's current phase."""
    if PROFILE:
        PROFILE.add("round trip", start, PROFILE.now(), host, kind=PROFILE.current(), bytes=bytes_out)


def probe_kind(step) -> str:
    """What a probe mostly runs: the step kind, or for a command the tool its `unless` starts."""
    if step.kind != "command":
        return step.kind
    unless = getattr(step, "unless", "")
    if not unless:
        return "command (no probe)"
    found = [(m.start(), t) for t in _TOOLS for m in [re.search(rf"\b{re.escape(t)}\b", unless)] if m]
    return f"command: {min(found)[1]}" if found else "command: shell"


def timed_probe_script(sections: list[tuple[str, str]]) -> str:
    """The probe script (sections of marker and shell) with a nanosecond stamp before the first section
    and after each one."""
    head = "echo \"@@t -2 $(date +%s%N)\"\necho \"@@t -1 $(date +%s%N)\"\n"
    return head + "".join(f"echo '{m}'\n{{ {b}\n}} 2>/dev/null\necho \"@@t {i} $(date +%s%N)\"\n"
                          for i, (m, b) in enumerate(sections))


def take_probe_times(out: str, labels: list[tuple[str, str]], host: str) -> str:
    """Record each section's time on the host (labels: its kind and label) from the stamps; return the
    output without them."""
    stamps, kept = {}, []
    for line in out.splitlines(True):
        m = re.match(r"^@@t (-?\d+) (\d+)$", line.strip()) if line.startswith("@@t ") else None
        if m:
            stamps[int(m.group(1))] = int(m.group(2))
        else:
            kept.append(line)
    if PROFILE and -2 in stamps and -1 in stamps:  # noqa: PLR2004 - the head's two stamps
        cost = stamps[-1] - stamps[-2]                      # one `date` fork, paid again after each section
        for i, (kind, label) in enumerate(labels):
            if i in stamps and i - 1 in stamps:
                secs = max(stamps[i] - stamps[i - 1] - cost, 0) / 1e9
                with PROFILE._lock:
                    PROFILE.remote.append({"host": host, "kind": kind, "label": label, "seconds": round(secs, 6)})
    return "".join(kept)

if os.environ.get(ENV):
    enable(os.environ[ENV])
