"""`inv health`: one verdict for the whole cluster — a table (or JSON), and exit 1 if anything failed.

This module is the engine; the rows are the components' (their health hooks, core/component.py), and it
names none of them. Per host, in parallel, one round trip asks the clock, the disk, every unit the host's
components keep active (+ restart counts) and each component's `health_probe` lines; the host's rows come
from its own answers (`health_rows`). At the same time each component's `health_checks` runs from the
control machine (Redis and Sentinel with redis-py, PostgreSQL with psycopg2 and every component's
`database_checks` over that one connection, the Celery workers through flower, the last backup), through
SSH port forwarding over the same connections (no port is opened for the control machine). Once every host
answered: the clock skew, each component's `health_summary` from all the answers (the VIP, the Patroni
leader, lag and sync standby, the etcd quorum), and every single point of failure of the inventory
(fabfile/spof.py) as a "warn" row of host "cluster". Every check has a timeout (`check_timeout`), so a hung
host only fails its own rows; a host that does not answer SSH costs `connect_timeout` (the connections
open in parallel). Rows are sorted by host (inventory order, then "cluster") and check name.
"""

from __future__ import annotations

import json as jsonlib
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict

from . import spof
from .components import load_inventory
from .core import profile
from .core.component import Answers, Check
from .core.errors import UserError
from .core.runner import Options, Run, fail

DISK_WARN_PCT = 15
SKEW_WARN_S = 1.0


def expected_units(run, host) -> list[str]:
    """The units the host's components keep active (each component declares its own)."""
    return run.inv.registry.units(run, host)


def host_script(run, host) -> str:
    lines = ['echo "@@now $(date +%s.%N)"', "echo \"@@disk $(df -P / | awk 'NR==2{print $4, $2}')\""]
    for unit in expected_units(run, host):
        lines.append(f'echo "@@unit {unit} $(systemctl show -p ActiveState --value {unit}) '
                     f'$(systemctl show -p NRestarts --value {unit})"')
    for component in run.inv.registry.components:
        lines += component.health_probe(run, host)
    return "\n".join(lines)


def answers_of(out: str) -> Answers:
    """tag -> the text after each `@@<tag> ` line, in order (a line without a tag is dropped)."""
    answers: Answers = {}
    for line in out.splitlines():
        tag, _, rest = line.partition(" ")
        if tag.startswith("@@"):
            answers.setdefault(tag[2:], []).append(rest)
    return answers


def check_host(run, host) -> list[Check]:
    name, out = host.name, []
    t0 = time.time()
    res = run.remote(name).sh(host_script(run, host), timeout=run.inv.settings.check_timeout)
    t1 = time.time()
    out.append(Check(name, "ssh", "ok", f"{(t1 - t0) * 1000:.0f} ms round trip"))
    answers = answers_of(res.out)
    for rest in answers.get("now", []):
        run.data.setdefault("clock", {})[name] = float(rest) - (t0 + t1) / 2
    for rest in answers.get("disk", []):
        avail, total = (int(x) for x in rest.split())
        pct = 100 * avail / total if total else 0
        out.append(Check(name, "disk /", "ok" if pct >= DISK_WARN_PCT else "warn", f"{pct:.0f}% free"))
    for rest in answers.get("unit", []):
        unit, state, restarts = [*rest.split(), "?", "?"][:3]
        out.append(Check(name, f"unit {unit}", "ok" if state == "active" else "fail", f"{state}, {restarts} restarts"))
    run.data.setdefault("health answers", {})[name] = answers
    for component in run.inv.registry.components:
        out += component.health_rows(run, host, answers)
    return out


def _connect_and_check(run, host) -> list[Check]:
    """One host's own checks, right after its own connection: no host waits for another's connect."""
    run.connect([host])
    if host.name in run.failed:
        return [Check(host.name, "ssh", "fail", run.failed[host.name][:90])]
    return check_host(run, host)


def collect(run, local_only=False, hosts=None) -> list[Check]:
    """Every check of `hosts` (default: the run's hosts), plus the cluster-wide ones unless `local_only`.

    The cluster-wide checks (quorum, leader, VIP) are computed from the answers of `hosts`: pass every
    inventory host for them to mean anything (a subset's answers would read as silent hosts)."""
    timeout = run.inv.settings.check_timeout + run.inv.settings.connect_timeout + 5
    checks: list[Check] = []
    hosts, components = hosts if hosts is not None else run.hosts, run.inv.registry.components
    with ThreadPoolExecutor(max_workers=max(4, len(hosts) + 3)) as pool:
        futures = [(h.name, pool.submit(_connect_and_check, run, h)) for h in hosts]
        if not local_only:
            futures += [("cluster", pool.submit(c.health_checks, run)) for c in components]
        for name, fut in futures:
            try:
                checks += fut.result(timeout=timeout)
            except FutureTimeout:
                checks.append(Check(name, "timeout", "fail", f"no answer within {timeout}s"))
            except Exception as exc:
                checks.append(Check(name, "error", "fail", f"{type(exc).__name__}: {str(exc)[:80]}"))
    clock = run.data.get("clock", {})
    if len(clock) > 1:
        skew = max(clock.values()) - min(clock.values())
        checks.append(Check("cluster", "clock skew", "ok" if skew <= SKEW_WARN_S else "warn", f"{skew:.2f}s"))
    if not local_only:
        answers = run.data.get("health answers", {})
        for component in components:
            checks += component.health_summary(run, answers)
        checks += spof_checks(run.inv)
    order = {h: i for i, h in enumerate(run.inv.hosts)}
    checks.sort(key=lambda c: (order.get(c.host, 99), c.check))
    return checks


def spof_checks(inv) -> list[Check]:
    return [Check("cluster", "single point of failure", "warn", p) for p in spof.single_points(inv)]


def run(hosts=None, inventory=None, as_json=False, local_only=False) -> int:
    """Check the cluster (or only the given hosts' own checks); print a table or JSON; 0 if nothing failed."""
    profile.started()
    try:
        inv = load_inventory(inventory)
        selected = inv.select(hosts)
        r = Run(inv, selected if local_only or hosts else list(inv.hosts.values()), Options(quiet=True, silent=True))
    except UserError as exc:
        fail(exc)
    try:
        checks = collect(r, local_only=local_only)
    finally:
        r.close()
    ok = not any(c.status == "fail" for c in checks)
    print(render(checks, r.mask, as_json, time.monotonic() - r.started))
    return 0 if ok else 1


def render(checks: list[Check], mask, as_json: bool = False, seconds: float = 0.0) -> str:
    """The table (or JSON) of the checks, every string passed through the secret masker `mask`."""
    ok = not any(c.status == "fail" for c in checks)
    rows = [{k: mask(v) if isinstance(v, str) else v for k, v in asdict(c).items()} for c in checks]
    if as_json:
        return jsonlib.dumps({"ok": ok, "checks": rows})
    from tabulate import tabulate  # only the table needs it (start-up time)
    table = tabulate([list(row.values()) for row in rows], headers=["host", "check", "status", "detail"])
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    return (f"{table}\n{'HEALTHY' if ok else 'UNHEALTHY'}: {counts['ok']} ok, {counts['warn']} warn, "
            f"{counts['fail']} fail ({seconds:.1f}s)")
