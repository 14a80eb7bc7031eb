"""The backup commands over a running cluster: `inv backup`, `inv backup.list`, `inv restore`.

The pgBackRest component (fabfile/backup.py) converges what they use; these open the inventory (checked
against every component, fabfile/components.py) and drive the repository host or the primary. The restore
stops and starts Airflow and waits for a healthy cluster, so it lives here, not in the component.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from datetime import datetime

from . import etcd, patroni, pgsql
from .airflow import CLI, HOME, VENV
from .backup import SERVICE, TYPES, backup_runner, enabled, info_from, mode, table, utc_time
from .components import load_inventory
from .core.errors import UserError
from .core.runner import Options, Run, fail
from .drills import Drill
from .repository import STANZA
from .services import UNITS


def _open(inventory):
    inv = load_inventory(inventory)
    if not enabled(inv):
        raise UserError("no backup repository in the inventory", f"{inv.path}: hosts / cluster.backup",
                        "give one host the 'backup' role, or set cluster.backup.repo_path or S3 (README \"Backups\")")
    run = Run(inv, list(inv.hosts.values()), Options(quiet=True, silent=True))
    run.connect()
    return run


def backup_now(inventory=None, kind: str = "full") -> int:
    """`inv backup`: one backup now (as the timers do), then the list."""
    if kind not in TYPES:
        print(f"error: --type must be one of {', '.join(TYPES)}", file=sys.stderr)
        return 2
    try:
        run = _open(inventory)
    except UserError as exc:
        fail(exc)
    try:
        host = backup_runner(run)
        t0 = time.monotonic()
        res = run.remote(host.name).sh(f"systemctl start {SERVICE}{kind}.service", timeout=6 * 3600)
        if not res.ok:
            log = run.remote(host.name).sh(f"journalctl -u {SERVICE}{kind}.service -n 20 --no-pager", timeout=30).out
            print(run.mask(f"error: {kind} backup failed on {host.name}:\n{log}"), file=sys.stderr)
            return 1
        print(f"{kind} backup done on {host.name} in {time.monotonic() - t0:.0f}s")
        print(table(info_from(run, host)))
        return 0
    finally:
        run.close()


def list_backups(inventory=None) -> int:
    try:
        run = _open(inventory)
        try:
            print(table(info_from(run, backup_runner(run))))
        finally:
            run.close()
    except UserError as exc:
        fail(exc)
    return 0


def restore(inventory=None, target: str | None = None, yes: bool = False) -> int:
    """`inv restore`: the plan without --yes; with it, the whole restore (see restore_plan)."""
    try:
        run = _open(inventory)
    except UserError as exc:
        fail(exc)
    try:
        if target:
            target_epoch(target)
        leader = _leader_name(run)
        info = info_from(run, backup_runner(run) if mode(run.inv) == "host" else run.inv.hosts[leader])
        plan = restore_plan(run.inv, info, target, leader)
        for line in plan:
            print(f"  {line}")
        if not yes:
            print("nothing done: run again with --yes to restore")
            return 0
        t0 = time.monotonic()
        Restore(run, leader, with_offset(target), backup_set(info, target)).execute()
        print(f"restore done in {time.monotonic() - t0:.0f}s")
        return 0
    except UserError as exc:
        fail(exc)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        run.close()


def _leader_name(run) -> str:
    if not pgsql.patroni_mode(run.inv):
        return run.inv.with_role("postgres")[0].name
    host = patroni.leader(run)
    return host.name if host else run.inv.with_role("postgres")[0].name


TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}(:?\d{2})?)?$")


def target_epoch(target: str) -> float:
    """The restore target as epoch seconds (no offset = UTC, as the lab's and our default server timezone)."""
    if not TIME_RE.match(target):
        raise UserError(f"--time {target!r} is not 'YYYY-MM-DD HH:MM:SS[+HH]'", "inv restore --time",
                        "e.g. --time \"2026-05-01 13:45:00+00\"")
    text = target if re.search(r"[+-]\d{2}(:?\d{2})?$", target) else target + "+00"
    text = re.sub(r"([+-]\d{2})$", r"\1:00", text)
    return datetime.fromisoformat(text).timestamp()


def restore_plan(inv, info: dict, target: str | None, leader: str | None) -> list[str]:
    """What `inv restore` will do and destroy (printed without --yes). Raises when nothing can be restored."""
    good = [b for b in info["backups"] if not b.error]
    if not good:
        raise UserError("the repository holds no successful backup", "pgbackrest info", "run `inv backup` first")
    if target and target_epoch(target) < min(b.stop for b in good):
        raise UserError(f"--time {target} is before the oldest backup ended ({utc_time(min(b.stop for b in good))} UTC)",
                        "inv restore --time", "pick a later time (see `inv backup.list`)")
    airflow = [h.name for h in inv.hosts.values() if h.has("api_server", "scheduler", "dag_processor", "triggerer",
                                                                "worker", "flower")]
    pg = [h.name for h in inv.with_role("postgres")]
    what = f"to {target} (UTC unless an offset is given)" if target else "to the end of the WAL archive (latest)"
    lines = [f"restore the metadata database {what}",
             f"STOP Airflow on {', '.join(airflow)} (running tasks are killed)",
             f"DESTROY every change made after the target on {leader or pg[0]} (its data dir is rewritten, "
             "--delta)"]
    if pgsql.patroni_mode(inv):
        others = [p for p in pg if p != leader]
        lines += [f"DESTROY the data dirs of {', '.join(others)}: they are re-created from {leader} (pg_basebackup)",
                  "Patroni's cluster state in etcd is reset (dynamic configuration kept); Patroni takes the restored "
                  "data dir over"]
    lines += ["then: airflow db check, the fernet key decrypts connections/variables, Airflow starts host by host, "
              "health"]
    return lines


def with_offset(target: str | None) -> str | None:
    """The target as PostgreSQL reads it: without an offset it would be the server's timezone; we mean UTC."""
    if target and not re.search(r"[+-]\d{2}(:?\d{2})?$", target):
        return target + "+00"
    return target


def backup_set(info: dict, target: str | None) -> str | None:
    """The newest successful backup that ended before the target (None: pgBackRest's default, the latest)."""
    if not target:
        return None
    epoch = target_epoch(target)
    done = [b for b in info["backups"] if not b.error and b.stop and b.stop <= epoch]
    return max(done, key=lambda b: b.stop).label if done else None


#: Airflow: every connection password/extra and variable value the fernet key must decrypt after a restore
FERNET_CHECK = """
from airflow.models.crypto import get_fernet
from airflow.utils.session import create_session
from sqlalchemy import text
f = get_fernet()
bad = []
with create_session() as s:
    rows = s.execute(text("select conn_id, password, extra from connection where is_encrypted or is_extra_encrypted"))
    for conn_id, pw, extra in rows:
        for v in (pw, extra):
            try:
                v and f.decrypt(v.encode())
            except Exception:
                bad.append("connection " + conn_id)
    for key, val in s.execute(text("select key, val from variable where is_encrypted")):
        try:
            val and f.decrypt(val.encode())
        except Exception:
            bad.append("variable " + key)
print("FERNET_BAD " + ",".join(sorted(set(bad))) if bad else "FERNET_OK")
"""


class Restore:
    """The restore itself: stop Airflow, restore the primary, re-create replicas, check, start, health."""

    def __init__(self, run, leader: str, target: str | None, label: str | None = None):
        self.run, self.inv, self.leader, self.target, self.label = run, run.inv, leader, target, label

    def say(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    def sh(self, host: str, script: str, timeout: float = 600, what: str = "") -> str:
        res = self.run.remote(host).sh(script, timeout=timeout)
        if not res.ok:
            raise RuntimeError(self.run.mask(f"{what or 'step'} on {host}: exit {res.rc}: "
                                             f"{(res.err or res.out).strip()[-400:]}"))
        return res.out

    def pg(self, host: str) -> pgsql.PostgresNames:
        return pgsql.names(self.run.facts[host].platform)

    def pgbackrest(self, host: str) -> str:
        return f"runuser -u {self.pg(host).user} -- pgbackrest --stanza={STANZA}"

    def execute(self) -> None:
        self.archive_current_wal()
        self.stop_airflow()
        if pgsql.patroni_mode(self.inv):
            self.restore_patroni()
        else:
            self.restore_single()
        self.check_airflow()
        self.start_airflow()

    def archive_current_wal(self) -> None:
        """pgbackrest check switches WAL and waits until it is archived: the newest commits reach the repo."""
        res = self.run.remote(self.leader).sh(f"{self.pgbackrest(self.leader)} --log-level-console=warn check",
                                              timeout=120)
        self.say("current WAL archived" if res.ok else "current WAL NOT archived (database down?): restoring "
                 "from what the repository has")

    def airflow_hosts(self) -> list:
        return [(h, [u for r, u in UNITS.items() if h.has(r)]) for h in self.inv.hosts.values()
                if any(h.has(r) for r in UNITS)]

    def stop_airflow(self) -> None:
        """Workers are killed, not drained: the database goes back to the target anyway, and their tasks could
        not finish with every api-server stopping at the same time (a warm shutdown would wait for
        `worker_stop_timeout`)."""
        def stop(item):
            host, units = item
            workers = " ".join(u for u in units if u.startswith("airflow-worker"))
            kill = f"systemctl kill -s SIGKILL {workers} 2>/dev/null || true\n" if workers else ""
            self.sh(host.name, f"{kill}systemctl stop {' '.join(units)}", timeout=120, what="stop Airflow")
        self.run.parallel(stop, self.airflow_hosts())
        self.say(f"Airflow stopped on {', '.join(h.name for h, _ in self.airflow_hosts())}")

    def _restore_cmd(self, host: str) -> str:
        target = (f"--type=time {shlex.quote('--target=' + self.target)} --target-action=promote"
                  if self.target else "--type=default")
        target += f" --set={self.label}" if self.label else ""
        return f"{self.pgbackrest(host)} --delta {target} --log-level-console=info restore"

    def _wait_promoted(self, host: str, psql: str, timeout: int = 900) -> None:
        """Until the server left recovery (promoted at the target); a server that stopped (target not reached:
        PostgreSQL ends recovery with FATAL) fails after 60 s without an answer, pointing at its log."""
        self.sh(host, f"down=0; for i in $(seq {timeout // 2}); do r=$({psql} -c 'select pg_is_in_recovery()' "
                      "2>/dev/null); [ \"$r\" = f ] && exit 0; if [ -z \"$r\" ]; then down=$((down + 2)); else down=0; fi; "
                      "[ $down -ge 60 ] && { echo 'PostgreSQL stopped during recovery (target after the end of the "
                      "archive?): see its log'; exit 1; }; sleep 2; done; echo 'still in recovery'; exit 1",
                timeout=timeout + 30, what="wait for recovery to end")

    def _reset_recovery(self, psql: str) -> str:
        """pgBackRest writes restore_command and the target into postgresql.auto.conf: drop them once promoted
        (a target left there would apply to this server's next recovery, e.g. as a Patroni replica)."""
        return "\n".join(f"{psql} -c 'ALTER SYSTEM RESET {k}'" for k in
                         ("restore_command", "recovery_target_time", "recovery_target_action"))

    def psql(self, host: str) -> str:
        port = self.inv.ports.postgres
        return f"runuser -u {self.pg(host).user} -- psql -XAtq -p {port} -d postgres"

    def restore_single(self) -> None:
        host, unit = self.leader, self.pg(self.leader).unit
        self.sh(host, f"systemctl stop {unit}", what="stop PostgreSQL")
        t0 = time.monotonic()
        self.sh(host, self._restore_cmd(host), timeout=6 * 3600, what="pgbackrest restore")
        self.say(f"{host}: data restored ({time.monotonic() - t0:.0f}s); replaying WAL")
        self.sh(host, f"systemctl start {unit}", what="start PostgreSQL")
        self._wait_promoted(host, self.psql(host))
        self.sh(host, self._reset_recovery(self.psql(host)) + f"\n{self.psql(host)} -c 'select pg_reload_conf()'",
                what="reset recovery settings")
        self.say(f"{host}: PostgreSQL promoted and writable")

    def restore_patroni(self) -> None:
        """Patroni stopped everywhere; the leader restored and promoted outside Patroni; the DCS forgets the old
        cluster (its dynamic config kept); Patroni takes the restored data dir over; replicas are re-cloned."""
        self.stop_patroni()
        self.restore_outside_patroni()
        self.reset_dcs()
        self.start_patroni_leader()
        self.recreate_replicas()

    def members(self) -> list[str]:
        return [h.name for h in self.inv.with_role("postgres")]

    def replicas(self) -> list[str]:
        return [m for m in self.members() if m != self.leader]

    def patroni_unit(self, host: str) -> str:
        return self.pg(host).patroni_unit

    def stop_patroni(self) -> None:
        """Replicas first, the leader last (it removes its leader key on a clean stop)."""
        for m in [*self.replicas(), self.leader]:
            self.sh(m, f"systemctl stop {self.patroni_unit(m)}", timeout=180, what="stop Patroni")
        self.say(f"Patroni stopped on {', '.join(self.members())}")

    def restore_outside_patroni(self) -> None:
        """pgbackrest restore, then PostgreSQL replays WAL to the target and promotes under pg_ctl; stopped again
        without pgBackRest's recovery settings, a clean primary for Patroni to take over."""
        pg = self.pg(self.leader)
        data, conf_dir = pg.patroni_data, pg.patroni_conf_dir
        pg_ctl = f"runuser -u {pg.user} -- {pg.bin_dir}/pg_ctl -D {data} -w -t 3600"
        opts = f" -o {shlex.quote('-c config_file=' + conf_dir + '/postgresql.conf')}" if conf_dir != data else ""
        t0 = time.monotonic()
        self.sh(self.leader, self._restore_cmd(self.leader), timeout=6 * 3600, what="pgbackrest restore")
        self.say(f"{self.leader}: data restored ({time.monotonic() - t0:.0f}s); replaying WAL outside Patroni")
        self.sh(self.leader, f"{pg_ctl}{opts} start", timeout=3700, what="pg_ctl start")
        self._wait_promoted(self.leader, self.psql(self.leader))
        self.sh(self.leader, self._reset_recovery(self.psql(self.leader)) + f"\n{pg_ctl} -m fast stop",
                timeout=300, what="reset recovery settings + stop")

    def reset_dcs(self) -> None:
        host = self.inv.with_role("etcd")[0].name
        self.sh(host, dcs_reset_script(etcd.endpoints(self.run), patroni.scope(self.inv)), timeout=60,
                what="reset Patroni's cluster state in etcd")

    def start_patroni_leader(self) -> None:
        self.sh(self.leader, f"systemctl start {self.patroni_unit(self.leader)}", what="start Patroni")
        self.sh(self.leader, f"for i in $(seq 90); do {patroni.any_leader(self.run)} && exit 0; sleep 2; done; exit 1",
                timeout=200, what="wait for the restored leader")
        self.say(f"{self.leader}: Patroni leads the restored database")

    def recreate_replicas(self) -> None:
        """Only once the restored leader runs: emptied data dirs make Patroni clone them from it (pg_basebackup)."""
        for m in self.replicas():
            data = shlex.quote(self.pg(m).patroni_data)
            self.sh(m, f"find {data} -mindepth 1 -delete && systemctl start {self.patroni_unit(m)}",
                    what="re-create the replica")
        self.sh(self.leader, self._members_streaming(self.members()), timeout=1900, what="wait for the replicas")
        self.say(f"replicas {', '.join(self.replicas())} re-created from {self.leader}")

    def _members_streaming(self, members: list[str]) -> str:
        url = patroni.api_url(self.run, self.inv.hosts[self.leader], "cluster")
        want = len(members) - 1
        count = ("python3 -c 'import json,sys; m=json.load(sys.stdin).get(\"members\",[]); "
                 "print(sum(x.get(\"role\") in (\"replica\",\"sync_standby\") and x.get(\"state\") in "
                 "(\"running\",\"streaming\") for x in m))'")
        return (f"for i in $(seq 900); do [ \"$(curl -s -m 3 {url} | {count} 2>/dev/null)\" = {want} ] && exit 0; "
                "sleep 2; done; echo 'replicas not streaming after 30 min'; exit 1")

    def check_airflow(self) -> None:
        host = next(h.name for h, _ in self.airflow_hosts())
        self.sh(host, f"{CLI} db check", timeout=120, what="airflow db check")
        out = self.sh(host, f"set -a; . /etc/airflow/airflow.env; set +a\n"
                            f"export AIRFLOW_CONFIG=/etc/airflow/airflow.cfg AIRFLOW_HOME={HOME}; cd {HOME}\n"
                            f"runuser -u airflow -- {VENV}/bin/python - <<'__PY__'\n{FERNET_CHECK}__PY__",
                      timeout=180, what="fernet check")
        verdict = fernet_verdict(out)
        if verdict:
            raise RuntimeError(verdict)
        self.say("airflow db check ok; the fernet key decrypts every connection and variable")

    def start_airflow(self) -> None:
        """In Airflow's rolling order, role by role across hosts: the Execution API is up before anything that
        calls it, schedulers come last. Nothing serves yet, so the hosts of one role start together."""
        for roles in START_ORDER:
            starts = [(h.name, " ".join(UNITS[r] for r in roles if h.has(r))) for h in self.inv.hosts.values()]
            starts = [(name, units) for name, units in starts if units]
            self.run.parallel(lambda item: self.sh(item[0], f"systemctl start {item[1]}", timeout=300,
                                                   what="start Airflow"), starts)
            if starts:
                self.say(f"started {', '.join(UNITS[r] for r in roles)} on {', '.join(n for n, _ in starts)}")
        d = Drill(str(self.inv.path))
        try:
            d.wait_healthy(timeout=300)
        finally:
            d.close()
        self.say("cluster healthy")


START_ORDER = (("api_server",), ("dag_processor", "triggerer"), ("worker",), ("scheduler",), ("flower",))


def dcs_reset_script(endpoints: list[str], scope: str) -> str:
    """Shell (etcd v3): remove Patroni's state of the old cluster under /service/<scope>/ (leader, initialize with
    the system id, members, status/optime with the last LSN a restored leader would be "lagging" behind, sync,
    history, failover), keeping /config, the dynamic configuration (synchronous_mode, max_connections, ...)."""
    prefix = f"/service/{scope}/"
    ctl = f"etcdctl --endpoints={','.join('http://' + e for e in endpoints)}"
    return (f"set -e\nexport ETCDCTL_API=3\n"
            f"config=$({ctl} get --print-value-only {prefix}config)\n"
            f"{ctl} del --prefix {prefix} >/dev/null\n"
            f"[ -z \"$config\" ] || printf '%s' \"$config\" | {ctl} put {prefix}config >/dev/null")


def fernet_verdict(out: str) -> str | None:
    """None when the check printed FERNET_OK; else the one clear error `inv restore` stops with."""
    if "FERNET_OK" in out:
        return None
    bad = next((line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("FERNET_BAD ")), "")
    return ("the current fernet key (secrets file: fernet_key) does not decrypt the restored "
            f"{bad or 'data'}: restore .secrets/ from your safe copy (README \"Backups\"), `inv deploy`, then "
            "start Airflow; Airflow stays stopped")
