"""systemd units for the Airflow processes, only on hosts with the matching role.

Type=simple (Airflow never calls sd_notify), Restart=always, secrets via EnvironmentFile. A unit
restarts when its own file, airflow.cfg, airflow.env or the install changed (notification "airflow"
from the airflow component). A role removed from a host stops and disables its unit.

Versions (issue 16): every unit runs /opt/airflow/venvs/current; the first step here points `current`
at the inventory's `airflow_version` venv. It is applied with the host's restarts, so on a running
cluster it flips host by host, each host just before its units restart, in Airflow's upgrade order
(`roll_order`): api-server hosts first (drained from every nginx), then triggerers/dag-processors,
workers (a restart is Celery's warm shutdown: running tasks finish), schedulers; each health-gated.
A host is placed by its earliest role in that order (a host with an api-server and a worker rolls with
the api-servers).
"""

from __future__ import annotations

from . import nginx
from .airflow import INSTALL_STAMP, ROLES, VENV, venv_dir
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
    ports = ctx.inv.cluster["ports"]
    return {
        "venv": VENV, "hostname": ctx.host.name, "listen_address": ctx.address,
        "api_port": ports["api"], "flower_port": ports["flower"],
        "api_workers": ctx.var("api_workers"), "worker_concurrency": ctx.var("worker_concurrency"),
        "worker_queues": ",".join(ctx.var("worker_queues")),
        "worker_stop_timeout": ctx.inv.cluster["worker_stop_timeout"],
        "airflow_home": "/var/lib/airflow",
        # hosts running nginx (local-only ones included) whose X-Forwarded-* headers uvicorn trusts
        "trusted_proxies": ",".join(["127.0.0.1"] + [ctx.run.addresses[h.name] for h in ctx.inv.hosts.values()
                                                     if nginx.runs_nginx(h)]),
    }


#: what every Airflow process reads at start; a change on the host restarts them (even across runs)
GENERATION_INPUTS = ("/etc/airflow/airflow.cfg", "/etc/airflow/airflow.env",
                     "/var/lib/airflow/config/airflow_ha_celery_config.py")
GENERATION_STAMP = "/var/lib/airflow/.airflow-ha-generation"
#: Airflow's upgrade order (installation/upgrading.rst): a host rolls with the first group it has a role of
ROLL_TIERS = (("api_server",), ("triggerer", "dag_processor"), ("worker",), ("scheduler",))


def tier(host) -> int:
    return next((i for i, roles in enumerate(ROLL_TIERS) if host.has(*roles)), len(ROLL_TIERS))


def roll_order(run, hosts) -> list:
    """api-server hosts, then triggerer/dag-processor hosts, workers, schedulers (inventory order within)."""
    return sorted(hosts, key=tier)


def venv_step(version: str) -> Link:
    """`current` -> this version's venv; flipping it restarts every Airflow unit of the host."""
    return Link(VENV, source=venv_dir(version), notify=("airflow",))


def generation_step(version: str = "") -> Command:
    """Notifies "airflow" when the config/install the running services started with differs from the files.

    A stamp on the host (not a flag in memory) so that `inv airflow.deploy` followed later by
    `inv services.deploy`, or a run that failed between the two, still restarts the services. The install
    read is the one of `version`'s venv (what `current` points at once this component ran).
    """
    cfg, env, celery = GENERATION_INPUTS    # the install second-last: the digest of earlier releases' order
    inputs = [cfg, env, f"{venv_dir(version) if version else VENV}/{INSTALL_STAMP}", celery]
    digest = f"cat {' '.join(inputs)} 2>/dev/null | sha256sum | cut -c1-64"
    return Command("config generation", desc="config or install changed since the services started",
                   unless=f"[ \"$(cat {GENERATION_STAMP} 2>/dev/null)\" = \"$({digest})\" ]",
                   script=f"{digest} > {GENERATION_STAMP}", notify=("airflow",))


def steps(ctx) -> list:
    values = unit_values(ctx)
    version = ctx.inv.cluster["airflow_version"]
    files, services = [venv_step(version), generation_step(version)], []
    for role, unit in UNITS.items():
        if ctx.host.has(role):
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
    return Command("airflow-worker:started", desc=f"wait until the celery worker is ready (<= {timeout}s)",
                   only_if_notified=True,
                   script=(f"for i in $(seq {timeout}); do journalctl -u airflow-worker --no-pager -q "
                           f"--since \"{since}\" | grep -q ' ready\\.' && exit 0; sleep 1; done\n"
                           f"echo 'celery worker not ready after {timeout}s'; exit 1"))


def api_ready_step(ctx, timeout=180) -> Command:
    """After the api-server (re)started, wait until it answers: a deploy ends with a serving cluster."""
    url = f"http://{ctx.address}:{ctx.inv.cluster['ports']['api']}/api/v2/monitor/health"
    return Command("airflow-api-server:started", desc=f"wait until the api-server answers (<= {timeout}s)",
                   only_if_notified=True,
                   script=(f"for i in $(seq {timeout}); do curl -sf -m 2 -o /dev/null {url} && exit 0; sleep 1; done\n"
                           f"echo 'api-server not answering {url} after {timeout}s'; exit 1"))


MIN_UP = 10   # seconds a restarted unit must stay active (not crash-looping) before the roll goes on


def gate_script(run, host) -> str:
    """One round trip: each Airflow unit's state and seconds since it became active, the api-server's
    health answer on its own address, the worker's Celery "ready." since its start."""
    lines = []
    for role, unit in UNITS.items():
        if host.has(role):
            lines.append(f"t=$(systemctl show -p ActiveEnterTimestamp --value {unit})\n"
                         f"echo \"@@unit {unit} $(systemctl show -p ActiveState --value {unit}) "
                         f"$(( $(date +%s) - $(date -d \"$t\" +%s 2>/dev/null || date +%s) ))\"")
    if host.has("api_server"):
        url = f"http://{run.addresses[host.name]}:{run.inv.cluster['ports']['api']}/api/v2/monitor/health"
        lines.append(f"echo \"@@api $(curl -s -m 4 -o /dev/null -w '%{{http_code}}' {url})\"")
    if host.has("worker"):
        lines.append("t=$(systemctl show -p ActiveEnterTimestamp --value airflow-worker)\n"
                     "echo \"@@ready $(journalctl -u airflow-worker --no-pager -q --since \"$t\" | grep -c ' ready\\.')\"")
    return "\n".join(lines)


def before_restart(run, host, units):
    """Restarting an api-server while others serve: every nginx stops sending it requests first, so no
    request waits on a stopping or still-loading api-server (uvicorn with 2+ workers binds its port
    before the app is loaded). `after_restart` takes it back once its gate passed."""
    if UNITS["api_server"] not in units or len(run.inv.with_role("api_server")) < 2:
        return None
    return (f"drain: every nginx stops sending requests to this api-server "
            f"({len([h for h in run.inv.hosts.values() if nginx.runs_nginx(h)])} nginx hosts)",
            lambda: nginx.set_drained(run, host, True))


def after_restart(run, host) -> str | None:
    """The restarted api-server answers its health URL: every nginx sends it requests again."""
    return nginx.set_drained(run, host, False)


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
            unit, state, age = (words + ["?", "?", "0"])[:3]
            if state != "active":
                bad.append(f"{unit} {state}")
            elif not age.lstrip("-").isdigit() or int(age) < MIN_UP:
                bad.append(f"{unit} active for {age}s only (< {MIN_UP}s)")
        elif tag == "@@api" and words[:1] != ["200"]:
            bad.append(f"api-server health: HTTP {words[0] if words else 'no answer'}")
        elif tag == "@@ready" and words[:1] in ([], ["0"]):
            bad.append("celery worker not ready")
    return "; ".join(bad) or None
