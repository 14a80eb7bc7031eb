"""The lab's SSH identity, known_hosts and ssh_config, plus a managed block in ~/.ssh/config.

Host keys are checked, never auto-accepted: known_hosts is written from each node's generated keys.
The ~/.ssh/config block makes `fab -H node1` and plain `ssh node1` work with no flags while the lab is
up; `down` removes it, so lab names stop resolving and nothing can be sent to lab addresses by name.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab.config import REPO, STATE
from lab.image import replace_block
from lab.proc import run

KEY = STATE / "id_ed25519"
KNOWN_HOSTS = STATE / "known_hosts"
CONFIG = STATE / "ssh_config"
BEGIN, END = "# BEGIN airflow-ha lab", "# END airflow-ha lab"


def user_config() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def ensure_key() -> str:
    """The checkout's lab key pair; returns the public key."""
    STATE.mkdir(parents=True, exist_ok=True)
    if not KEY.exists() or not KEY.with_suffix(".pub").exists():
        KEY.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"airflow-ha-lab@{REPO}", "-f", str(KEY)])
    return KEY.with_suffix(".pub").read_text()


def write_known_hosts(keys: dict[str, tuple[str, list[str]]]) -> None:
    """keys: name -> (address, ['ssh-ed25519 AAAA...', ...])."""
    lines = [f"{name},{addr} {k}" for name, (addr, ks) in sorted(keys.items()) for k in ks]
    KNOWN_HOSTS.write_text("\n".join(lines) + "\n")


def host_blocks(nodes: dict[str, str]) -> str:
    """ssh_config Host blocks for nodes (name -> address)."""
    out = []
    for name, addr in sorted(nodes.items()):
        out.append(f"Host {name}\n    HostName {addr}\n    User root\n    IdentityFile {KEY}\n"
                   f"    IdentitiesOnly yes\n    UserKnownHostsFile {KNOWN_HOSTS}\n"
                   f"    StrictHostKeyChecking yes\n    ConnectTimeout 5\n    BatchMode yes\n"
                   f"    LogLevel ERROR\n")
    return "\n".join(out)


def write_config(nodes: dict[str, str]) -> None:
    CONFIG.write_text(f"# airflow-ha lab hosts (written by `inv lab.up`)\n\n{host_blocks(nodes)}")


def install_user_block(nodes: dict[str, str]) -> None:
    """Put the Host blocks at the top of ~/.ssh/config (first match wins), replacing any older block."""
    cfg = user_config()
    cfg.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = cfg.read_text() if cfg.exists() else ""
    block = f"{BEGIN} ({REPO})\n{host_blocks(nodes)}{END} ({REPO})\n"
    new = replace_block(old, BEGIN, END, block, top=True)
    if new != old:
        _write_private(cfg, new)


def remove_user_block() -> None:
    cfg = user_config()
    if cfg.exists():
        old = cfg.read_text()
        new = replace_block(old, BEGIN, END, "").lstrip("\n")
        if new != old:
            _write_private(cfg, new)


def _write_private(path: Path, text: str) -> None:
    path = path.resolve()  # keep a symlinked ~/.ssh/config a symlink
    tmp = path.with_name(path.name + ".airflow-ha-tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
