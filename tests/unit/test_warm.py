"""services.warm_script against a real HTTP server on loopback: it goes on until WARM_ROUNDS rounds in a row
answer promptly (a cold worker's slow first answer resets the count), and fails with one line when the
Execution API never answers promptly (WARM_TIMEOUT shortened here)."""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fabfile import services


class _Api(BaseHTTPRequestHandler):
    slow_first = 0.0      # seconds the first request takes (a cold worker building its routers)
    status = 200
    seen = 0

    def do_GET(self):
        cls = type(self)
        cls.seen += 1
        if cls.seen == 1:
            time.sleep(cls.slow_first)
        self.send_response(cls.status)
        self.end_headers()
        self.wfile.write(b'{"status": "healthy"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    handler = type("Api", (_Api,), {"seen": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/execution/health"
    server.shutdown()


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)


def test_a_cold_first_answer_needs_more_rounds(api):
    handler, url = api
    handler.slow_first = 1.5
    res = _run(services.warm_script(url, workers=1))
    assert res.returncode == 0, res.stdout + res.stderr
    # one slow round, then WARM_ROUNDS prompt ones of 2 requests each
    assert handler.seen == 2 * (services.WARM_ROUNDS + 1)


def test_never_prompt_fails_with_one_line(api, monkeypatch):
    handler, url = api
    handler.status = 503
    monkeypatch.setattr(services, "WARM_TIMEOUT", 3)
    res = _run(services.warm_script(url, workers=2))
    assert res.returncode == 1
    assert res.stdout.strip() == f"Execution API {url} not answering promptly after 3s"
