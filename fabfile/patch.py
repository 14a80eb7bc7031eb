"""`inv patch`: OS package updates, one host at a time, each host drained and health-gated (issue 16).

Per host, in the rolling order (services.roll_order: api-server hosts first; the Redis master's host last):
1. the Redis master there: SENTINEL FAILOVER first (redis.failover);
2. keepalived there: stopped, so the VIP moves to another nginx host before anything restarts here;
3. an api-server there: drained from every nginx (nginx.set_drained), as a rolling restart does;
4. a worker there: `systemctl stop airflow-worker`, Celery's warm shutdown (running tasks finish);
5. `apt-get upgrade` (Debian/Ubuntu, existing config files kept) or `dnf upgrade` (EL9);
6. a reboot when the OS asks for one (/var/run/reboot-required; EL9: `needs-restarting -r` exits 1),
   then wait for the host to answer with a new boot id; without a reboot, worker and keepalived start again;
7. gates, polled: the host's Redis/Sentinel, PostgreSQL, Airflow units and nginx (each component's `gate`);
8. the api-server back into every nginx, its Execution API warmed first and settled after (services.after_restart).
A host that fails stops the run: the hosts after it are left as they are. `--check` refreshes the package
lists and prints the pending updates per host (`apt list --upgradable`, `dnf check-update`) and the order.
Not handled: a Patroni leader is not switched over first (its reboot is a Patroni failover, 20-45 s of
no writes); the single database host's upgrade/reboot is downtime (marked).
"""

from __future__ import annotations

import time

from . import keepalived, nginx, pgsql, postgres, redis, services, stack
from .components import load_inventory
from .core.errors import UserError
from .core.remote import Unreachable
from .core.runner import Options, Run, StepResult, fail

NAME = "patch"
APT = "-o Acquire::http::Timeout=30 -o Acquire::Retries=3 -o DPkg::Lock::Timeout=120"
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
LISTED_UPDATES = 50   # --check: the pending updates listed per host


def refresh_script(pkg: str) -> str:
    """Refresh the package lists, then print one `name version` line per pending update."""
    if pkg == "apt":
        return (f"export DEBIAN_FRONTEND=noninteractive\ntimeout 600 apt-get -q {APT} update >/dev/null 2>&1\n"
                "apt list --upgradable 2>/dev/null | tail -n +2 | sed -E 's#^([^/]+)/\\S+ (\\S+) .*#\\1 \\2#'")
    return ("timeout 600 dnf -q check-update > /tmp/.airflow-ha-updates 2>/dev/null; rc=$?\n"
            "[ $rc -eq 0 ] || [ $rc -eq 100 ] || exit $rc\n"
            "awk 'NF == 3 && $1 ~ /\\./ {print $1, $2}' /tmp/.airflow-ha-updates")


def upgrade_script(pkg: str) -> str:
    if pkg == "apt":
        return (f"export DEBIAN_FRONTEND=noninteractive\ntimeout 600 apt-get -q {APT} update\n"
                f"timeout 1800 apt-get -y -q {APT} -o Dpkg::Options::=--force-confold "
                "-o Dpkg::Options::=--force-confdef upgrade")
    return "timeout 1800 dnf -y -q upgrade"


def reboot_needed_script(pkg: str) -> str:
    """Prints "reboot" when the OS says a reboot is required, "unknown" when it cannot say."""
    if pkg == "apt":
        return "[ -f /var/run/reboot-required ] && echo reboot || true"
    return ("command -v needs-restarting >/dev/null || { echo unknown; exit 0; }\n"
            "needs-restarting -r >/dev/null 2>&1; [ $? -eq 1 ] && echo reboot || true")


def order(run, hosts) -> list:
    """services.roll_order, with the host of the Redis master last (failed over when its turn comes)."""
    master = run.data.get("redis_master")
    return sorted(services.roll_order(run, hosts), key=lambda h: run.addresses[h.name] == master)


def gates(run, host) -> list:
    """The gate functions of the components on `host`, in dependency order."""
    comps = (redis, postgres, services, nginx)
    return [c.gate for c in comps if c.applies(run.inv, host)]


def await_gates(run, host, timeout: float, only: list | None = None) -> str | None:
    """Poll every gate of `host` (or `only` these) until all pass (None) or `timeout` s passed (why not)."""
    t0 = time.monotonic()
    while True:
        why = None
        for gate in only or gates(run, host):
            try:
                why = gate(run, host)
            except Exception as exc:  # cannot ask yet = not healthy yet
                why = f"{type(exc).__name__}: {exc}"
            if why:
                break
        if why is None or time.monotonic() - t0 >= timeout:
            return why
        time.sleep(run.opts.gate_interval)


def drain(run, host) -> str | None:
    """Move the Redis master and the VIP away, take the api-server out of nginx, warm-stop the worker."""
    if host.has("redis") and run.addresses[host.name] == run.data.get("redis_master") \
            and len(run.inv.with_role("redis")) > 1:
        run.say(f"{host.name:<10} {NAME:<10} SENTINEL FAILOVER: the Redis master moves away first", always=True)
        if why := redis.failover(run):
            return f"Redis failover: {why}"
    if services.drained_in_rolls(run.inv, host) and (why := nginx.set_drained(run, host, True)):
        return f"drain: {why}"
    stops = (["keepalived"] if keepalived.applies(run.inv, host) else []) + \
        (["airflow-worker"] if host.has("worker") else [])
    if stops:
        run.say(f"{host.name:<10} {NAME:<10} stopping {' '.join(stops)} (worker: warm shutdown)", always=True)
        res = run.remote(host.name).sh(f"systemctl stop {' '.join(stops)}",
                                       timeout=run.inv.settings.worker_stop_timeout + 60)
        if not res.ok:
            return f"stop {' '.join(stops)}: {res.err or res.out}".strip()
    return None


def reboot(run, host, timeout: float = 900) -> str | None:
    """Reboot `host` and wait until it answers SSH with a new boot id; None when back."""
    rem = run.remote(host.name)
    old = rem.sh(BOOT_ID, timeout=10).out.strip()
    rem.sh("nohup sh -c 'sleep 2; systemctl reboot' >/dev/null 2>&1 &", timeout=10)
    run.say(f"{host.name:<10} {NAME:<10} rebooting (the OS asked for it)", always=True)
    time.sleep(5)
    rem.close()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            now = run.remote(host.name).sh(BOOT_ID, timeout=10)
            if now.ok and now.out.strip() and now.out.strip() != old:
                run.say(f"{host.name:<10} {NAME:<10} back after {time.monotonic() - t0:.0f}s", always=True)
                return None
        except Unreachable:
            pass
        time.sleep(3)
    return f"not back {timeout:.0f}s after the reboot"


def patch_host(run, host, allow_reboot: bool = True) -> str | None:
    """Drain, upgrade, reboot if required, gate, undrain one host; None when it is healthy again."""
    pkg = run.facts[host.name].platform.pkg
    if why := drain(run, host):
        return why
    t0 = time.monotonic()
    res = run.remote(host.name).sh(upgrade_script(pkg), timeout=2700)
    run.record(StepResult(host.name, NAME, "os packages", "changed" if res.ok else "failed",
                          f"{pkg} upgrade", res.out[-2000:] + res.err[-1000:], time.monotonic() - t0))
    if not res.ok:
        return f"{pkg} upgrade failed (exit {res.rc})"
    need = run.remote(host.name).sh(reboot_needed_script(pkg), timeout=60).out.strip()
    if need == "reboot" and allow_reboot:
        if why := reboot(run, host):
            return why
    else:
        if need == "reboot":
            run.say(f"{host.name:<10} {NAME:<10} needs a reboot (left out: --no-reboot)", always=True)
        starts = (["keepalived"] if keepalived.applies(run.inv, host) else []) + \
            (["airflow-worker"] if host.has("worker") else [])
        if starts and not (res := run.remote(host.name).sh(f"systemctl start {' '.join(starts)}", timeout=120)).ok:
            return f"start {' '.join(starts)}: {res.err or res.out}".strip()
    if why := await_gates(run, host, run.opts.gate_timeout):
        return f"not healthy after patching: {why}"
    run.say(f"{host.name:<10} {NAME:<10} healthy after patching ({time.monotonic() - t0:.0f}s)", always=True)
    if services.drained_in_rolls(run.inv, host):   # warm its Execution API, take it back, let it settle
        return services.after_restart(run, host)
    return None


def pending(run, hosts) -> dict[str, list[str]]:
    """host -> pending updates ("name version"), asked in parallel (None entries: no answer)."""
    def ask(host):
        res = run.remote(host.name).sh(refresh_script(run.facts[host.name].platform.pkg), timeout=900)
        return [line for line in res.out.splitlines() if line.strip()] if res.ok else [f"? {res.err.strip()[:80]}"]
    return dict(zip([h.name for h in hosts], run.parallel(ask, hosts), strict=True))


def check_lines(run, hosts, updates: dict) -> list[str]:
    """--check: per host, in patch order, what it has pending and how it is drained."""
    lines = []
    for i, host in enumerate(order(run, hosts), 1):
        todo = updates.get(host.name, [])
        how = [w for w, cond in (("Redis master failed over", run.addresses[host.name] == run.data.get("redis_master")),
                                 ("VIP moved", keepalived.applies(run.inv, host)),
                                 ("api-server drained", host.has("api_server")),
                                 ("worker warm shutdown", host.has("worker")),
                                 ("DOWNTIME: single database", host.has("postgres") and not pgsql.patroni_mode(run.inv)))
               if cond]
        lines.append(f"{i}. {host.name:<8} {len(todo)} update(s)" + (f"; {', '.join(how)}" if how else ""))
        lines += [f"     {u}" for u in todo[:LISTED_UPDATES]] + \
            ([f"     ... {len(todo) - LISTED_UPDATES} more"] if len(todo) > LISTED_UPDATES else [])
    return lines


def run(hosts=None, inventory=None, check: bool = False, reboot: bool = True) -> int:
    """`inv patch`: see the module docstring. 0 when every selected host is patched and healthy."""
    try:
        inv = load_inventory(inventory)
        selected = inv.select(hosts)
        r = Run(inv, selected, Options(check=check, gate_timeout=300))
    except UserError as exc:
        fail(exc)
    try:
        r.connect()
        if r.failed:
            return r.recap()
        redis.prepare(r, selected)
        if check:
            print("\n".join(["patch plan (one host at a time):", *check_lines(r, selected, pending(r, selected))]))
            return 0
        for host in order(r, selected):
            if why := patch_host(r, host, reboot):
                r.fail_host(host, NAME, why)
                break
        stack.ends_healthy(r)
        return r.recap()
    finally:
        r.close()
