"""The StatsD bridge (files/monitoring/statsd_exporter.py): bad input is counted and logged, never fatal; a dead
ingestion thread turns /metrics into HTTP 503 (which the health exporter row reports)."""

from __future__ import annotations

import importlib.util
import io
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "files" / "monitoring" / "statsd_exporter.py"
MAPPING = """
mappings:
  - match: test.*.bad
    name: test_bad
    labels: {x: "$5"}      # no 5th group: raises while mapping
  - match: test.ok.*
    name: test_ok
    labels: {kind: "$1"}
"""


def _bridge():
    spec = importlib.util.spec_from_file_location("statsd_bridge_unit", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def running(tmp_path):
    """(exporter, udp port, metrics url, log lines): the bridge in-process on loopback, ephemeral ports."""
    bridge = _bridge()
    (tmp_path / "mapping.yml").write_text(MAPPING)
    logged: list[str] = []
    exporter = bridge.Exporter(str(tmp_path / "mapping.yml"), log=logged.append)
    udp = exporter.start("127.0.0.1:0")
    server = bridge.http_server(exporter, "127.0.0.1:0")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield exporter, udp, f"http://127.0.0.1:{server.server_port}/metrics", logged
    server.shutdown()
    server.server_close()


def _send(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(url: str, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        _code, body = _get(url)
        if text in body or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_bad_datagrams_are_counted_logged_and_not_fatal(running):
    exporter, udp, url, logged = running
    _send(udp, b"test.ok.a:1|c\ntest.ok.a:2|c", b"g:5|g", b"garbage", b"\xff\xfe", b"test.x.bad:1|c",
           b"1abc:1|g", b"g:1|c", b"x:notanumber|c")
    _send(udp, b"test.ok.b:7|c")                 # after the bad ones: the thread still ingests
    body = _wait_for(url, 'test_ok{kind="b"} 7.0')
    assert 'test_ok{kind="a"} 3.0' in body and 'test_ok{kind="b"} 7.0' in body and "\ng 5.0" in body
    assert "statsd_exporter_lines_invalid_total 5.0" in body    # garbage, \xff\xfe, 1abc, g as counter, notanumber
    assert "statsd_exporter_ingest_errors_total 1.0" in body    # the mapping with a missing group
    assert "statsd_exporter_udp_packets_total 9.0" in body
    assert "statsd_exporter_ingest_up 1.0" in body
    assert _get(url)[0] == 200
    assert len(logged) == 6 and any("test.x.bad" in m and "IndexError" in m for m in logged)
    assert exporter.ingesting()


def test_dead_ingestion_thread_makes_metrics_503(running, capfd):
    exporter, udp, url, _ = running

    class Broken:
        def recvfrom(self, n):
            raise OSError("socket gone")
    real, exporter.sock = exporter.sock, Broken()
    _send(udp, b"test.ok.a:1|c")                 # wakes the thread; its next recvfrom fails
    exporter.thread.join(5)
    real.close()
    assert not exporter.ingesting()
    code, body = _get(url)
    assert code == 503 and "not running" in body
    assert "statsd_exporter_ingest_up 0.0" in exporter.render()
    assert "statsd ingestion stopped: OSError: socket gone" in capfd.readouterr().err


def test_log_is_rate_limited():
    stream = io.StringIO()
    log = _bridge().RateLimitedLog(burst=2, period=0.2, stream=stream)
    for i in range(5):
        log(f"bad {i}")
    assert stream.getvalue().splitlines() == ["bad 0", "bad 1"]
    time.sleep(0.25)
    log("bad 5")
    assert stream.getvalue().splitlines()[2:] == ["3 more bad statsd lines not logged in the last 0s", "bad 5"]


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_as_the_unit_starts_it():
    """Same flags as files/monitoring/airflow-ha-statsd-exporter.service.j2, real mapping file."""
    udp, web = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), f"--statsd.listen-udp=127.0.0.1:{udp}",
                             f"--web.listen-address=127.0.0.1:{web}",
                             f"--statsd.mapping-config={SCRIPT.with_name('statsd_mapping.yml')}"],
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{web}/metrics"
        deadline = time.monotonic() + 10
        while True:
            try:
                _get(url)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        _send(udp, b"airflow.scheduler_heartbeat:1|c", b"garbage")
        body = _wait_for(url, "airflow_scheduler_heartbeat 1.0")
        assert "airflow_scheduler_heartbeat 1.0" in body and "statsd_exporter_lines_invalid_total 1.0" in body
        assert _get(f"http://127.0.0.1:{web}/other")[0] == 404
    finally:
        proc.terminate()
        err = proc.communicate(timeout=10)[1]
    assert "bad statsd line 'garbage'" in err
