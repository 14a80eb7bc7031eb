#!/usr/bin/env python3
"""A small StatsD → Prometheus bridge for Airflow (installed by airflow-ha's monitoring component).

Why not prometheus/statsd_exporter: Debian 12 and Ubuntu ship no package of it, and the hosts may only
install distribution packages and the Airflow wheelhouse. This bridge takes the same flags and reads the
same mapping file format (a subset: `match` globs where `*` matches within one dot-separated part, `match_type: regex`,
`match_metric_type`, `name`, `labels` with `$1`..`$n`, `action: drop`), so the real statsd_exporter can
replace it without touching the mapping file.

Semantics follow statsd_exporter: counters add up, gauges set (or add with a `+`/`-` sign), timers are in
milliseconds and are exported in seconds as a summary (`_sum` and `_count`, no quantiles); an unmapped name
has every character outside [a-zA-Z0-9_] replaced by `_`. StatsD counters keep their mapped name, so they are
exposed as `untyped` (prometheus_client would append `_total` to a counter). Runs on the Airflow venv's
Python (PyYAML, prometheus_client).

Ingestion never dies silently: a bad line or datagram is counted (`statsd_exporter_lines_invalid_total`,
`statsd_exporter_ingest_errors_total`) and logged to stderr (rate-limited), and the UDP thread goes on. If the
thread dies anyway, `statsd_exporter_ingest_up` is 0 and /metrics answers HTTP 503.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, make_wsgi_app
from prometheus_client.core import Metric

TYPES = {"c": "counter", "g": "gauge", "ms": "timer", "h": "timer", "d": "timer"}
EXPOSED = {"counter": "unknown", "gauge": "gauge", "timer": "summary"}
BAD = re.compile(r"[^a-zA-Z0-9_]")
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class BadLine(ValueError):
    """A StatsD line that cannot be ingested (syntax, name or type clash)."""


class Mapper:
    def __init__(self, path: str | None):
        self.rules = []
        if path:
            with open(path) as fh:
                for m in (yaml.safe_load(fh) or {}).get("mappings", []):
                    pattern = m["match"]
                    if m.get("match_type", "glob") == "glob":
                        pattern = "^" + r"\.".join("([^.]*)".join(re.escape(x) for x in part.split("*"))
                                                   for part in pattern.split(".")) + "$"
                    self.rules.append((re.compile(pattern), m))
        self.cache: dict = {}

    def map(self, name: str, mtype: str):
        """(prometheus name, labels tuple) or None to drop."""
        key = (name, mtype)
        if key not in self.cache:
            self.cache[key] = self._map(name, mtype)
        return self.cache[key]

    def _map(self, name, mtype):
        for regex, m in self.rules:
            if m.get("match_metric_type") and m["match_metric_type"] != mtype:
                continue
            hit = regex.match(name)
            if not hit:
                continue
            if m.get("action") == "drop":
                return None
            labels = tuple(sorted((k, _expand(str(v), hit)) for k, v in (m.get("labels") or {}).items()))
            return BAD.sub("_", _expand(m.get("name", name), hit)), labels
        return BAD.sub("_", name), ()


class Store:
    """The StatsD metrics seen so far; a prometheus_client collector."""

    def __init__(self):
        self.lock = threading.Lock()
        self.types: dict = {}     # name -> counter | gauge | timer
        self.values: dict = {}    # (name, labels) -> float, or [sum, count] for timers

    def add(self, name, labels, mtype, value, sign, rate):
        _check_names(name, labels)
        with self.lock:
            if self.types.setdefault(name, mtype) != mtype:   # keep the first type (statsd_exporter does too)
                raise BadLine(f"{name} is a {self.types[name]}, not a {mtype}")
            key = (name, labels)
            if mtype == "counter":
                self.values[key] = self.values.get(key, 0.0) + value / rate
            elif mtype == "gauge":
                self.values[key] = (self.values.get(key, 0.0) + value) if sign else value
            else:
                s = self.values.setdefault(key, [0.0, 0])
                s[0] += value / 1000.0
                s[1] += 1

    def collect(self):
        with self.lock:
            items = sorted((k, list(v) if isinstance(v, list) else v) for k, v in self.values.items())
            types = dict(self.types)
        families: dict = {}
        for (name, labels), value in items:
            mtype = types[name]
            fam = families.setdefault(name, Metric(name, f"StatsD {mtype} {name}", EXPOSED[mtype]))
            if mtype == "timer":
                fam.add_sample(f"{name}_sum", dict(labels), value[0])
                fam.add_sample(f"{name}_count", dict(labels), value[1])
            else:
                fam.add_sample(name, dict(labels), value)
        yield from families.values()


def _check_names(name, labels) -> None:
    if not NAME.match(name) or name.startswith("statsd_exporter_"):
        raise BadLine(f"invalid metric name {name!r}")
    for key, _ in labels:
        if not NAME.match(key) or key.startswith("__"):
            raise BadLine(f"invalid label name {key!r} for {name}")


def _expand(template: str, hit) -> str:
    """statsd_exporter's $1 / ${1} references to the groups of the match."""
    return re.sub(r"\$\{?(\d+)\}?", lambda m: hit.group(int(m.group(1))) or "", template)


def handle_line(line: str, mapper: Mapper, store: Store) -> None:
    """One statsd line: name:value|type[|@rate] (several name:value|type may share a name: a:1|c:2|c).

    The valid samples are kept; then BadLine names the first malformed one, if any."""
    name, _, rest = line.partition(":")
    if not name or not rest:
        raise BadLine("expected name:value|type")
    problems = []
    for sample in rest.split(":"):
        try:
            _sample(name, sample, mapper, store)
        except BadLine as exc:
            problems.append(str(exc))
    if problems:
        raise BadLine("; ".join(problems))


def _sample(name: str, sample: str, mapper: Mapper, store: Store) -> None:
    parts = sample.split("|")
    if len(parts) <= 1 or parts[1] not in TYPES:
        raise BadLine(f"unknown or missing type in {sample!r}")
    raw, mtype = parts[0], TYPES[parts[1]]
    try:
        value, rate = float(raw), _rate(parts[2:])
    except ValueError:
        raise BadLine(f"bad value in {sample!r}") from None
    mapped = mapper.map(name, mtype)
    if mapped is not None:
        store.add(mapped[0], mapped[1], mtype, value, raw[:1] in "+-" and mtype == "gauge", rate)


def _rate(extras) -> float:
    for extra in extras:
        if extra.startswith("@"):
            try:
                return float(extra[1:]) or 1.0
            except ValueError:
                return 1.0
    return 1.0


class RateLimitedLog:
    """stderr (the journal under systemd), at most `burst` lines per `period` seconds; counts the rest."""

    def __init__(self, burst: int = 10, period: float = 60.0, stream=None):
        self.burst, self.period, self.stream = burst, period, stream
        self.start, self.sent, self.dropped = time.monotonic(), 0, 0
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.start >= self.period:
                if self.dropped:
                    self._write(f"{self.dropped} more bad statsd lines not logged in the last {self.period:.0f}s")
                self.start, self.sent, self.dropped = now, 0, 0
            if self.sent < self.burst:
                self.sent += 1
                self._write(message)
            else:
                self.dropped += 1

    def _write(self, message: str) -> None:
        print(message, file=self.stream or sys.stderr, flush=True)


class Exporter:
    """Mapper + store + the exporter's own metrics in one registry; the UDP ingestion thread."""

    def __init__(self, mapping: str | None, log=None):
        if hasattr(prometheus_client, "disable_created_metrics"):
            prometheus_client.disable_created_metrics()     # no *_created series beside our counters
        self.mapper, self.store = Mapper(mapping), Store()
        self.log = log or RateLimitedLog()
        self.registry = CollectorRegistry()
        self.registry.register(self.store)
        self.invalid = Counter("statsd_exporter_lines_invalid", "StatsD lines that could not be parsed or mapped",
                               registry=self.registry)
        self.errors = Counter("statsd_exporter_ingest_errors", "Unexpected errors while ingesting a StatsD line",
                              registry=self.registry)
        self.packets = Counter("statsd_exporter_udp_packets", "StatsD datagrams received", registry=self.registry)
        Gauge("statsd_exporter_ingest_up", "1 while the UDP ingestion thread runs",
              registry=self.registry).set_function(lambda: 1.0 if self.ingesting() else 0.0)
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def start(self, addr: str) -> int:
        """Bind the UDP socket and start the ingestion thread; returns the bound port."""
        host, port = addr.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, int(port)))
        self.thread = threading.Thread(target=self._serve, name="statsd-udp", daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1]

    def ingesting(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _serve(self) -> None:
        try:
            while True:
                data, _ = self.sock.recvfrom(65535)
                self.datagram(data)
        except BaseException as exc:  # say why ingestion stopped, then let the thread end
            print(f"statsd ingestion stopped: {type(exc).__name__}: {exc}; /metrics now answers 503",
                  file=sys.stderr, flush=True)

    def datagram(self, data: bytes) -> None:
        """Ingest one datagram, line by line; a bad line is counted and logged, never raised."""
        self.packets.inc()
        for raw in data.decode(errors="replace").splitlines():
            line = raw.strip()
            if not line:
                continue
            try:
                handle_line(line, self.mapper, self.store)
            except BadLine as exc:
                self.invalid.inc()
                self.log(f"bad statsd line {line[:200]!r}: {exc}")
            except Exception as exc:  # e.g. a mapping that refers to a missing group
                self.errors.inc()
                self.log(f"error ingesting statsd line {line[:200]!r}: {type(exc).__name__}: {exc}")

    def render(self) -> str:
        """The metrics in the Prometheus text format (what /metrics serves while ingesting)."""
        return generate_latest(self.registry).decode()

    def wsgi_app(self, path: str = "/metrics"):
        """/metrics from the registry; HTTP 503 while the ingestion thread is dead."""
        metrics = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") != path:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found\n"]
            if not self.ingesting():
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"statsd ingestion thread is not running\n"]
            return metrics(environ, start_response)
        return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def http_server(exporter: Exporter, addr: str, path: str = "/metrics") -> WSGIServer:
    """The /metrics server (not yet serving: call serve_forever)."""
    host, port = addr.rsplit(":", 1)
    return make_server(host, int(port), exporter.wsgi_app(path), _Server, handler_class=_QuietHandler)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--statsd.listen-udp", dest="udp", default="127.0.0.1:9125")
    p.add_argument("--web.listen-address", dest="web", default="127.0.0.1:9102")
    p.add_argument("--web.telemetry-path", dest="path", default="/metrics")
    p.add_argument("--statsd.mapping-config", dest="mapping", default=None)
    args = p.parse_args(argv)
    exporter = Exporter(args.mapping)
    exporter.start(args.udp)
    server = http_server(exporter, args.web, args.path)
    print(f"statsd on udp {args.udp}, metrics on http://{args.web}{args.path}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
