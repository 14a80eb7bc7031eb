"""apt-cacher-ng on the bridge: the lab hosts' only way to Debian packages (they have no route out).

Bound to the bridge address and loopback only, cache under /var/cache/airflow-ha/acng (machine-wide, so
a fresh clone starts warm), `backends_debian` pointed at this machine's mirror: Debian's default
remap is unreachable here and apt then hangs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from lab.config import ACNG_DIR, ACNG_PORT, CONTROL_ADDR
from lab.errors import LabError
from lab.prereq import which
from lab.proc import end_recorded, is_ours, record, recorded

KEY = "apt-cacher-ng"


def listening(addr: str = CONTROL_ADDR, port: int = ACNG_PORT) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=0.5):
            return True
    except OSError:
        return False


def running() -> bool:
    return is_ours(recorded(KEY))


def ensure_running(mirror: str) -> str:
    """Start the cache unless our recorded one still runs; return 'running' or 'started'."""
    if running() and listening():
        return "running"
    end_recorded(KEY, timeout=5)  # recorded but not answering: restart it
    for addr in (CONTROL_ADDR, "127.0.0.1"):
        if listening(addr):
            raise LabError(f"port {ACNG_PORT} on {addr} is taken by a process the lab did not start "
                           f"(a system apt-cacher-ng?); stop it so the lab can run its own")
    conf = ACNG_DIR / "conf"
    for d in ("cache", "log"):
        (ACNG_DIR / d).mkdir(parents=True, exist_ok=True)
    if not conf.is_dir():
        shutil.copytree("/etc/apt-cacher-ng", conf)
    (conf / "backends_debian").write_text(mirror.rstrip("/") + "/\n")
    with open(ACNG_DIR / "stdout.log", "ab") as out:   # the daemon keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [which("apt-cacher-ng") or "/usr/sbin/apt-cacher-ng", "-c", str(conf), "ForeGround=1",
             f"BindAddress={CONTROL_ADDR} 127.0.0.1", f"Port={ACNG_PORT}", f"CacheDir={ACNG_DIR / 'cache'}",
             f"LogDir={ACNG_DIR / 'log'}", f"SocketPath={ACNG_DIR / 'socket'}", f"PidFile={ACNG_DIR / 'pid'}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    record(KEY, proc.pid)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if listening():
            return "started"
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = Path(ACNG_DIR / "stdout.log").read_text(errors="replace").strip().splitlines()[-3:]
    raise LabError(f"apt-cacher-ng did not start on {CONTROL_ADDR}:{ACNG_PORT}: {' / '.join(tail)}")


def stop() -> bool:
    return end_recorded(KEY, timeout=5)
