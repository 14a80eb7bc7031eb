"""The SSH layer: a host that does not answer costs at most `connect_timeout`, quietly, as Unreachable."""

from __future__ import annotations

import re
import socket
import textwrap
import threading
import time

import paramiko
import pytest

from fabfile import health
from fabfile.components import load_inventory
from fabfile.core import remote
from fabfile.core.errors import InventoryError


@pytest.fixture
def silent_port():
    """A TCP server on loopback that accepts connections and never says a word (no SSH banner)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return
    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for s in held:
        s.close()


def _ssh_config(port, names=("dead",)) -> str:
    return (f"Host {' '.join(names)}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            "  UserKnownHostsFile /dev/null\n")


def test_silent_host_is_unreachable_within_default_timeout(silent_port, capfd):
    r = remote.Remote("dead", paramiko.SSHConfig.from_text(_ssh_config(silent_port)))
    t0 = time.monotonic()
    with pytest.raises(remote.Unreachable, match="no SSH answer within 3s"):
        r.open()
    assert time.monotonic() - t0 <= 3 + 1
    time.sleep(0.2)   # paramiko's transport thread would log its banner error by now
    out, err = capfd.readouterr()
    assert not out and not err


def test_fractional_timeout_is_kept(silent_port):
    r = remote.Remote("dead", paramiko.SSHConfig.from_text(_ssh_config(silent_port)), connect_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(remote.Unreachable):
        r.open()
    assert time.monotonic() - t0 <= 0.5 + 1


INV = """
cluster:
  ssh_config: ssh_config
  connect_timeout: {timeout}
hosts:
  node1: {{address: 10.9.0.1, roles: [redis, sentinel, api_server, scheduler, dag_processor, triggerer, worker, nginx]}}
  node2: {{address: 10.9.0.2, roles: [redis, sentinel, api_server, scheduler, worker, nginx]}}
  node3: {{address: 10.9.0.3, roles: [redis, sentinel, postgres, worker, flower]}}
"""


def test_health_with_silent_hosts_is_bounded_and_parallel(tmp_path, silent_port, capsys):
    (tmp_path / "ssh_config").write_text(_ssh_config(silent_port, ("node1", "node2", "node3")))
    path = tmp_path / "hosts.yaml"
    path.write_text(INV.format(timeout=1))
    t0 = time.monotonic()
    assert health.run(inventory=str(path)) == 1
    assert time.monotonic() - t0 <= 1 + 1          # three dead hosts at once cost one timeout
    out = capsys.readouterr().out
    assert "UNHEALTHY" in out
    for host in ("node1", "node2", "node3"):   # each host's own ssh row (cluster checks name them too)
        assert re.search(rf"^{host}\s+ssh\s+fail\s+.*no SSH answer within 1s", out, re.M), out


@pytest.mark.parametrize("value", ["0", "-1", "'3'", "true", "[3]", ".nan", ".inf"])
def test_connect_timeout_must_be_a_positive_number(tmp_path, value):
    path = tmp_path / "hosts.yaml"
    path.write_text(INV.format(timeout=value))
    with pytest.raises(InventoryError, match=r"cluster\.connect_timeout"):
        load_inventory(path)


def test_connect_timeout_default_and_fraction(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(INV.format(timeout=1.5))
    assert load_inventory(path).settings.connect_timeout == 1.5
    path.write_text(textwrap.dedent(INV.format(timeout=1)).replace("  connect_timeout: 1\n", ""))
    assert load_inventory(path).settings.connect_timeout == 3


class DeadChannel:
    """A paramiko channel whose transport died: paramiko raises EOFError / SSHException, not OSError."""

    def __init__(self):
        self.closed = threading.Event()

    def recv(self, n):
        time.sleep(0.05)
        raise paramiko.SSHException("SSH session not active")

    def sendall(self, data):
        raise EOFError()

    def close(self):
        self.closed.set()


class DeadTransport:
    def __init__(self):
        self.channels = []

    def open_channel(self, kind, dest, src):
        self.channels.append(DeadChannel())
        return self.channels[-1]


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions that escape any thread (what would print 'Exception in thread ...')."""
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def test_pipe_to_dead_channel_ends_quietly(thread_errors, capfd):
    mine, theirs = socket.socketpair()
    chan = DeadChannel()
    threads = [threading.Thread(target=remote._pipe, args=pair) for pair in ((mine, chan), (chan, mine))]
    for t in threads:
        t.start()
    theirs.sendall(b"PING\r\n")
    for t in threads:
        t.join(2)
    assert not any(t.is_alive() for t in threads)
    assert not thread_errors
    assert chan.closed.is_set() and theirs.recv(10) == b""      # the client sees a closed connection
    assert capfd.readouterr().err == ""
    theirs.close()


def test_forward_over_dead_transport_closes_client_quietly(thread_errors, capfd):
    transport = DeadTransport()
    with remote._Forward(transport, "10.9.0.1", 6379) as port:
        client = socket.create_connection(("127.0.0.1", port), timeout=2)
        client.sendall(b"PING\r\n")
        assert client.recv(10) == b""
        client.close()
    assert transport.channels and transport.channels[0].closed.wait(2)
    time.sleep(0.1)
    assert not thread_errors
    assert capfd.readouterr().err == ""


def test_forward_to_dead_host_is_unreachable(silent_port):
    r = remote.Remote("dead", paramiko.SSHConfig.from_text(_ssh_config(silent_port)), connect_timeout=0.5)
    with pytest.raises(remote.Unreachable):
        r.forward("10.9.0.1", 6379)


def test_sh_over_transport_that_died_is_unreachable():
    class Dying:
        def is_active(self):
            return True

        def open_session(self):
            raise EOFError()
    r = remote.Remote("dead", paramiko.SSHConfig.from_text(_ssh_config(22)))
    r.conn.transport = Dying()
    with pytest.raises(remote.Unreachable, match="connection lost"):
        r.sh("true")
