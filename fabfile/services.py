"""systemd units for the Airflow processes, only on hosts with the matching role.

Type=simple (Airflow never calls sd_notify), Restart=always, secrets via EnvironmentFile. A unit
restarts when its own file, airflow.cfg, airflow.env or the install changed (notification "airflow"
from the airflow component). A role removed from a host stops and disables its unit.

Versions (issue 16): every unit runs /opt/airflow/venvs/current; the first step here points `current`
at the inventory's `airflow_version` venv. A running process keeps the venv it started from (the shebang
of `current/bin/airflow` names the versioned venv, not `current`): a unit changes version when it restarts.

Roll order (`roll_plans`), decided per run:
- a version change (`current` flips on some host: upgrade, rollback) rolls per ROLE across hosts, in
  Airflow's upgrade order (installation/upgrading.rst), one host at a time within each phase, each
  health-gated: every api-server (drained from every nginx), then triggerers and dag-processors, then
  workers (a restart is Celery's warm shutdown: running tasks finish), then schedulers, Flower last. A
  host's `current` flips with its first phase's restarts; its other units restart in their own phases.
  The Execution API serves older task-SDK clients, not the reverse: no new worker meets an old api-server.
- any other change (config, unit file) rolls per host (`roll_order`, as before issue 16): all of a host's
  restarts in one apply and one gate. Every process runs the same version, so no role must wait for
  another, and fewer gates keep the roll short (3 instead of 10 on the default layout).
Each unit has its own generation stamp (`generation_step`), so a roll stopped between phases restarts the
units it did not reach on the next run.
"""

from __future__ import annotations

from dataclasses import replace

from . import nginx
from .airflow import INSTALL_STAMP, ROLES, VENV, venv_dir
from .core.component import Component
from .core.steps import Command, File, Link, Service
from .core.templates import render

NAME = "services"

#: role -> unit name (files/airflow/units/<unit>.service.j2)
UNITS = {
    "api_server": "airflow-api-server",
    "scheduler": "airflow-scheduler",
    "dag_processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
    "worker": "airflow-worker",
    "flower": "airflow-flower",
}


def applies(inv, host) -> bool:
    return host.has(*ROLES)


def unit_values(ctx) -> dict:
    ports = ctx.inv.ports
    return {
        "venv": VENV, "hostname": ctx.host.name, "listen_address": ctx.address,
        "api_port": ports.api, "flower_port": ports.flower,
        "api_workers": ctx.settings.api_workers, "worker_concurrency": ctx.settings.worker_concurrency,
        "worker_queues": ",".join(ctx.settings.worker_queues),
        "worker_stop_timeout": ctx.inv.settings.worker_stop_timeout,
        "airflow_home": "/var/lib/airflow",
        # hosts running nginx (local-only ones included) whose X-Forwarded-* headers uvicorn trusts
        "trusted_proxies": ",".join(["127.0.0.1"] + [ctx.run.addresses[h.name] for h in ctx.inv.hosts.values()
                                                     if nginx.runs_nginx(h)]),
    }


#: what every Airflow process reads at start; a change on the host restarts them (even across runs)
GENERATION_INPUTS = ("/etc/airflow/airflow.cfg", "/etc/airflow/airflow.env",
                     "/var/lib/airflow/config/airflow_ha_celery_config.py")
GENERATION_STAMP = "/var/lib/airflow/.airflow-ha-generation"     # + ".<unit>": one stamp per unit
#: Airflow's upgrade order (installation/upgrading.rst), one phase per group of roles; Flower (not in the
#: guide, a Celery UI) last
ROLL_PHASES = (("api_server",), ("triggerer", "dag_processor"), ("worker",), ("scheduler",), ("flower",))
PHASE_OF_ROLE = {role: i for i, roles in enumerate(ROLL_PHASES) for role in roles}
ROLE_OF_UNIT = {unit: role for role, unit in UNITS.items()}


def tier(host) -> int:
    """The host's earliest phase (its place in a per-host roll)."""
    return next((i for i, roles in enumerate(ROLL_PHASES) if host.has(*roles)), len(ROLL_PHASES))


def roll_order(run, hosts) -> list:
    """Per-host roll: api-server hosts, then triggerer/dag-processor hosts, workers, schedulers (given order
    within)."""
    return sorted(hosts, key=tier)


def phase_hosts(hosts) -> list[tuple[tuple, list]]:
    """The per-role roll: each ROLL_PHASES entry with the hosts (given order) that have one of its roles."""
    return [(roles, [h for h in hosts if h.has(*roles)]) for roles in ROLL_PHASES]


def phase_label(roles) -> str:
    return ", ".join(role.replace("_", "-") for role in roles)


def changes_version(plan) -> bool:
    """The plan flips `current` (another Airflow version on this host)."""
    return any(step.target == VENV for step, _ in plan.todo)


def unit_phase(step, host) -> int | None:
    """The phase of a step named after one of the host's units (its generation stamp, restart, ready wait)."""
    role = ROLE_OF_UNIT.get(step.target.split(":")[0])
    return PHASE_OF_ROLE[role] if role and host.has(role) else None


def split_by_phase(plan) -> dict:
    """The host's plan in one part per phase it has a role in (phase index -> part). A unit's steps go to
    its phase; the rest (`current`, unit files, units of roles it does not have) to the first part."""
    parts: dict = {}
    for step, change in plan.planned:
        parts.setdefault(unit_phase(step, plan.host), []).append((step, change))
    common = parts.pop(None, [])
    first = min(parts)
    return {i: replace(plan, planned=(common if i == first else []) + steps,
                       part=phase_label(r for r in ROLL_PHASES[i] if plan.host.has(r)))
            for i, steps in sorted(parts.items())}


def roll_plans(run, plans) -> list:
    """The plans in roll order: per role across hosts when a version changes, else per host (module doc)."""
    if not any(changes_version(p) for p in plans):
        by_name = {p.host.name: p for p in plans}
        return [by_name[h.name] for h in roll_order(run, [p.host for p in plans])]
    parts = {p.host.name: split_by_phase(p) for p in plans}
    return [parts[h.name][i] for i, (_, hosts) in enumerate(phase_hosts([p.host for p in plans])) for h in hosts]


def venv_step(version: str) -> Link:
    """`current` -> this version's venv; flipping it restarts every Airflow unit of the host."""
    return Link(VENV, source=venv_dir(version), notify=("airflow",))


def generation_step(unit: str, version: str) -> Command:
    """Notifies `unit` when the config/install it started with differs from the files.

    A stamp per unit on the host (not a flag in memory), written with the unit's restart: `inv
    airflow.deploy` followed later by `inv services.deploy`, a run that failed between the two, or a
    version roll stopped before the unit's phase still restarts it. The install read is `version`'s venv
    (what `current` points at once this component ran).
    """
    cfg, env, celery = GENERATION_INPUTS
    digest = f"cat {cfg} {env} {venv_dir(version)}/{INSTALL_STAMP} {celery} 2>/dev/null | sha256sum | cut -c1-64"
    stamp = f"{GENERATION_STAMP}.{unit}"
    return Command(f"{unit}:generation", desc="config or install changed since the unit started",
                   unless=f"[ \"$(cat {stamp} 2>/dev/null)\" = \"$({digest})\" ]",
                   script=f"{digest} > {stamp}", notify=(unit,))


def steps(ctx) -> list:
    values = unit_values(ctx)
    version = ctx.inv.settings.airflow_version
    files, services = [venv_step(version)], []
    for role, unit in UNITS.items():
        if ctx.host.has(role):
            files.append(generation_step(unit, version))
            files.append(File(f"/etc/systemd/system/{unit}.service",
                              render(f"airflow/units/{unit}.service.j2", **values),
                              notify=("daemon-reload", unit)))
            services.append(Service(unit, listen=("airflow",)))
        else:
            services.append(Service(unit, present=False))
    if ctx.host.has("api_server"):
        services.append(api_ready_step(ctx))
    if ctx.host.has("worker"):
        services.append(worker_ready_step())
    return files + services


def worker_ready_step(timeout=180) -> Command:
    """After the worker (re)started, wait for Celery's "ready." line: it then consumes tasks."""
    since = "$(systemctl show -p ActiveEnterTimestamp --value airflow-worker)"
    return Command(Service.started(UNITS["worker"]), desc=f"wait until the celery worker is ready (<= {timeout}s)",
                   only_if_notified=True,
                   script=(f"for i in $(seq {timeout}); do journalctl -u airflow-worker --no-pager -q "
                           f"--since \"{since}\" | grep -q ' ready\\.' && exit 0; sleep 1; done\n"
                           f"echo 'celery worker not ready after {timeout}s'; exit 1"))


def api_ready_step(ctx, timeout=180) -> Command:
    """After the api-server (re)started, wait until it answers, then warm its Execution API (`warm_script`):
    a deploy ends with a serving cluster, and no task's first request waits on a cold worker."""
    url = f"http://{ctx.address}:{ctx.inv.ports.api}/api/v2/monitor/health"
    return Command(Service.started(UNITS["api_server"]),
                   desc=f"wait until the api-server answers and its Execution API is warm (<= {timeout}s each)",
                   only_if_notified=True,
                   script=(f"ok=0; for i in $(seq {timeout}); do curl -sf -m 2 -o /dev/null {url} && {{ ok=1; break; }}; "
                           "sleep 1; done\n"
                           f"[ $ok = 1 ] || {{ echo 'api-server not answering {url} after {timeout}s'; exit 1; }}\n"
                           + warm_script(execution_health_url(ctx.run, ctx.host), ctx.settings.api_workers)))


#: warm_script: rounds of 2 requests per uvicorn worker at once, until WARM_ROUNDS rounds in a row answer
#: each within WARM_ANSWER s (a cold worker's first request takes seconds), within WARM_TIMEOUT s
WARM_ROUNDS, WARM_ANSWER, WARM_TIMEOUT = 3, 1, 180


def execution_health_url(run, host) -> str:
    """The api-server's Execution API on `host` (its own address: no nginx in between)."""
    return f"http://{run.addresses[host.name]}:{run.inv.ports.api}/execution/health"


def warm_script(url: str, workers: int) -> str:
    """Shell: make every uvicorn worker of a (re)started api-server build its Execution API before real
    traffic reaches it; exit 1 (saying so) if it does not answer promptly within WARM_TIMEOUT s.

    Airflow's Execution API is a Cadwyn app, which generates its versioned routers on its *first* request,
    in each worker process, on the event loop: the lab's py-spy dumps showed `Cadwyn._cadwyn_initialize`
    blocking a worker 6 s idle and up to 33 s while a roll restarted other units. Every request to that worker
    waited meanwhile, the health checks of every keepalived among them, so in the rolling change the VIP
    vanished for ~25 s (README "Tests"). A worker busy building does not accept, so concurrent requests reach
    the cold ones; rounds go on until WARM_ROUNDS in a row answer promptly (workers share one socket, so
    this is very likely, not certain, to have reached each of them)."""
    n = max(2, 2 * workers)
    return (f"w=$(mktemp); good=0; end=$(( $(date +%s) + {WARM_TIMEOUT} ))\n"
            f"while [ \"$(date +%s)\" -lt \"$end\" ]; do\n"
            f"  for i in $(seq {n}); do curl -s -o /dev/null -m 120 -w '%{{http_code}} %{{time_total}}\\n' {url} & "
            "done > \"$w\"\n"
            "  wait\n"
            f"  if [ \"$(awk '$1 == 200 && $2 < {WARM_ANSWER}' \"$w\" | wc -l)\" -eq {n} ]; then good=$((good + 1)); "
            f"[ $good -ge {WARM_ROUNDS} ] && {{ rm -f \"$w\"; exit 0; }}\n"
            "  else good=0; sleep 1; fi\n"
            "done\n"
            f"rm -f \"$w\"; echo 'Execution API {url} not answering promptly after {WARM_TIMEOUT}s'; exit 1")


MIN_UP = 10   # seconds a restarted unit must stay active (not crash-looping) before the roll goes on
#: a worker active longer was not restarted by this roll step (a per-role roll gates a host's api-server
#: while its old worker runs): its "ready." line may have left the journal, so it is not asked for
READY_WINDOW = 900


def active_since(unit: str) -> str:
    """Shell: the unit's ActiveEnterTimestamp into $t, its seconds since into $a."""
    return (f"t=$(systemctl show -p ActiveEnterTimestamp --value {unit})\n"
            "a=$(( $(date +%s) - $(date -d \"$t\" +%s 2>/dev/null || date +%s) ))\n")


def api_health_url(run, host) -> str:
    """The api-server's own health URL on `host` (the gate and the settle after a take-back ask it)."""
    return f"http://{run.addresses[host.name]}:{run.inv.ports.api}/api/v2/monitor/health"


def gate_script(run, host) -> str:
    """One round trip: each Airflow unit's state and seconds since it became active, the api-server's
    health answer on its own address, the worker's Celery "ready." since its start (a recent start only)."""
    lines = []
    for role, unit in UNITS.items():
        if host.has(role):
            lines.append(f"{active_since(unit)}"
                         f"echo \"@@unit {unit} $(systemctl show -p ActiveState --value {unit}) $a\"")
    if host.has("api_server"):
        url = api_health_url(run, host)
        lines.append(f"echo \"@@api $(curl -s -m 4 -o /dev/null -w '%{{http_code}}' {url})\"")
    if host.has("worker"):
        lines.append(f"{active_since('airflow-worker')}[ \"$a\" -gt {READY_WINDOW} ] || "
                     "echo \"@@ready $(journalctl -u airflow-worker --no-pager -q --since \"$t\" | grep -c ' ready\\.')\"")
    return "\n".join(lines)


def drained_in_rolls(inv, host) -> bool:
    """An api-server host whose restarts are drained from nginx first: others serve meanwhile."""
    return host.has("api_server") and len(inv.with_role("api_server")) > 1


def before_restart(run, host, units):
    """Restarting an api-server while others serve: every nginx stops sending it requests first, so no
    request waits on a stopping or still-loading api-server (uvicorn with 2+ workers binds its port
    before the app is loaded). `after_restart` takes it back once its gate passed."""
    if UNITS["api_server"] not in units or not drained_in_rolls(run.inv, host):
        return None
    return (f"drain: every nginx stops sending requests to this api-server "
            f"({len([h for h in run.inv.hosts.values() if nginx.runs_nginx(h)])} nginx hosts)",
            lambda: nginx.set_drained(run, host, True))


#: after an api-server is taken back: it must answer its health URL this many times in a row, each within
#: SETTLE_ANSWER s, SETTLE_PAUSE s apart (within SETTLE_TIMEOUT s), before the roll drains the next one
SETTLE_ANSWERS, SETTLE_ANSWER, SETTLE_PAUSE, SETTLE_TIMEOUT = 4, 2, 2, 240


def settle_script(url: str) -> str:
    """Shell: exit 0 once `url` answered SETTLE_ANSWERS times in a row promptly; else say so, exit 1."""
    return (f"n=0; end=$(( $(date +%s) + {SETTLE_TIMEOUT} ))\nwhile [ \"$(date +%s)\" -lt \"$end\" ]; do\n"
            f"  if curl -sf -m {SETTLE_ANSWER} -o /dev/null {url}; then n=$((n + 1)); [ $n -ge {SETTLE_ANSWERS} ] "
            "&& exit 0\n"
            f"  else n=0; fi\n  sleep {SETTLE_PAUSE}\ndone\n"
            f"echo 'api-server did not answer {SETTLE_ANSWERS} times in a row (each within {SETTLE_ANSWER}s) "
            f"within {SETTLE_TIMEOUT}s of being taken back'; exit 1")


def after_restart(run, host) -> str | None:
    """Its Execution API warmed first (`warm_script`: already warm after a deploy's `api_ready_step`, built
    here after a drill's restart), every nginx sends the restarted api-server requests again; then the roll
    waits until it answers
    promptly several times in a row with that traffic on it, so the next api-server is drained only once
    this one serves warm. On the 2-core lab, an api-server taken back the moment its health URL first
    answered stalled 22 s on its first requests while the next host restarted its units (every request of
    the cluster then waited on it): a trigger timed out and the VIP moved."""
    warm = run.remote(host.name).sh(warm_script(execution_health_url(run, host),
                                                run.inv.settings_for(host).api_workers), timeout=WARM_TIMEOUT + 30)
    if not warm.ok:
        return warm.out.strip()[-200:] or f"exit {warm.rc}"
    why = nginx.set_drained(run, host, False)
    if why:
        return why
    url = api_health_url(run, host)
    res = run.remote(host.name).sh(settle_script(url), timeout=SETTLE_TIMEOUT + 30)
    return None if res.ok else (res.out.strip()[-200:] or f"exit {res.rc}")


def gate(run, host) -> str | None:
    """Rolling restarts go on only when this host's Airflow units are up for MIN_UP s, its api-server
    answers its own health URL (HTTP 200) and its worker is ready; else why not."""
    return gate_verdict(run.remote(host.name).sh(gate_script(run, host), timeout=30).out)


def gate_verdict(out: str) -> str | None:
    """The gate's answer from `gate_script` output: None when healthy, else every problem."""
    bad = []
    for line in out.splitlines():
        tag, _, rest = line.partition(" ")
        words = rest.split()
        if tag == "@@unit":
            unit, state, age = [*words, "?", "?", "0"][:3]
            if state != "active":
                bad.append(f"{unit} {state}")
            elif not age.lstrip("-").isdigit() or int(age) < MIN_UP:
                bad.append(f"{unit} active for {age}s only (< {MIN_UP}s)")
        elif tag == "@@api" and words[:1] != ["200"]:
            bad.append(f"api-server health: HTTP {words[0] if words else 'no answer'}")
        elif tag == "@@ready" and words[:1] in ([], ["0"]):
            bad.append("celery worker not ready")
    return "; ".join(bad) or None


class Services(Component):
    """The Airflow units; rolls per host, or per role across hosts on a version change."""

    name = NAME
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    roll_order = staticmethod(roll_order)
    roll_plans = staticmethod(roll_plans)
    before_restart = staticmethod(before_restart)
    after_restart = staticmethod(after_restart)
    gate = staticmethod(gate)

    def units(self, run, host) -> list[str]:
        return [unit for role, unit in UNITS.items() if host.has(role)]


COMPONENT = Services()
