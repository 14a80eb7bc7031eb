"""The state source of real runs: the secrets file beside the inventory, the control machine's files, and
one SSH connection per host (remote.py) that speaks the runner's script protocol (protocol.py)."""

from __future__ import annotations

from pathlib import Path

from . import secrets as secrets_mod
from .errors import UserError
from .inventory import resolve_address
from .protocol import ShellHost
from .remote import Remote, lab_ssh_config, load_ssh_config


class SSHHost(Remote, ShellHost):
    """A host's SSH connection, gathering facts and probing steps over it."""


class SSHHosts:
    """protocol.StateSource over SSH (ssh_config: the inventory's, else the lab's if it is up, else ~/.ssh)."""

    def __init__(self, inv):
        path = inv.settings.ssh_config or lab_ssh_config(inv.base_dir)
        if path and not str(path).startswith("/"):
            path = inv.base_dir / path
        self.ssh_config = load_ssh_config(path)

    def secrets(self, inv, check: bool) -> dict:
        return secrets_mod.load_or_create(inv.path, check=check, override=inv.settings.secrets)

    def addresses(self, inv) -> dict[str, str]:
        return {h.name: resolve_address(inv, h, self.ssh_config.lookup) for h in inv.hosts.values()}

    def connect(self, name: str, timeout: float) -> SSHHost:
        host = SSHHost(name, self.ssh_config, timeout)
        host.open()
        return host

    def read_local(self, path: Path, name: str) -> bytes:
        return read_control_file(path, name)


def read_control_file(path: Path, name: str) -> bytes:
    """A file the control machine built or ships (`name` says which, for the error)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{name} is missing on the control machine", str(path),
                        "deploy again: it builds the local artifacts before reaching any host") from None
