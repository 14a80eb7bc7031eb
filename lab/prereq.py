"""Checks and installs what the lab needs on the control machine (a fresh Debian 12 included)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lab.errors import LabError
from lab.proc import run

# binary -> Debian package providing it
TOOLS = {
    "systemd-nspawn": "systemd-container",
    "mmdebstrap": "mmdebstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mount": "mount",
}
SBIN = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates a bridge, mounts overlays, boots containers): "
                       "run it as root, e.g. `sudo inv lab.up`")


def which(binary: str) -> str | None:
    return shutil.which(binary, path=SBIN)


def ensure_tools() -> list[str]:
    """Install the packages of missing tools (apt-get update + install); return what was installed."""
    missing = sorted({pkg for binary, pkg in TOOLS.items() if not which(binary)})
    if not missing:
        return []
    if not which("apt-get"):
        raise LabError(f"missing {', '.join(missing)} and no apt-get to install them "
                       "(the lab needs Debian or Ubuntu)")
    print(f"lab: installing {' '.join(missing)} ...", flush=True)
    # Package scripts must not start daemons (apt-cacher-ng would listen on every interface):
    # a temporary policy-rc.d denies service starts, only if none is installed already.
    own_policy = not POLICY_RC.exists()
    if own_policy:
        POLICY_RC.write_text("#!/bin/sh\n# airflow-ha lab: no service starts during install\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env, timeout=600)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=1200)
    except LabError as e:
        still = [b for b in TOOLS if not which(b)]
        raise LabError(f"could not install {', '.join(missing)} (needed: {', '.join(still)}): {e}") from None
    finally:
        if own_policy:
            POLICY_RC.unlink(missing_ok=True)
    still = [b for b in TOOLS if not which(b)]
    if still:
        raise LabError(f"{', '.join(still)} still missing after installing {', '.join(missing)}")
    return missing


def check_forwarding() -> None:
    """Refuse to run when this machine routes packets: lab hosts must have no way out."""
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "0":
        raise LabError("net.ipv4.ip_forward is 1 on this machine: the lab refuses to run on a router "
                       "(its hosts must have no route out); set it to 0 (sysctl -w net.ipv4.ip_forward=0)")


def check_disk(path: Path, need_gb: float) -> None:
    """Fail clearly when the filesystem holding `path` has less than `need_gb` free."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    if free < need_gb:
        raise LabError(f"not enough disk space: {free:.1f} GiB free on the filesystem of {path}, "
                       f"the lab needs {need_gb:.1f} GiB; free some space and re-run")
