"""Booting and powering off one lab host: systemd-nspawn in a relaunch loop, in its own cgroup.

Without a host systemd, `--keep-unit` puts every container in the caller's cgroup and systemd inside
then fails to kill its units (`Input/output error`): each launcher moves itself into its own group first.
`--network-bridge` gives the host its veth on the bridge, CAP_NET_ADMIN and a writable /proc/sys/net.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.config import BRIDGE, STATE
from lab.errors import LabError
from lab.image import Overlay
from lab.prereq import which
from lab.proc import (
    children,
    forget,
    is_ours,
    record,
    recorded,
    run,
    signal_pid,
    starttime,
    uptime_of,
    wait_gone,
)
from lab.sshcfg import CONFIG

SSH_FAILED = 255   # ssh's own exit status: no connection (sshd still starting, host down)
CGROUP_ROOTS = [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]
LAUNCHER = r"""
name=$1; root=$2; bridge=$3; shift 3
for g in "$@"; do echo $$ > "$g/cgroup.procs"; done
while :; do
  echo "== airflow-ha lab: booting $name $(date -Is)"
  "$NSPAWN" -b -D "$root" --machine="$name" --register=no --keep-unit --resolv-conf=off \
      --link-journal=no --network-bridge="$bridge" --console=read-only
  rc=$?; echo "== airflow-ha lab: $name exited $rc $(date -Is)"
  [ $rc = 133 ] || exit $rc   # 133 = 'systemctl reboot' inside: boot again
done
"""


@dataclass
class Node:
    """A lab host as `status` sees it."""

    name: str
    address: str
    state: str = "stopped"      # stopped | booting | running | degraded | unreachable | <systemd state>
    uptime: float | None = None  # seconds since the host's systemd started
    pid: int | None = None       # the launcher loop (recorded)

    @property
    def running(self) -> bool:
        return self.pid is not None


def cgroups(name: str) -> list[Path]:
    """This node's cgroup dirs: name=systemd and cgroup2 on a hybrid host, the v2 root on a pure one."""
    if Path("/sys/fs/cgroup/cgroup.procs").exists():
        return [Path("/sys/fs/cgroup/airflow-ha-lab") / name]
    return [r / "airflow-ha-lab" / name for r in CGROUP_ROOTS if (r / "cgroup.procs").exists()]


def launcher(name: str) -> dict | None:
    """The recorded launcher of `name` if it still runs."""
    rec = recorded(name)
    return rec if is_ours(rec) else None


def container_init(rec: dict) -> int | None:
    """The host PID of the node's systemd (launcher -> nspawn -> init)."""
    for nspawn in children(rec["pid"]):
        for init in children(nspawn):
            return init
    return None


def boot(name: str, overlay: Overlay) -> dict:
    """Start the launcher loop for `name` in the background and record it."""
    groups = cgroups(name)
    for g in groups:
        g.mkdir(parents=True, exist_ok=True)
    _drop_stale_veth(name)
    with open(STATE / f"{name}.console", "ab") as console:   # the launcher keeps its own copy of the descriptor
        nspawn = which("systemd-nspawn")
        if not nspawn:
            raise LabError("systemd-nspawn is missing (package systemd-container)")
        proc = subprocess.Popen(
            ["bash", "-c", LAUNCHER, f"airflow-ha-lab-{name}", name, str(overlay.root), BRIDGE,
             *map(str, groups)],
            env={"NSPAWN": nspawn, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
    return record(name, proc.pid, root=str(overlay.root), repo=str(STATE.parent))


def _drop_stale_veth(name: str) -> None:
    """A node killed a moment ago may leave its veth (vb-<name>) behind; nspawn then fails with
    'File exists'. Remove it only if it is enslaved to the lab bridge or to nothing (bridge already gone)."""
    veth = Path(f"/sys/class/net/vb-{name}")
    deadline = time.monotonic() + 10
    while veth.exists() and time.monotonic() < deadline:
        master = veth / "master"
        if not master.exists() or master.resolve().name == BRIDGE:
            subprocess.run(["ip", "link", "del", f"vb-{name}"], capture_output=True, check=False)
        time.sleep(0.2)


def wait_port(address: str, rec: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_ours(rec):
            raise LabError(f"{rec.get('name', address)}: the container exited during boot "
                           f"(see {STATE}/<name>.console)")
        try:
            with socket.create_connection((address, 22), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise LabError(f"{address}: sshd did not answer within {timeout:.0f} s")


def ssh(name: str, command: str, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    """Run `command` on a node through the lab's ssh_config (host key checked)."""
    return run(["ssh", "-F", str(CONFIG), "-o", "ConnectTimeout=3", name, command], check=check,
               timeout=timeout)


def wait_ready(name: str, address: str, rec: dict, timeout: float = 120) -> str:
    """Wait for sshd, then `systemctl is-system-running --wait`; return the system state."""
    wait_port(address, {**rec, "name": name}, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = ssh(name, f"timeout {int(timeout)} systemctl is-system-running --wait", timeout=timeout + 10)
        if r.returncode != SSH_FAILED:
            return r.stdout.strip() or "unknown"
        time.sleep(0.3)
    raise LabError(f"{name}: no SSH login within {timeout:.0f} s: {r.stderr.strip()}")


def stop(name: str, timeout: float = 20, hard: bool = False) -> bool:
    """Clean poweroff (SIGTERM to nspawn), hard stop after `timeout`; True if it was running.

    `hard=True` pulls the plug: SIGKILL to the container's PID 1 at once (no service gets to stop).
    """
    rec = recorded(name)
    ran = False
    if is_ours(rec):
        ran = True
        nspawns = children(rec["pid"])
        inits = [c for n in nspawns for c in children(n)]
        if hard:
            for pid in inits:
                signal_pid(pid, signal.SIGKILL)
        for n in nspawns:
            signal_pid(n, signal.SIGTERM)
        if not nspawns:
            signal_pid(rec["pid"], signal.SIGTERM)
        if not wait_gone(rec["pid"], rec["start"], timeout):
            # SIGKILL to nspawn alone would leave the container's PID 1 running: kill that first
            for pid in inits + nspawns + [rec["pid"]]:
                signal_pid(pid, signal.SIGKILL)
            wait_gone(rec["pid"], rec["start"], 5)
    ran = _end_orphans(name) or ran
    forget(name)
    for g in cgroups(name):
        _rmdir_tree(g)
    return ran


def _end_orphans(name: str) -> bool:
    """End a container init a killed launcher left behind (found in the node's own lab cgroup)."""
    found = False
    for pid in [p for g in cgroups(name) for p in _cgroup_pids(g)]:
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        nspid = next((ln.split()[1:] for ln in status if ln.startswith("NSpid:")), [])
        if len(nspid) > 1 and nspid[-1] == "1":  # PID 1 of a container: the node's systemd
            found = True
            start = starttime(pid)
            signal_pid(pid, signal.SIGRTMIN + 4)  # systemd's request for a clean poweroff
            if not wait_gone(pid, start, 15):
                signal_pid(pid, signal.SIGKILL)
                wait_gone(pid, start, 5)
    return found


def _cgroup_pids(group: Path) -> list[int]:
    """PIDs in a cgroup tree (dirs may vanish while walking: a container shutting down)."""
    pids = []
    for d, _, _ in os.walk(group):
        with contextlib.suppress(OSError):
            pids += map(int, (Path(d) / "cgroup.procs").read_text().split())
    return pids


def _rmdir_tree(path: Path) -> None:
    if not path.exists():
        return
    for d in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def probe(name: str, address: str) -> Node:
    """The node's state: launcher alive? systemd state over SSH; uptime of its systemd."""
    rec = launcher(name)
    if not rec:
        return Node(name, address)
    init = container_init(rec)
    node = Node(name, address, state="booting", pid=rec["pid"],
                uptime=uptime_of(init) if init else None)
    try:
        r = ssh(name, "systemctl is-system-running", timeout=8)
    except LabError:
        node.state = "unreachable"
        return node
    node.state = r.stdout.strip() if r.returncode != SSH_FAILED else "unreachable"
    return node
