"""Running commands, and the machine-wide record of the processes the lab started.

Every process the lab may later end is recorded in RUN/<key>.json with its kernel start time and the
boot id, so a recycled PID is never mistaken for ours. Nothing is ever ended by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from lab.config import RUN
from lab.errors import LabError

CLK_TCK = os.sysconf("SC_CLK_TCK")


def run(cmd: list[str], check: bool = True, input: str | None = None, timeout: float | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` capturing text output; on failure raise LabError with its stderr."""
    try:
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})}, check=False)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(cmd)}: no answer after {timeout} s") from None
    if check and r.returncode:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise LabError(f"{' '.join(cmd)} failed ({r.returncode}): " + " / ".join(tail))
    return r


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def starttime(pid: int) -> int | None:
    """Kernel start time of `pid` in clock ticks since boot, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited; reap it if it is our child (a launcher started by this process)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return int(fields[19])


def uptime_of(pid: int) -> float | None:
    """Seconds since `pid` started."""
    st = starttime(pid)
    if st is None:
        return None
    since_boot = float(Path("/proc/uptime").read_text().split()[0])
    return max(0.0, since_boot - st / CLK_TCK)


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def record(key: str, pid: int, **extra) -> dict:
    """Remember that the lab started `pid` (under `key`, e.g. a node name)."""
    RUN.mkdir(parents=True, exist_ok=True)
    rec = {"pid": pid, "start": starttime(pid), "boot": boot_id(), **extra}
    tmp = RUN / f".{key}.tmp"
    tmp.write_text(json.dumps(rec))
    tmp.replace(RUN / f"{key}.json")
    return rec


def recorded(key: str) -> dict | None:
    try:
        return json.loads((RUN / f"{key}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def recorded_keys() -> list[str]:
    return sorted(p.stem for p in RUN.glob("*.json")) if RUN.is_dir() else []


def forget(key: str) -> None:
    (RUN / f"{key}.json").unlink(missing_ok=True)


def is_ours(rec: dict | None, pid_field: str = "pid", start_field: str = "start") -> bool:
    """True when the recorded process is still the very one the lab started."""
    if not rec or rec.get("boot") != boot_id() or not rec.get(pid_field):
        return False
    return starttime(rec[pid_field]) == rec.get(start_field)


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    """Wait until `pid` (started at `start`) has exited; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = starttime(pid)
        if st is None or st != start:
            return True
        time.sleep(0.1)
    return False


def end_recorded(key: str, timeout: float = 10) -> bool:
    """SIGTERM the recorded process `key`, SIGKILL it after `timeout`; forget it. True if it ran."""
    rec = recorded(key)
    ran = is_ours(rec)
    if ran:
        signal_pid(rec["pid"], signal.SIGTERM)
        if not wait_gone(rec["pid"], rec["start"], timeout):
            signal_pid(rec["pid"], signal.SIGKILL)
            wait_gone(rec["pid"], rec["start"], 5)
    forget(key)
    return ran
