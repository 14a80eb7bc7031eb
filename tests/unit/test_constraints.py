"""`cluster.constraints_url`: fetched once (http on 127.0.0.1, file://), checked, cached, used everywhere."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from fabfile import airflow, constraints, stack, wheelhouse
from fabfile.components import load_inventory
from fabfile.core import remote as remote_mod
from fabfile.core.errors import UserError
from fabfile.core.offline import fresh_run
from fabfile.core.sshhosts import read_control_file

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "files" / "airflow" / "constraints-3.3.2-py3.11.txt"
SPEC = ROOT / "tests" / "spec"
GOOD = "# official-looking constraints\n" + "".join(f"pkg-{i}==1.{i}\n" for i in range(25)) + \
    "celery==5.6.3\nbackports.zoneinfo==0.2.1 ; python_version < '3.9'\n"
HTML = "<!DOCTYPE html>\n<html><body>404: Not Found</body></html>\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "constraints"
    monkeypatch.setattr(constraints, "CACHE", path)
    return path


@pytest.fixture
def server(tmp_path):
    """An http.server on 127.0.0.1 serving good.txt, bad.html, requirements.txt; yields (base URL, hits)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "good.txt").write_text(GOOD)
    (root / "bad.html").write_text(HTML)
    (root / "requirements.txt").write_text("apache-airflow>=3\ncelery\n")
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def test_http_fetched_once_checked_and_cached(server, cache):
    base, hits = server
    url = f"{base}/good.txt"
    path = constraints.fetch(url)
    assert path == cache / f"{hashlib.sha256(url.encode()).hexdigest()}.txt"
    assert path.read_text() == GOOD and hits == ["/good.txt"]
    assert constraints.fetch(url) == path and hits == ["/good.txt"], "a later run must reuse the cache"


@pytest.mark.parametrize("name, why", [("bad.html", "line 1 is not 'name==version'"),
                                       ("requirements.txt", "line 1 is not 'name==version'"),
                                       ("missing.txt", "cannot fetch the constraints file")])
def test_http_bad_file_refused_with_one_error(server, cache, name, why):
    url = f"{server[0]}/{name}"
    with pytest.raises(UserError) as err:
        constraints.fetch(url, "hosts.yaml: cluster.constraints_url")
    msg = err.value.message
    assert why in msg and f"hosts.yaml: cluster.constraints_url ({url})" in msg and "\n  fix: " in msg
    assert msg.count("\n") == 1
    assert not constraints.cache_path(url).exists(), "nothing cached from a refused file"


def test_file_url(tmp_path, cache):
    good, bad = tmp_path / "c.txt", tmp_path / "c.html"
    good.write_text(GOOD)
    bad.write_text(HTML)
    assert constraints.fetch(good.as_uri()).read_text() == GOOD
    with pytest.raises(UserError, match="not a constraints file"):
        constraints.fetch(bad.as_uri())


@pytest.mark.parametrize("text, why", [("", "only 0 pins"),
                                       ("".join(f"p{i}==1\n" for i in range(30)), "does not pin celery"),
                                       (GOOD + "celery>=5\n", "is not 'name==version'")])
def test_problem(text, why):
    assert why in constraints.problem(text)


def test_shipped_files_pass_the_check():
    for path in SHIPPED.parent.glob("constraints-*.txt"):
        assert constraints.problem(path.read_text()) is None, path


def test_unsupported_scheme_and_bad_cache(cache):
    with pytest.raises(UserError, match="unsupported URL scheme"):
        constraints.fetch("ftp://example.invalid/c.txt")
    url = "http://127.0.0.1:9/never-contacted.txt"
    constraints.cache_path(url).parent.mkdir(parents=True)
    constraints.cache_path(url).write_text(HTML)
    with pytest.raises(UserError, match=r"cached constraints file .* is not valid") as err:
        constraints.fetch(url)
    assert f"delete {constraints.cache_path(url)}" in err.value.message


def _inventory(tmp_path, url: str, wheels: Path | None = None):
    text = (SPEC / "hosts.yaml").read_text().replace(
        "cluster:\n", f"cluster:\n  constraints_url: '{url}'\n" + (f"  wheelhouse: '{wheels}'\n" if wheels else ""))
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    return load_inventory(path)


def test_used_for_the_wheelhouse_and_sent_to_hosts(server, cache, tmp_path, monkeypatch):
    url = f"{server[0]}/good.txt"
    wheels = tmp_path / "wheels"
    inv = _inventory(tmp_path, url, wheels)
    built = {}

    def fake_build(dest, version, python, *a, constraints=None, **k):
        built.update(dest=dest, constraints=constraints)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / wheelhouse.MANIFEST).write_text("")
    monkeypatch.setattr(wheelhouse, "build", fake_build)
    airflow.COMPONENT.local_artifacts(inv)
    fetched = constraints.cache_path(url)
    assert airflow.constraints_path(inv) == fetched and built == {"dest": wheels, "constraints": fetched}

    run = fresh_run(inv, (SPEC / "os-release" / "debian-12").read_text(),
                    local=read_control_file)     # the control machine's files, as a real run reads them
    ctx = run.context(inv.hosts["node1"])
    sent = [s for s in airflow.steps(ctx) if s.target == "/opt/airflow/constraints.txt"]
    assert [s.content for s in sent] == [GOOD]


def test_wheelhouse_rebuilt_when_built_from_other_constraints(tmp_path, cache, monkeypatch):
    good = tmp_path / "c.txt"
    good.write_text(GOOD)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / wheelhouse.MANIFEST).write_text("")
    (wheels / wheelhouse.STAMP).write_text(json.dumps({"inputs": {"constraints_sha256": "0" * 64}}))
    inv = _inventory(tmp_path, good.as_uri(), wheels)
    calls = []
    monkeypatch.setattr(wheelhouse, "build", lambda *a, **k: calls.append(k["constraints"]))
    airflow.ensure_constraints_local(inv)
    airflow.ensure_wheelhouse_local(inv)
    assert calls == [constraints.cache_path(good.as_uri())]


def test_bad_url_refused_before_any_connection(server, cache, tmp_path, monkeypatch, capsys):
    def refuse(self, *a, **k):
        raise AssertionError("an SSH connection was attempted")
    monkeypatch.setattr(remote_mod.Remote, "__init__", refuse)
    url = f"{server[0]}/bad.html"
    with pytest.raises(SystemExit) as exc:
        stack.run(None, None, str(_inventory(tmp_path, url).path))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"cluster.constraints_url ({url}): not a constraints file" in err
