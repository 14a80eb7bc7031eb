"""Root filesystems: one cached pristine Debian 12 base, and per node an overlayfs on top of it.

The base is bare Debian (no product packages: the deploy must prove it works from bare hosts) and holds
nothing per checkout or per node; keys, names and addresses go into each node's upper layer.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from lab.config import ACNG_PORT, BASE, BASE_PACKAGES, CONTROL_ADDR, NETWORK, NODES_DIR, SUITE
from lab.errors import LabError
from lab.prereq import check_disk
from lab.proc import run

HOSTS_BEGIN, HOSTS_END = "# BEGIN airflow-ha lab", "# END airflow-ha lab"


def mirrors() -> tuple[str, str]:
    """(debian, debian-security) mirror URLs from this machine's apt sources."""
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    found = [uri for f in files for uri in re.findall(r"^URIs:\s*(\S+)", f.read_text(), re.M)]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        found += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", legacy.read_text(), re.M)
    debian = security = None
    for uri in (u.rstrip("/") for u in found):
        if uri.endswith("/debian-security"):
            security = security or uri
        elif uri.endswith("/debian"):
            debian = debian or uri
    if not debian:
        raise LabError("no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list")
    return debian, security or debian.rsplit("/", 1)[0] + "/debian-security"


def ensure_base(mirror: str, security: str) -> float | None:
    """Build the base once (mmdebstrap into a temp dir, then rename); seconds spent, None if cached.

    From bookworm, bookworm-updates and bookworm-security, as a server installed today is: a base from
    bookworm alone made every fresh deploy upgrade python3.11 and libssl3 first (issue 18). A base built
    before this stays as it is (its nodes' overlays sit on it); `inv lab.down` and deleting it rebuilds it."""
    if BASE.is_dir():
        return None
    check_disk(BASE, 2.0)
    t0 = time.monotonic()
    tmp = BASE.with_name(BASE.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a half-finished earlier build
    tmp.parent.mkdir(parents=True, exist_ok=True)
    print(f"lab: building the Debian {SUITE} base image (once, ~40 s) from {mirror} ...", flush=True)
    run(["mmdebstrap", "--quiet", "--variant=important", f"--include={BASE_PACKAGES}",
         SUITE, str(tmp), f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main",
         f"deb {security} {SUITE}-security main"], timeout=1800)
    _generalize(tmp)
    tmp.rename(BASE)
    return time.monotonic() - t0


def _generalize(root: Path) -> None:
    """Make the image a template: no host keys, no machine-id, networkd on, apt timers off."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    run(["systemctl", f"--root={root}", "enable", "systemd-networkd.service"])
    run(["systemctl", f"--root={root}", "mask", "apt-daily.timer", "apt-daily-upgrade.timer"])


class Overlay:
    """A node's root: overlayfs with the base as lower layer and .lab/nodes/<name>/upper on top."""

    def __init__(self, name: str):
        self.name = name
        self.dir = NODES_DIR / name
        self.upper, self.work, self.root = self.dir / "upper", self.dir / "work", self.dir / "root"

    def exists(self) -> bool:
        return (self.dir / "personalized").exists()

    def mounted(self) -> bool:
        return run(["mountpoint", "-q", str(self.root)], check=False).returncode == 0

    def mount(self) -> None:
        if self.mounted():
            return
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", f"lab-{self.name}", "-o",
             f"lowerdir={BASE},upperdir={self.upper},workdir={self.work}", str(self.root)])

    def umount(self) -> None:
        if self.mounted():
            run(["umount", str(self.root)])

    def discard(self) -> None:
        """Forget everything the node changed (back to the pristine base)."""
        self.umount()
        shutil.rmtree(self.dir, ignore_errors=True)

    def host_keys(self) -> list[str]:
        """The node's SSH host public keys ('type base64'), read from its upper layer."""
        keys = []
        for pub in sorted((self.upper / "etc/ssh").glob("ssh_host_*_key.pub")):
            keys.append(" ".join(pub.read_text().split()[:2]))
        return keys

    def personalize(self, address: str, mirror: str, security: str) -> None:
        """First boot only: identity (hostname, machine-id, host keys), network, apt via the cache."""
        r = self.root
        (r / "etc/hostname").write_text(self.name + "\n")
        (r / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                                     "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
        (r / "etc/machine-id").write_text("")
        run(["systemd-machine-id-setup", f"--root={r}"])
        for key in (r / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        run(["ssh-keygen", "-A", "-f", str(r)])
        net = r / "etc/systemd/network"
        net.mkdir(parents=True, exist_ok=True)
        (net / "10-lab-host0.network").write_text(
            f"# airflow-ha lab: static address, no gateway (lab hosts have no route out)\n"
            f"[Match]\nName=host0\n\n[Network]\nAddress={address}/{NETWORK.prefixlen}\n"
            f"LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        resolv = r / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text("# airflow-ha lab: no DNS on purpose (no route out)\n"
                          "options timeout:1 attempts:1\n")
        apt = r / "etc/apt"
        (apt / "apt.conf.d/01airflow-ha-lab").write_text(
            f'Acquire::http::Proxy "http://{CONTROL_ADDR}:{ACNG_PORT}";\n'
            'Acquire::http::Timeout "20";\nAcquire::Retries "3";\n')
        (apt / "sources.list").write_text(
            f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
            f"deb {security} {SUITE}-security main\n")
        (self.dir / "personalized").write_text(address + "\n")

    def refresh(self, pubkey: str, peers: dict[str, str]) -> None:
        """Every up (node stopped): the checkout's SSH key and the lab names block in /etc/hosts."""
        ssh = self.root / "root/.ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = ssh / "authorized_keys"
        auth.write_text(pubkey.strip() + "\n")
        auth.chmod(0o600)
        hosts = self.root / "etc/hosts"
        lines = [f"{addr}\t{name}" for name, addr in peers.items()]
        block = "\n".join([HOSTS_BEGIN, *lines, HOSTS_END]) + "\n"
        hosts.write_text(replace_block(hosts.read_text(), HOSTS_BEGIN, HOSTS_END, block))


def replace_block(text: str, begin: str, end: str, block: str, top: bool = False) -> str:
    """`text` with every begin..end block removed and `block` added (at the end, or the top)."""
    pattern = re.compile(rf"^{re.escape(begin)}[^\n]*\n.*?^{re.escape(end)}[^\n]*(\n|\Z)", re.M | re.S)
    rest = pattern.sub("", text)
    if not block:
        return rest
    if top:
        return block + ("\n" + rest if rest.strip() else "")
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + block
