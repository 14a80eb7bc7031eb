"""One SSH connection per host, reused for every round trip; scripts go over stdin, never argv.

`Remote.sh(script)` is one round trip: the script is sent to `sh -s` (via `sudo -n` when the SSH user is
not root), so secrets inside it never appear in a command line visible in `ps`. Host keys are checked
against known_hosts (Fabric's default would auto-accept them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection

from . import profile
from .errors import UserError

# paramiko's transport thread logs a dead peer as an ERROR with a traceback; without a handler Python would
# print it to stderr. We report such a host as Unreachable instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass
class Result:
    """Exit status and output of one remote script."""

    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Unreachable(Exception):
    """The host could not be reached or authenticated."""


def lab_ssh_config(base_dir: Path) -> Path | None:
    path = Path(base_dir) / ".lab" / "ssh_config"
    return path if path.is_file() and path.stat().st_size else None


def load_ssh_config(path: str | Path | None) -> paramiko.SSHConfig:
    """The given ssh_config, else the user's and system's (like ssh and Fabric)."""
    cfg = paramiko.SSHConfig()
    paths = [path] if path else ["~/.ssh/config", "/etc/ssh/ssh_config"]
    for given in paths:
        p = os.path.expanduser(str(given))
        if os.path.isfile(p):
            with open(p) as fh:
                cfg.parse(fh)
        elif path:
            raise UserError(f"ssh_config {p} not found", "", "fix 'ssh_config' in the inventory")
    return cfg


class Remote:
    """A host's single SSH connection plus a round-trip counter."""

    def __init__(self, name: str, ssh_config: paramiko.SSHConfig, connect_timeout: float = 3):
        self.name = name
        self.round_trips = 0
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        cfg = Config(overrides={"load_ssh_configs": False})
        cfg.base_ssh_config = ssh_config
        # TCP connect, SSH banner and authentication each wait at most connect_timeout (paramiko: 15 s / 30 s)
        self.conn = Connection(name, config=cfg, connect_timeout=connect_timeout,
                               connect_kwargs={"banner_timeout": connect_timeout, "auth_timeout": connect_timeout})
        self.conn.connect_timeout = connect_timeout   # Fabric rounds it down to an int (0.5 would mean none)
        opts = ssh_config.lookup(name)
        client = self.conn.client
        known = opts.get("userknownhostsfile", "~/.ssh/known_hosts").split()[0]
        for f in (os.path.expanduser(known), os.path.expanduser("~/.ssh/known_hosts")):
            if os.path.isfile(f):
                client.load_host_keys(f)
                break
        strict = opts.get("stricthostkeychecking", "yes").lower()
        client.set_missing_host_key_policy(
            paramiko.AutoAddPolicy() if strict in ("no", "off") else paramiko.RejectPolicy())
        self.sudo = None

    def open(self) -> None:
        try:
            self.conn.open()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.conn.client.close()   # also stops a transport thread still waiting for the banner
            raise Unreachable(self._why(exc)) from None
        self.conn.transport.set_keepalive(15)
        self.sudo = self.conn.user != "root"

    def _why(self, exc: BaseException) -> str:
        """Why open() failed, in words."""
        why = str(exc) or type(exc).__name__
        if "not found in known_hosts" in why:
            return f"unknown host key ({why}); add the host to known_hosts (the lab writes .lab/known_hosts)"
        if isinstance(exc, TimeoutError) or any(w in why for w in ("banner", "timed out", "No existing session")):
            why = f"no SSH answer within {self.connect_timeout}s ({why})"
        return why

    def sh(self, script: str, timeout: float | None = None) -> Result:
        """Run a shell script (as root) in one round trip; file contents travel inside it (base64)."""
        self._ensure_open()
        with self._lock:
            self.round_trips += 1
        start = profile.PROFILE.now() if profile.PROFILE else 0.0
        chan = self._session()
        try:
            if timeout:
                chan.settimeout(timeout)
            chan.exec_command("sudo -n sh -s" if self.sudo else "sh -s")
            chan.sendall(script.encode())
            chan.shutdown_write()
            out, err = _drain(chan, timeout)
            rc = chan.recv_exit_status()
        except TimeoutError:
            chan.close()
            return Result(124, "", f"timed out after {timeout}s")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(f"connection lost ({exc or type(exc).__name__})") from None
        finally:
            chan.close()
            profile.round_trip(self.name, start, len(script))
        if rc == -1 and not self.conn.transport.is_active():
            raise Unreachable("connection lost (no exit status)")
        if rc == 1 and self.sudo and "a password is required" in err:
            raise Unreachable(f"sudo refused for user {self.conn.user}: allow passwordless sudo")
        return Result(rc, out, err)

    def stream_to(self, command: str, chunks, timeout: float | None = None) -> Result:
        """Run `command` (as root) with a stream of bytes on stdin (large uploads: one round trip)."""
        self._ensure_open()
        with self._lock:
            self.round_trips += 1
        chan = self._session()
        try:
            chan.exec_command(f"sudo -n sh -c '{command}'" if self.sudo else command)
            for chunk in chunks:
                chan.sendall(chunk)
            chan.shutdown_write()
            out, err = _drain(chan, timeout)
            return Result(chan.recv_exit_status(), out, err)
        finally:
            chan.close()

    def forward(self, remote_host: str, remote_port: int):
        """Context manager: a loopback port on the control machine tunnelled to remote_host:remote_port."""
        self._ensure_open()
        return _Forward(self.conn.transport, remote_host, remote_port)

    def _ensure_open(self) -> None:
        """(Re)connect when there is no live transport: a dead host raises Unreachable."""
        if self.conn.transport is None or not self.conn.transport.is_active():
            self.open()

    def _session(self):
        """A new channel; a transport that died under us is Unreachable."""
        try:
            return self.conn.transport.open_session()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(f"connection lost ({exc or type(exc).__name__})") from None

    def close(self) -> None:
        self.conn.close()


#: seconds to wait for the channel's EOF once the exit status is in (a child left in the background may hold
#: the output open: its EOF never comes)
EOF_GRACE = 2.0


def _drain(chan, timeout):
    """stdout and stderr of a channel, read until its EOF. The exit status alone does not end the read: sshd
    may send it before the last output (a probe cut short this way read as "would change" once in CI)."""
    out, err = [], []
    deadline = time.monotonic() + timeout if timeout else None
    exited_at = None
    while True:
        if chan.recv_ready():
            out.append(chan.recv(65536))
            continue
        if chan.recv_stderr_ready():
            err.append(chan.recv_stderr(65536))
            continue
        if chan.eof_received or chan.closed:
            break
        if chan.exit_status_ready():
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > EOF_GRACE:
                break
        if deadline and time.monotonic() > deadline:
            raise TimeoutError()
        time.sleep(0.002)
    while chan.recv_ready():
        out.append(chan.recv(65536))
    while chan.recv_stderr_ready():
        err.append(chan.recv_stderr(65536))
    return b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")


class _Forward:
    """A tiny local port forward over an existing transport (no extra SSH connection)."""

    def __init__(self, transport, host, port):
        self.transport, self.host, self.port = transport, host, port

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()
        return self.sock.getsockname()[1]

    def _accept(self):
        while not self.stop:
            try:
                client, addr = self.sock.accept()
            except OSError:
                return
            try:
                chan = self.transport.open_channel("direct-tcpip", (self.host, self.port), addr)
            except Exception:
                client.close()
                continue
            for a, b in ((client, chan), (chan, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def __exit__(self, *exc):
        self.stop = True
        self.sock.close()


def _pipe(src, dst) -> None:
    """Copy src to dst until either end closes. A dead peer ends it quietly (paramiko raises EOFError or
    SSHException, not only OSError): the caller then sees a closed connection, never a thread traceback."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except Exception:  # any failure means the connection is gone
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()
