#!/usr/bin/env python3
"""A small StatsD → Prometheus bridge for Airflow (installed by airflow-ha's monitoring component).

Why not prometheus/statsd_exporter: Debian 12 and Ubuntu ship no package of it, and the hosts may only
install distribution packages and the Airflow wheelhouse. This bridge takes the same flags and reads the
same mapping file format (a subset: `match` globs where `*` matches within one dot-separated part, `match_type: regex`,
`match_metric_type`, `name`, `labels` with `$1`..`$n`, `action: drop`), so the real statsd_exporter can
replace it without touching the mapping file.

Semantics follow statsd_exporter: counters add up, gauges set (or add with a `+`/`-` sign), timers are in
milliseconds and are exported in seconds as a summary (`_sum` and `_count`, no quantiles); an unmapped name
has every character outside [a-zA-Z0-9_] replaced by `_`. Runs on the Airflow venv's Python (PyYAML).
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

TYPES = {"c": "counter", "g": "gauge", "ms": "timer", "h": "timer", "d": "timer"}
BAD = re.compile(r"[^a-zA-Z0-9_]")


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
    def __init__(self):
        self.lock = threading.Lock()
        self.types: dict = {}     # name -> counter | gauge | timer
        self.values: dict = {}    # (name, labels) -> float, or [sum, count] for timers
        self.bad_lines = 0

    def add(self, name, labels, mtype, value, sign, rate):
        with self.lock:
            if self.types.setdefault(name, mtype) != mtype:
                self.bad_lines += 1       # one name, two types: keep the first (statsd_exporter does too)
                return
            key = (name, labels)
            if mtype == "counter":
                self.values[key] = self.values.get(key, 0.0) + value / rate
            elif mtype == "gauge":
                self.values[key] = (self.values.get(key, 0.0) + value) if sign else value
            else:
                s = self.values.setdefault(key, [0.0, 0])
                s[0] += value / 1000.0
                s[1] += 1

    def render(self) -> str:
        with self.lock:
            out = []
            by_name: dict = {}
            for (name, labels), value in self.values.items():
                by_name.setdefault(name, []).append((labels, value))
            for name in sorted(by_name):
                mtype = self.types[name]
                out.append(f"# TYPE {name} {'summary' if mtype == 'timer' else mtype}")
                for labels, value in sorted(by_name[name]):
                    lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels)
                    lab = f"{{{lab}}}" if lab else ""
                    if mtype == "timer":
                        out.append(f"{name}_sum{lab} {value[0]!r}")
                        out.append(f"{name}_count{lab} {value[1]}")
                    else:
                        out.append(f"{name}{lab} {value!r}")
            out.append("# TYPE statsd_exporter_lines_invalid counter")
            out.append(f"statsd_exporter_lines_invalid {self.bad_lines}")
            return "\n".join(out) + "\n"


def _expand(template: str, hit) -> str:
    """statsd_exporter's $1 / ${1} references to the groups of the match."""
    return re.sub(r"\$\{?(\d+)\}?", lambda m: hit.group(int(m.group(1))) or "", template)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def handle_line(line: str, mapper: Mapper, store: Store) -> None:
    """One statsd line: name:value|type[|@rate] (several name:value|type may share a name: a:1|c:2|c)."""
    name, _, rest = line.partition(":")
    if not name or not rest:
        store.bad_lines += 1
        return
    for sample in rest.split(":"):
        parts = sample.split("|")
        if len(parts) < 2 or parts[1] not in TYPES:
            store.bad_lines += 1
            continue
        raw, mtype = parts[0], TYPES[parts[1]]
        rate = 1.0
        for extra in parts[2:]:
            if extra.startswith("@"):
                try:
                    rate = float(extra[1:]) or 1.0
                except ValueError:
                    pass
        try:
            value = float(raw)
        except ValueError:
            store.bad_lines += 1
            continue
        mapped = mapper.map(name, mtype)
        if mapped is not None:
            store.add(mapped[0], mapped[1], mtype, value, raw[:1] in "+-" and mtype == "gauge", rate)


def serve_udp(addr, mapper, store):
    host, port = addr.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    while True:
        data, _ = sock.recvfrom(65535)
        for line in data.decode(errors="replace").splitlines():
            if line.strip():
                handle_line(line.strip(), mapper, store)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--statsd.listen-udp", dest="udp", default="127.0.0.1:9125")
    p.add_argument("--web.listen-address", dest="web", default="127.0.0.1:9102")
    p.add_argument("--web.telemetry-path", dest="path", default="/metrics")
    p.add_argument("--statsd.mapping-config", dest="mapping", default=None)
    args = p.parse_args(argv)
    mapper, store = Mapper(args.mapping), Store()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            if self.path.split("?")[0] != args.path:
                self.send_error(404)
                return
            body = store.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    threading.Thread(target=serve_udp, args=(args.udp, mapper, store), daemon=True).start()
    host, port = args.web.rsplit(":", 1)
    print(f"statsd on udp {args.udp}, metrics on http://{args.web}{args.path}", file=sys.stderr, flush=True)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
