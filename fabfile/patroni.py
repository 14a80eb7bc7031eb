"""PostgreSQL under Patroni (the `postgres` role on >= 2 hosts): no single point of failure for the database.

`fabfile/postgres.py` delegates here in Patroni mode (`pgsql.patroni_mode`); one host keeps the single mode untouched.

* Packages: Debian/Ubuntu `patroni` (+ python3-etcd, the client library its etcd3 DCS imports) and the
  distribution's PostgreSQL; EL9: postgresql15-server from PGDG (repo pgdg15), patroni + patroni-etcd from
  PGDG's pgdg-rhel9-extras, their Python dependencies from EPEL (`check_repos`, before any change).
* Config: written by us, not by pg_createconfig_patroni (whose /etc/patroni/dcs.yml points at ZooKeeper).
  Debian's `patroni@.service` runs `/usr/bin/patroni /etc/patroni/%i.yml` as postgres, so instance
  `15-main` reads /etc/patroni/15-main.yml (mode 0600 postgres: it holds the superuser, replication,
  rewind and REST API passwords, generated in the secrets file). The pg-common layout stays (data
  /var/lib/postgresql/15/main, config_dir /etc/postgresql/15/main, where Patroni renames Debian's
  postgresql.conf to postgresql.base.conf and includes it); start.conf says `manual`, so the
  postgresql@15-main unit never starts the cluster behind Patroni's back. EL9: `patroni.service`,
  /etc/patroni/patroni.yml, data /var/lib/pgsql/15/data.
* DCS: etcd v3 (`etcd3:`, fabfile/etcd.py). Timing ttl/loop_wait/retry_timeout from `cluster.postgres`
  (validated: loop_wait + 2*retry_timeout <= ttl). `synchronous_mode` (default on) and `use_pg_rewind`.
* Who bootstraps: one host, the "seed": the host whose data dir already holds a database beyond the
  templates (conversion from single mode), else the first postgres host. The others wait for a leader
  before their Patroni starts, then join as replicas by pg_basebackup: no race for the initialize key.
* Conversion (single -> Patroni): on the seed, the replication/rewind roles and the superuser password are
  created while the old postgresql@15-main still runs, then it stops and Patroni starts on the same data
  dir. With no cluster in the DCS, Patroni takes the initialize key with the data dir's system id and
  runs it as the leader (Patroni docs "Convert a Standalone to a Patroni Cluster"). A data dir holding
  a database is never removed or initdb'd over; only the empty cluster the Debian package creates on
  install is dropped (and `create_main_cluster = false` keeps the package from creating it at all).
* After the component: `finalize` (on the leader) brings the DCS's dynamic config in line with the
  inventory (patronictl edit-config; a takeover does not write bootstrap.dcs) and creates the airflow
  role and database, as single mode does.
* Restarts: config changes reload Patroni (SIGHUP, ExecReload): no failover, no downtime. The gate
  waits until the member runs and the cluster has a leader.
"""

from __future__ import annotations

import json
import shlex

from . import etcd, repository
from .core.component import Check
from .core.errors import PreconditionError, UserError
from .core.protocol import early_probe_script
from .core.steps import Command, Directory, File, Service
from .pgsql import DB, USER, create_sql, max_connections, names

REPLICATION_USER = "replicator"
REWIND_USER = "rewind"
#: EL9: repositories (dnf repo ids) the packages come from; missing ones stop the run before any change
REPOS_EL9 = {"pgdg15": "PostgreSQL 15 (PGDG)", "pgdg-rhel9-extras": "patroni, patroni-etcd, etcd (PGDG extras)",
             "epel": "Patroni's Python dependencies (EPEL)"}
#: the database OIDs of a cluster fresh from initdb (PostgreSQL 15: template1, template0, postgres)
TEMPLATE_OIDS = "1|4|5"
#: replica lag (bytes behind the leader, Patroni's /cluster `lag`): warn at Patroni's
#: maximum_lag_on_failover (1 MiB, files/patroni/patroni.yml.j2: beyond it the replica is no failover
#: candidate); fail at 64 MiB (a replica that far behind is not keeping up)
LAG_WARN_BYTES = 1024 * 1024
LAG_FAIL_BYTES = 64 * 1024 * 1024


def scope(inv) -> str:
    return inv.settings.name


def conf_path(plat) -> str:
    return names(plat).patroni_conf


def api_url(run, host, path: str = "") -> str:
    return f"http://{run.addresses[host.name]}:{run.inv.ports.patroni_api}/{path.lstrip('/')}"


def dcs_parameters(inv) -> list[tuple[str, str]]:
    return [("max_connections", str(max_connections(inv))), ("wal_level", "replica"), ("hot_standby", "'on'"),
            ("wal_log_hints", "'on'"), ("max_wal_senders", "10"), ("max_replication_slots", "10")]


def config(ctx) -> str:
    from .core.templates import render
    inv, run, pgn = ctx.inv, ctx.run, names(ctx.platform)
    pg, ports, s = inv.settings.postgres, inv.ports, ctx.secrets
    return render(
        "patroni/patroni.yml.j2", user=pgn.user, scope=scope(inv), member=ctx.host.name,
        address=ctx.address, api_port=ports.patroni_api, api_password=s["patroni_api_password"],
        etcd_hosts=etcd.endpoints(run), ttl=pg.ttl, loop_wait=pg.loop_wait,
        retry_timeout=pg.retry_timeout, synchronous_mode=pg.synchronous_mode,
        dcs_parameters=dcs_parameters(inv), port=ports.postgres, data_dir=pgn.patroni_data,
        bin_dir=pgn.bin_dir, config_dir=pgn.patroni_conf_dir, pgpass=pgn.pgpass,
        superuser_password=s["patroni_superuser_password"], replication_user=REPLICATION_USER,
        replication_password=s["patroni_replication_password"], rewind_user=REWIND_USER,
        rewind_password=s["patroni_rewind_password"], db_name=DB, db_user=USER,
        pg_peers=[(h.name, run.addresses[h.name]) for h in inv.with_role("postgres")],
        peers=sorted(run.addresses.items()), archive=repository.archive_settings(inv))


def seed(run):
    """The host that may bootstrap (or take over its data): what `prepare` found, else the first postgres host."""
    name = run.data.get("patroni_seed")
    return run.inv.hosts[name] if name else run.inv.with_role("postgres")[0]


def answers_primary(run, host, seconds: int) -> str:
    """Shell test: `host`'s REST API answers /primary with 200 (it leads), asked with a `seconds` timeout."""
    return f"[ \"$(curl -s -m {seconds} -o /dev/null -w '%{{http_code}}' {api_url(run, host, 'primary')})\" = 200 ]"


def any_leader(run) -> str:
    """Shell that succeeds when some member's REST API answers /primary with 200 (a leader exists)."""
    return " || ".join(answers_primary(run, h, 2) for h in run.inv.with_role("postgres"))


def holds_database(data: str) -> str:
    """Shell: succeeds when `data` is a cluster holding a database beyond the templates (never drop it)."""
    return f"ls {data}/base 2>/dev/null | grep -qvxE '{TEMPLATE_OIDS}'"


def steps(ctx) -> list:
    inv, plat, host, run = ctx.inv, ctx.platform, ctx.host, ctx.run
    pg = names(plat)
    unit, user = pg.patroni_unit, pg.user
    conf, data = conf_path(plat), pg.patroni_data
    port = inv.ports.postgres
    old = pg.instance_unit
    out = []
    if plat.family == "debian":
        version = data.rstrip("/").split("/")[-2]
        out += [
            # the package's empty cluster (created on install) would hold the data dir Patroni needs; a
            # cluster that holds a database (the conversion's seed) is never dropped
            Command("drop empty cluster", desc=f"pg_dropcluster --stop {version} main (empty, made by the package)",
                    unless=f"[ ! -f {data}/PG_VERSION ] || [ -f {conf} ] || {holds_database(data)}",
                    script=(f"pg_dropcluster --stop {version} main\n"
                            f"install -d -o {user} -g {user} -m 755 {pg.patroni_conf_dir}")),
            Directory(pg.patroni_conf_dir, owner=user, group=user, mode=0o755),
            # Patroni 3.0.2 renames postgresql.conf to postgresql.base.conf on its first write and
            # crashes (FileNotFoundError) when neither exists: a replica's config dir is empty after the drop
            Command("postgresql.base.conf", desc="empty base config for Patroni to include",
                    unless=(f"[ -e {pg.patroni_conf_dir}/postgresql.conf ] || "
                            f"[ -e {pg.patroni_conf_dir}/postgresql.base.conf ]"),
                    script=f"install -o {user} -g {user} -m 644 /dev/null "
                           f"{pg.patroni_conf_dir}/postgresql.base.conf"),
            File(pg.start_conf, "# Managed by airflow-ha: Patroni starts this cluster, not "
                 "postgresql@.service\nmanual\n", owner=user, group=user, mode=0o644),
        ]
    out += [
        Directory("/etc/patroni", owner="root", group=user, mode=0o750),
        File(conf, config(ctx), owner=user, group=user, mode=0o600, notify=(unit,)),
        # Debian's unit says Restart=no ("inspect the database on failure"); a dead Patroni leaves its
        # PostgreSQL unmanaged (no failover, no demotion): bring it back
        File(f"/etc/systemd/system/{unit}.service.d/airflow-ha.conf",
             "# Managed by airflow-ha (fabfile/patroni.py)\n[Service]\nRestart=on-failure\nRestartSec=5\n",
             notify=("daemon-reload", unit)),
    ]
    if host == seed(run):
        out.append(Command("conversion roles", desc="create replication + rewind roles, set the superuser "
                           "password (before Patroni takes this data dir over)",
                           unless=f"! systemctl is-active -q {old}", script=_roles_sql(ctx, port)))
    else:
        out.append(Command("wait for leader", desc=f"wait until {seed(run).name} (or another member) leads",
                           unless=f"[ -f {data}/PG_VERSION ] || {any_leader(run)}",
                           script=f"for i in $(seq 150); do {any_leader(run)} && exit 0; sleep 2; done\n"
                                  "echo 'no Patroni leader after 300s'; exit 1"))
    out += [
        Command(f"stop {old}", desc=f"stop {old} (Patroni runs this cluster from now on)",
                unless=f"! systemctl is-active -q {old}", script=f"systemctl disable --now {old} 2>/dev/null "
                f"|| systemctl stop {old}"),
        Service(unit, reload_only=True, config=conf),
        archive_mode_step(ctx),
    ]
    return out


def archive_mode_step(ctx) -> Command:
    """archive_mode as the inventory wants it (on with a backup repository): a server-start setting, so the
    member restarts once (`patronictl restart --pending`, rolled like a unit restart). Patroni applies a
    reloaded patroni.yml on its next cycle (<= loop_wait), only then flags the restart: hence the loop.
    Nothing to do while PostgreSQL is down or not yet under Patroni here: it starts with the file's setting."""
    plat, inv = ctx.platform, ctx.inv
    want = dict(repository.archive_settings(inv)).get("archive_mode", "off")
    show = (f"runuser -u {names(plat).user} -- psql -XAtq -p {inv.ports.postgres} -d postgres "
            "-c 'show archive_mode' 2>/dev/null")
    restart = f"patronictl -c {conf_path(plat)} restart --force --pending {scope(inv)} {ctx.host.name}"
    return Command("archive_mode", desc=f"archive_mode {want} in the running server: restart this member "
                   "(patronictl restart --pending)",
                   unless=f"[ ! -e {conf_path(plat)} ] || {{ v=$({show}); [ -z \"$v\" ] || [ \"$v\" = {want} ]; }}",
                   restart=True,
                   script=(f"for i in $(seq 40); do\n"
                           f"  v=$({show})\n"
                           f"  [ \"$v\" = {want} ] && exit 0\n"
                           f"  [ -z \"$v\" ] && [ $i = 1 ] && exit 0   # not running: starts with the file's setting\n"
                           f"  {restart} >/dev/null 2>&1 || true\n"
                           "  sleep 3\n"
                           "done\n"
                           f"echo \"archive_mode still $v: run {restart}\"; exit 1"))


def _roles_sql(ctx, port: int) -> str:
    s, user = ctx.secrets, names(ctx.platform).user

    def pw(key):
        return s[key].replace("'", "''")
    grants = "".join(f"GRANT EXECUTE ON function pg_catalog.{f} TO {REWIND_USER};\n" for f in (
        "pg_ls_dir(text, boolean, boolean)", "pg_stat_file(text, boolean)", "pg_read_binary_file(text)",
        "pg_read_binary_file(text, bigint, bigint, boolean)"))
    return (f"runuser -u {user} -- psql -p {port} -v ON_ERROR_STOP=1 -q <<'__SQL__'\n"
            f"SELECT 'CREATE ROLE {REPLICATION_USER}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{REPLICATION_USER}')\\gexec\n"
            f"ALTER ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD '{pw('patroni_replication_password')}';\n"
            f"SELECT 'CREATE ROLE {REWIND_USER}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{REWIND_USER}')\\gexec\n"
            f"ALTER ROLE {REWIND_USER} WITH LOGIN PASSWORD '{pw('patroni_rewind_password')}';\n"
            f"{grants}"
            f"ALTER ROLE postgres WITH PASSWORD '{pw('patroni_superuser_password')}';\n"
            "__SQL__")


# -- before any change: EL9 repositories; the conversion plan ----------------------------------------------


def check_repos(run, hosts) -> None:
    """EL9 hosts of the Patroni layout must have PGDG (pgdg15, pgdg-rhel9-extras) and EPEL enabled."""
    problems = []
    for host in hosts:
        facts = run.facts.get(host.name)
        if not facts or facts.platform.family != "rhel" or not host.has("postgres", "etcd"):
            continue
        out = run.remote(host.name).sh("dnf repolist --enabled -q 2>/dev/null | awk '{print $1}'", timeout=60).out
        missing = missing_repos(out)
        if missing:
            problems.append(f"{host.name}: {', '.join(missing)}")
    if problems:
        raise PreconditionError(
            f"Patroni on EL9 needs repositories that are not enabled: {'; '.join(problems)}",
            f"{run.inv.path}: hosts (roles postgres/etcd)",
            "install the PGDG repo RPM (pgdg-redhat-repo-latest.noarch.rpm) and epel-release, run "
            "`dnf config-manager --enable pgdg-rhel9-extras`, then deploy again")


def missing_repos(repolist: str) -> list[str]:
    """The REPOS_EL9 entries (with what they provide) absent from `dnf repolist --enabled` output."""
    enabled = {line.split()[0] for line in repolist.splitlines() if line.strip()}
    return [f"{repo} ({why})" for repo, why in REPOS_EL9.items() if repo not in enabled]


STATE_SCRIPT = """c={conf}; d={data}
[ -f "$c" ] && echo patroni=yes || echo patroni=no
if ls "$d/base" 2>/dev/null | grep -qvxE '{oids}'; then echo data=yes; else echo data=no; fi
echo "old=$(systemctl is-active {old} 2>/dev/null | head -1)"
"""


def prepare(run, hosts) -> None:
    """Find the seed and, when a single database is being converted, say so (also with --check).

    Every member is asked at once (one round trip in parallel, not one member after another)."""
    def ask(host):
        plat = run.facts[host.name].platform
        script = STATE_SCRIPT.format(conf=conf_path(plat), data=names(plat).patroni_data, oids=TEMPLATE_OIDS,
                                     old=names(plat).instance_unit)
        try:
            out = run.remote(host.name).sh(script, timeout=30).out
        except Exception:  # an unreachable host is reported by the component itself
            return None
        return dict(line.split("=", 1) for line in out.split() if "=" in line)
    members = [h for h in run.inv.with_role("postgres") if h.name not in run.failed and h.name in run.facts]
    states = {h.name: st for h, st in zip(members, run.parallel(ask, members), strict=True) if st is not None}
    plan = conversion_plan(run.inv, states)
    if plan.get("seed"):
        run.data["patroni_seed"] = plan["seed"]
    for line in plan["lines"]:
        run.say(f"{'cluster':<10} postgres   {line}", always=True)


def conversion_plan(inv, states: dict) -> dict:
    """Pure: {seed, lines} from each postgres host's state {patroni: yes/no, data: yes/no, old: active/...}."""
    if any(s.get("patroni") == "yes" for s in states.values()):
        return {"seed": None, "lines": []}
    holders = [n for n, s in states.items() if s.get("data") == "yes"]
    if len(holders) > 1:
        raise UserError(f"{' and '.join(holders)} both hold a PostgreSQL database and none runs Patroni yet",
                        f"{inv.path}: hosts (role postgres)",
                        "keep the database of one of them (the others' data dirs must be emptied by hand, "
                        "after a backup), then deploy again")
    others = [h.name for h in inv.with_role("postgres") if h.name not in holders]
    if not holders:
        first = inv.with_role("postgres")[0].name
        return {"seed": first, "lines": [f"Patroni: new cluster, {first} bootstraps it, "
                                         f"{', '.join(others[1:] if others[0] == first else others)} join as replicas"]}
    seed_name = holders[0]
    return {"seed": seed_name, "lines": [
        f"CONVERSION to Patroni: {seed_name} keeps its data dir and becomes the leader (no initdb, nothing "
        "copied); " + f"{', '.join(others)} join as replicas by pg_basebackup",
        f"DOWNTIME: the database on {seed_name} stops when Patroni takes over (about 10-30 s until it leads), "
        "then Airflow restarts one host at a time onto the multi-host connection string"]}


# -- after the component: DCS config, airflow role + database (on the leader) ------------------------------


def leader(run):
    """The member whose REST API answers /primary with 200: asked of every member (inventory order) in one
    round trip from the first reachable postgres host; None when none answers 200."""
    members = run.inv.with_role("postgres")
    script = "".join(f"{answers_primary(run, h, 3)} && {{ echo {h.name}; exit 0; }}\n" for h in members) + "exit 0"
    for probe in (h for h in members if h.name not in run.failed):
        try:
            out = run.remote(probe.name).sh(script, timeout=10 + 4 * len(members)).out.strip()
        except Exception:  # an unreachable member asks nothing: the next one does
            continue
        return run.inv.hosts.get(out)
    return None


def dcs_settings(inv) -> dict:
    pg = inv.settings.postgres
    return {"ttl": pg.ttl, "loop_wait": pg.loop_wait, "retry_timeout": pg.retry_timeout,
            "synchronous_mode": pg.synchronous_mode, "postgresql.use_pg_rewind": True,
            "postgresql.parameters.max_connections": max_connections(inv)}


DCS_CHECK = """import json, sys
want = json.loads(sys.argv[1])
have = json.load(sys.stdin)
def get(d, path):
    for k in path.split("."):
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d
sys.exit(0 if all(str(get(have, k)).lower() == str(v).lower() for k, v in want.items()) else 1)
"""


def finalize_steps(run, host) -> list:
    """On the leader: the DCS's dynamic config as the inventory says; the airflow role and database."""
    plat = run.facts[host.name].platform if host.name in run.facts else None
    conf = conf_path(plat) if plat else "/etc/patroni/patroni.yml"
    user = names(plat).user if plat else "postgres"
    want = dcs_settings(run.inv)
    sets = " ".join(f"--set {shlex.quote(f'{k}={str(v).lower()}')}" for k, v in want.items())
    check = (f"curl -s -m 3 {api_url(run, host, 'config')} | "
             f"python3 -c {shlex.quote(DCS_CHECK)} {shlex.quote(json.dumps(want))}")
    port = run.inv.ports.postgres
    password = run.secrets["postgres_password"]
    return [
        Command("dcs config", desc="patronictl edit-config: ttl, loop_wait, retry_timeout, synchronous_mode, "
                "use_pg_rewind, max_connections (restarts members that need it)", unless=check,
                script=(f"patronictl -c {conf} edit-config --force {sets} {scope(run.inv)} >/dev/null\n"
                        "sleep 15\n"
                        f"patronictl -c {conf} restart --force --pending {scope(run.inv)} >/dev/null || true")),
        Command("role+database", desc="create role and database airflow",
                unless=f"PGPASSWORD={shlex.quote(password)} PGCONNECT_TIMEOUT=5 psql -h {run.addresses[host.name]} "
                       f"-p {port} -U airflow -d airflow -tAc 'select 1'",
                script=create_sql(user, password, port)),
    ]


def connect_probe(run, host) -> str:
    """Asked with the facts of the last selected member (the first Airflow host answers Airflow's own
    question: the two ride on different hosts): the probes of `finalize_steps` against that member. The DCS
    config is the same from every member's REST API, and the airflow role and database answer on a
    replica too, so a "done" there means done on the leader."""
    last = next((h for h in reversed(run.hosts) if h.has("postgres")), None)
    return early_probe_script(finalize_steps(run, host)) if last and host.name == last.name else ""


def finalize(run, hosts) -> None:
    """On the leader: finalize_steps. In a run where the postgres component changed nothing, a "done" for
    both steps asked with the facts is enough (no leader lookup, no probe: two round trips saved)."""
    if run.opts.check or not hosts:
        return
    asked_on, text = next(iter(run.answers.pop("postgres", {}).items()), ("", ""))
    changed = any(r.component == "postgres" and r.status == "changed" for r in run.results)
    if asked_on in run.facts and not changed:
        member = run.inv.hosts[asked_on]
        if run.converged_early(member, "postgres", finalize_steps(run, member), text):
            return
    host = leader(run)
    if host is None:
        for h in hosts:
            run.fail_host(h, "postgres", "no Patroni leader after the deploy (see `journalctl -u patroni*`)")
        return
    try:
        run.converge(host, "postgres", finalize_steps(run, host))
    except Exception as exc:
        run.fail_host(host, "postgres", f"finalize on the leader: {exc}")


def gate(run, host) -> str | None:
    """After a reload/restart: this member runs (REST /health 200) and the cluster has a leader."""
    rem = run.remote(host.name)
    code = rem.sh(f"curl -s -m 3 -o /dev/null -w '%{{http_code}}' {api_url(run, host, 'health')}", timeout=10).out
    if code.strip() != "200":
        return f"patroni /health answered {code.strip() or 'nothing'}"
    return None if rem.sh(any_leader(run), timeout=20).ok else "no member answers /primary"


def members(cluster_json: str) -> list[dict]:
    """Patroni's GET /cluster `members` list (name, role, state, lag...), [] if unreadable."""
    try:
        data = json.loads(cluster_json)
    except ValueError:
        return []
    return data.get("members", []) if isinstance(data, dict) else []


# -- `inv health`: the Patroni rows from each member's GET /cluster and /primary answers -------------------
REPLICA_ROLES = ("replica", "sync_standby")
#: a replica's nominal state: "running" up to Patroni 3.0.3 (Debian 12 ships 3.0.2), "streaming" from 3.0.4
REPLICA_STATES = ("running", "streaming")


def patroni_checks(members: list[str], views: dict, primaries: dict, sync_mode: bool) -> list[Check]:
    """Pure: the Patroni rows from each member's answers.

    `views`: host -> its GET /cluster body ("" or missing: no answer); `primaries`: host -> the HTTP code
    of its GET /primary. `members`: the inventory's postgres hosts. Missing data is named, never ok.
    """
    parsed = {h: _members(views.get(h, "")) for h in members}
    answered = {h: m for h, m in parsed.items() if m is not None}
    out = [leader_check(members, answered, primaries)]
    if not answered:
        return out + [Check(h, "patroni member", "fail", "no /cluster answer from any member") for h in members]
    leader = next((h for h in members if primaries.get(h) == "200"), None)
    view = answered.get(leader) or next(iter(answered.values()))
    by_name = {m.get("name"): m for m in view}
    out += [member_check(h, by_name.get(h), h in answered) for h in members]
    out.append(lag_check(view))
    if sync_mode:
        out.append(sync_check(view))
    return out


def _members(body: str) -> list[dict] | None:
    """The `members` list of a /cluster body; None when there was no (JSON object) answer."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        return None
    return [m for m in data["members"] if isinstance(m, dict)]


def leader_check(members: list[str], views: dict, primaries: dict) -> Check:
    """Exactly one member answers /primary 200 and every /cluster view names that same leader."""
    said = [h for h in members if primaries.get(h) == "200"]
    silent = [h for h in members if not primaries.get(h) or primaries.get(h) == "000"]
    named = {m.get("name") for ms in views.values() for m in ms if m.get("role") == "leader"}
    if len(said) > 1 or len(named) > 1:
        return Check("cluster", "patroni leader", "fail", "SPLIT BRAIN: " + (
            f"{' and '.join(said)} all answer /primary 200" if len(said) > 1
            else f"members' views name different leaders: {', '.join(sorted(map(str, named)))}"))
    if not said:
        why = f"; no answer from {', '.join(silent)}" if silent else ""
        return Check("cluster", "patroni leader", "fail", f"no member answers /primary 200{why}")
    if named and named != {said[0]}:
        return Check("cluster", "patroni leader", "fail",
                     f"{said[0]} answers /primary 200 but /cluster names {named.pop()}")
    detail = f"{said[0]}" + (f" (no answer from {', '.join(silent)})" if silent else "")
    return Check("cluster", "patroni leader", "warn" if silent else "ok", detail)


def member_check(host: str, m: dict | None, answered: bool) -> Check:
    """One member's row from the leader's /cluster view (a member missing from it is down)."""
    if m is None:
        return Check(host, "patroni member", "fail", "not in /cluster (Patroni down or never joined)"
                     + ("" if answered else "; its REST API did not answer"))
    role, state, tl = m.get("role"), m.get("state"), m.get("timeline")
    ok = (role == "leader" and state == "running") or (role in REPLICA_ROLES and state in REPLICA_STATES)
    lag = "" if role == "leader" else f", lag {m.get('lag', 'unknown')}"
    return Check(host, "patroni member", "ok" if ok else "fail", f"{role}, {state}, TL {tl}{lag}")


def lag_check(view: list[dict]) -> Check:
    """The worst replica lag (bytes) against LAG_WARN_BYTES / LAG_FAIL_BYTES; "unknown" lag is a warning."""
    replicas = [m for m in view if m.get("role") in REPLICA_ROLES]
    if not replicas:
        return Check("cluster", "replication lag", "fail", "no replica in /cluster")
    unknown = [str(m.get("name")) for m in replicas if not isinstance(m.get("lag"), int)]
    lags = {str(m.get("name")): m["lag"] for m in replicas if isinstance(m.get("lag"), int)}
    worst = max(lags.values(), default=0)
    status = "fail" if worst >= LAG_FAIL_BYTES else "warn" if worst >= LAG_WARN_BYTES or unknown else "ok"
    detail = ", ".join(f"{n} {b} B" for n, b in sorted(lags.items()))
    if unknown:
        detail += (", " if detail else "") + f"lag unknown: {', '.join(unknown)}"
    return Check("cluster", "replication lag", status, detail)


def sync_check(view: list[dict]) -> Check:
    """synchronous_mode: a running sync standby must exist, else commits are not on a second host."""
    syncs = [str(m.get("name")) for m in view if m.get("role") == "sync_standby"
             and m.get("state") in REPLICA_STATES]
    if syncs:
        return Check("cluster", "sync standby", "ok", ", ".join(syncs))
    return Check("cluster", "sync standby", "fail", "none: commits are acknowledged by the leader alone")
