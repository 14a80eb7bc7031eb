"""`services.settle_script` (after an api-server is taken back), run by dash (the hosts' `sh -s`) against a
loopback HTTP server: it passes after SETTLE_ANSWERS prompt answers in a row, and fails with one line when
nothing answers before its deadline."""

from __future__ import annotations

import http.server
import subprocess
import threading

from fabfile import services


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=60, check=False)


def test_settles_after_answers_in_a_row(monkeypatch):
    monkeypatch.setattr(services, "SETTLE_PAUSE", 0)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hits = []
    server.RequestHandlerClass.log_message = lambda *a: hits.append(1)
    try:
        res = _run(services.settle_script(f"http://127.0.0.1:{server.server_port}/"))
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(hits) == services.SETTLE_ANSWERS


def test_fails_with_one_line_when_nothing_answers(monkeypatch):
    monkeypatch.setattr(services, "SETTLE_TIMEOUT", 2)
    monkeypatch.setattr(services, "SETTLE_PAUSE", 1)
    res = _run(services.settle_script("http://127.0.0.1:9/"))       # discard port: refused at once
    assert res.returncode == 1
    assert res.stdout.strip().startswith("api-server did not answer"), res.stdout
