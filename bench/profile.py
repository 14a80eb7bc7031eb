"""Where a profiled run's time goes: `python -m bench.bench profile path.json` (see fabfile/core/profile.py).

Record one on the lab: `AIRFLOW_HA_PROFILE=/tmp/noop.json .venv/bin/inv deploy -q` (a converged cluster,
so the no-op path). Tables: the main thread's top-level phases (what the wall time is made of), every
phase over all threads, round trips by what asked for them, time on the hosts per probe kind, and per
host how long it waited on others (barriers between phases).
"""

from __future__ import annotations

import statistics
from collections import defaultdict


def union(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def top_level(events: list[dict]) -> list[dict]:
    """The main thread's events not inside another main-thread event, in time order."""
    main = sorted((e for e in events if e["thread"] == "MainThread" and e["phase"] != "round trip"),
                  key=lambda e: (e["start"], -e["end"]))
    out, end = [], float("-inf")
    for e in main:
        if e["start"] >= end:
            out.append(e)
            end = e["end"]
    return out


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def summarize(data: dict) -> str:
    wall, events, remote = data["wall"], data["events"], data.get("remote", [])
    parts = [f"process wall time {wall:.3f} s (from process start, /proc)"]

    tops = top_level(events)
    rows = [[e["phase"], e["start"], e["end"] - e["start"], f"{100 * (e['end'] - e['start']) / wall:.0f}%"]
            for e in tops]
    gap = wall - union([(e["start"], e["end"]) for e in tops])
    rows.append(["(between phases: not in any span)", "", gap, f"{100 * gap / wall:.0f}%"])
    parts.append("where the time goes (main thread, in order)\n"
                 + _table(["phase", "start s", "seconds", "share"], rows))

    by_phase: dict = defaultdict(list)
    for e in events:
        if e["phase"] != "round trip":
            by_phase[e["phase"]].append(e)
    rows = [[p, len(es), sum(e["end"] - e["start"] for e in es), union([(e["start"], e["end"]) for e in es]),
             len({e["host"] for e in es if e["host"]})] for p, es in by_phase.items()]
    rows.sort(key=lambda r: -r[2])
    parts.append("every phase (all threads; 'wall' counts parallel hosts once)\n"
                 + _table(["phase", "count", "sum s", "wall s", "hosts"], rows))

    trips = [e for e in events if e["phase"] == "round trip"]
    by_kind: dict = defaultdict(list)
    for e in trips:
        by_kind[e.get("kind", "other")].append(e)
    hosts = sorted({e["host"] for e in trips})
    rows = [[k, len(es), sum(e["end"] - e["start"] for e in es), statistics.median([e["end"] - e["start"] for e in es]),
             max(e["end"] - e["start"] for e in es), sum(e.get("bytes", 0) for e in es) // max(len(es), 1)]
            for k, es in by_kind.items()]
    rows.sort(key=lambda r: -r[2])
    parts.append(f"SSH round trips: {len(trips)} on {len(hosts)} host(s), "
                 f"{len(trips) / max(len(hosts), 1):.1f} per host\n"
                 + _table(["asked by", "count", "sum s", "median s", "max s", "script bytes"], rows))

    if remote:
        by_probe: dict = defaultdict(list)
        for r in remote:
            by_probe[r["kind"]].append(r["seconds"])
        n_hosts = max(len({r["host"] for r in remote}), 1)
        total = sum(r["seconds"] for r in remote)
        rows = [[k, len(v), sum(v), sum(v) / n_hosts, max(v), f"{100 * sum(v) / total:.0f}%" if total else ""]
                for k, v in by_probe.items()]
        rows.sort(key=lambda r: -r[2])
        parts.append(f"time on the hosts per probe kind ({total:.3f} s over {n_hosts} host(s), the cost of the "
                     "stamps subtracted)\n"
                     + _table(["probe kind", "probes", "sum s", "per host s", "max s", "share"], rows))

    per_host: dict = defaultdict(list)
    for e in events:
        if (e["host"] and e["thread"] != "MainThread") or e["phase"] == "round trip":
            per_host[e["host"]].append((e["start"], e["end"]))
    rows = []
    for host, iv in sorted(per_host.items()):
        first, last = min(a for a, _ in iv), max(b for _, b in iv)
        busy = union(iv)
        rows.append([host, first, last, busy, last - first - busy])
    if rows:
        parts.append("per host: busy (own spans and round trips) vs waiting between its first and last event\n"
                     + _table(["host", "first s", "last s", "busy s", "waiting s"], rows))
    return "\n\n".join(parts)
