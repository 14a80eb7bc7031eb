"""`_drain` reads a channel until its EOF: an exit status that arrives before the last output must not cut
the output short (a probe cut this way read as "would change" in a CI run)."""

from __future__ import annotations

from fabfile.core import remote


class FakeChannel:
    """Events in the order a server sent them (out, exit, eof; wait: nothing yet), one per poll."""

    def __init__(self, events):
        self.events, self.buf, self.status, self.eof_received, self.closed = list(events), b"", None, False, False

    def _tick(self):
        if self.events:
            kind, value = self.events.pop(0)
            if kind == "out":
                self.buf += value
            elif kind == "exit":
                self.status = value
            elif kind == "eof":
                self.eof_received = True

    def recv_ready(self):
        self._tick()
        return bool(self.buf)

    def recv(self, n):
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv_stderr_ready(self):
        return False

    def exit_status_ready(self):
        return self.status is not None


def test_output_after_the_exit_status_is_read():
    chan = FakeChannel([("out", b"@@probe 0\nok\n"), ("exit", 0), *[("wait", None)] * 3,
                        ("out", b"@@probe 1\nabsent\n"), ("eof", None)])
    out, err = remote._drain(chan, timeout=5)
    assert out == "@@probe 0\nok\n@@probe 1\nabsent\n" and err == ""


def test_no_eof_after_the_exit_ends_the_read_after_a_grace(monkeypatch):
    monkeypatch.setattr(remote, "EOF_GRACE", 0.05)    # a background child holding the output open
    chan = FakeChannel([("out", b"started\n"), ("exit", 0)])
    assert remote._drain(chan, timeout=5) == ("started\n", "")
