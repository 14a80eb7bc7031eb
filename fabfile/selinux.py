"""SELinux on EL9, left enforcing: the few policy settings the stack needs, as guarded steps.

Components append these (nginx, keepalived, redis, postgres, airflow); on hosts without SELinux (Debian/Ubuntu, or
SELinux disabled) every function returns no steps. Sources: selinux-policy man pages (httpd_selinux,
redis_selinux, postgresql_selinux, unconfined_service_selinux), semanage-port(8), semanage-fcontext(8).

What is needed, and why:

* nginx (httpd_t) proxies to the api-servers (:8080, http_cache_port_t) and Flower (:5555, unlabelled):
  httpd_t may only connect to a few web ports unless the boolean `httpd_can_network_connect` is on.
  Without it every proxied request is a 502 with an AVC denial. → `setsebool -P` (persistent), guarded
  by `getsebool`. A non-standard nginx listen port also needs http_port_t.
* Redis and Sentinel (redis_t) may bind and connect only to redis_port_t, which already holds
  6379 and 26379 (and 16379): only a non-default `ports.redis`/`ports.sentinel` needs
  `semanage port -a -t redis_port_t`. Same for PostgreSQL (postgresql_port_t: 5432, 9898).
  These run before the units start, otherwise the start fails with "Permission denied" on bind.
* Airflow: no custom file contexts. systemd (init_t) runs our units' ExecStart
  `/opt/airflow/venvs/<version>/bin/airflow` (a script; the venv's python is a symlink to /usr/bin/python3.12,
  bin_t). Files under /opt default to usr_t, and usr_t/bin_t are entrypoints of unconfined_service_t,
  the domain systemd gives to services without a policy of their own (unconfined_service_selinux(8):
  "can be entered via the bin_t, usr_t, shell_exec_t file types", default paths include /opt/.*).
  An unconfined service may read its DAGs (/var/lib/airflow, var_lib_t), write its logs
  (/var/log/airflow, var_log_t), read /etc/airflow (etc_t) and bind any port (8080, 8793, 5555).
  What would break it is a wrong label, e.g. a file moved (not copied) from /tmp or a home directory
  keeps tmp_t/user_home_t, or a venv under /srv (var_t: systemd fails with 203/EXEC). Our steps write
  in place (temp file in the target directory, then rename), so labels are inherited correctly; the
  one airflow step below only *checks* that the default labels are in place (`restorecon -n`) and
  restores them if something drifted. Moving the venv or DAG folder elsewhere would need
  `semanage fcontext -a -t usr_t '<dir>(/.*)?'` + `restorecon -R`; we do not, so we add no rules.
"""

from __future__ import annotations

from .core.steps import Command

#: port type -> ports the targeted policy already labels with it (semanage port -l on EL9)
DEFAULT_PORTS = {
    "redis_port_t": {6379, 16379, 26379},
    "postgresql_port_t": {5432, 9898},
    "http_port_t": {80, 81, 443, 488, 8008, 8009, 8443, 9000},
}
AIRFLOW_DIRS = ("/opt/airflow", "/var/lib/airflow", "/var/log/airflow", "/etc/airflow")


def active(ctx) -> bool:
    """SELinux steps apply on platforms that use it, unless it is disabled on this host."""
    return bool(ctx.platform.selinux) and ctx.facts.selinux in ("enforcing", "permissive")


def boolean(name: str, why: str) -> Command:
    return Command(f"selinux {name}", desc=f"setsebool -P {name} 1 ({why})",
                   unless=f"getsebool {name} | grep -q -- '--> on$'",
                   script=f"setsebool -P {name} 1")


def port_label(port: int, type_: str, why: str) -> list:
    """`semanage port` for a port the policy does not label with `type_` yet (none for default ports)."""
    if port in DEFAULT_PORTS.get(type_, ()):
        return []
    listed = f"semanage port -l | awk '$1 == \"{type_}\" && $2 == \"tcp\"' | grep -qE '[ ,]{port}(,|$)'"
    return [Command(f"selinux port {port}", desc=f"label tcp/{port} {type_} ({why})", unless=listed,
                    # -a fails if another type already owns the port: then modify that record
                    script=f"semanage port -a -t {type_} -p tcp {port} 2>/dev/null "
                           f"|| semanage port -m -t {type_} -p tcp {port}")]


def steps_for_nginx(ctx) -> list:
    if not active(ctx):
        return []
    ports = ctx.inv.ports
    out = [boolean("httpd_can_network_connect", "nginx → api-servers and Flower")]
    out += port_label(ports.http, "http_port_t", "nginx listen")
    if ctx.inv.settings.tls.enabled:
        out += port_label(ports.https, "http_port_t", "nginx listen")
    return out


def steps_for_keepalived(ctx) -> list:
    """The track script runs in keepalived_t, which may not connect to nginx's port without this boolean."""
    if not active(ctx):
        return []
    return [boolean("keepalived_connect_any", "track script → local nginx")]


def steps_for_redis(ctx) -> list:
    if not active(ctx):
        return []
    ports, out = ctx.inv.ports, []
    if ctx.host.has("redis"):
        out += port_label(ports.redis, "redis_port_t", "redis-server")
    if ctx.host.has("sentinel"):
        out += port_label(ports.sentinel, "redis_port_t", "redis-sentinel")
    return out


def steps_for_postgres(ctx) -> list:
    if not active(ctx):
        return []
    return port_label(ctx.inv.ports.postgres, "postgresql_port_t", "postgresql")


def steps_for_airflow(ctx) -> list:
    if not active(ctx):
        return []
    dirs = " ".join(AIRFLOW_DIRS)
    return [Command("selinux labels", desc="default file contexts on the venv, DAG, log and config folders",
                    unless=f"[ -z \"$(restorecon -Rn -v {dirs} 2>/dev/null)\" ]",
                    script=f"restorecon -R -v {dirs}")]
