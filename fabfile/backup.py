"""Backups and point-in-time restore of the metadata database with pgBackRest (stanza `airflow`).

Where the repository is (`mode`), from the inventory:
* "host": the host with the `backup` role, when it runs no PostgreSQL. pgBackRest's dedicated repository
  host (user guide "Dedicated Repository Host"): the repo host reaches each database host over SSH as
  `postgres` (`pgN-host`, `pgN-host-user`) to take backups; each database host reaches the repo host as
  `pgbackrest` (`repo1-host`, `repo1-host-user`) to push WAL and to restore. SSH rather than pgBackRest's
  TLS server (`tls-server-*`, `repo1-host-type=tls`, also in 2.45): no extra daemon and unit on every host,
  no CA/certificates to generate and rotate, port 22 is already open between cluster hosts. One Ed25519
  key pair (generated on the control machine into the secrets file, `pgbackrest_ssh_key`) is installed for
  both users, 0600; authorized_keys entries are `restrict`ed to the peers' addresses, and known_hosts pins
  each peer's host key (read from /etc/ssh/ssh_host_ed25519_key.pub in `prepare`): no trust on first use.
  Patroni mode: the repo host knows every member and backs up from a standby (`backup-standby=y`; in 2.45
  the option is y/n, so a backup fails while no standby runs). The other modes back up from the primary
  (a database host's pgBackRest knows only its own PostgreSQL).
* "local": the `backup` role on the single PostgreSQL host: `repo_path` (default /var/lib/pgbackrest) on
  that host (no SSH; the repository shares the host's fate: copy it elsewhere, README "Backups").
* "path": no `backup` host, `backup.repo_path` set: a path on every PostgreSQL host; in Patroni mode it
  must be one shared mount (NFS), since any member may be the primary.
* "s3": `backup.s3_bucket` (+ endpoint, region, uri style; key and secret from the secrets file).
* "none": no repository. Allowed; `inv health` and `deploy --check` warn "no backups".

WAL archiving (only with a repository; a single-database layout without one plans what it did before, a
Patroni layout only gains the member's archive_mode check, which keeps it off):
`archive_mode=on`, `archive_command='pgbackrest --stanza=airflow archive-push %p'`, `archive_timeout=300`
(at most 5 minutes of WAL not yet in the repository), in the PostgreSQL include file (single mode) or in
Patroni's `postgresql.parameters` (every member: with archive_mode=on only the primary archives, so
archiving follows the primary). Turning it on or off restarts PostgreSQL (archive_mode is a server-start
setting): single mode through the include file's notification, Patroni mode member by member
(`patroni.archive_mode_step`: `patronictl restart --pending` once Patroni has applied the reloaded file).

Encryption: `repo1-cipher-type=aes-256-cbc`, `repo1-cipher-pass` generated into the secrets file; it lives
only where the repository is written from (the repo host, or every DB host without one), in a 0640
root:<owner> config, never on a command line.

Schedules: systemd timers `airflow-ha-backup-full.timer` / `-diff.timer` (OnCalendar from
`backup.full_schedule` / `diff_schedule`, Persistent=true) start `airflow-ha-backup@<type>.service` on the
repo host, or on every PostgreSQL host where the script backs up only on the primary. pgBackRest expires
backups past `repo1-retention-full` (`backup.retention_full`) after each backup.

Stanza: `stanza-create` only when `info` says the stanza is missing, then `check` (a WAL switch archived
end to end) after every config change; both on the repo host, or on the primary (`finalize`).

Commands (tasks.py, fabfile/backup_tasks.py): `inv backup`, `inv backup.list` (from `info --output=json`),
`inv restore`.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from . import postgres
from .core.component import Component, Role
from .core.errors import InventoryError, UserError
from .core.steps import Command, Directory, File, Packages, Service
from .core.templates import render
from .repository import ARCHIVE_TIMEOUT, REPO_USER, STANZA, enabled, mode, owner, repo_host, repo_path, runs_backups

NAME = "backup"
#: pgBackRest: the repository is the `backup` host, else `repo_path` (a local or shared mount), else S3
#: (`s3_bucket` + `s3_endpoint` + `s3_region`; key and secret in the secrets file as backup_s3_key /
#: backup_s3_key_secret). None of them = no backups (health and --check warn). Schedules are systemd
#: OnCalendar expressions; "" turns a schedule off. max_age_hours 0 = derived (24 with a diff schedule,
#: else 168): health warns past it + 6 h, fails at twice that.
SETTINGS = {"backup": {"repo_path": None, "full_schedule": "Sun *-*-* 01:00:00",
                       "diff_schedule": "Mon..Sat *-*-* 01:00:00", "retention_full": 2, "max_age_hours": 0,
                       "s3_bucket": None, "s3_endpoint": None, "s3_region": None, "s3_uri_style": None}}
CALENDAR = re.compile(r"^[A-Za-z0-9*.,:/~ +-]*$")
CONF = "/etc/pgbackrest/pgbackrest.conf"
LOG_DIR = "/var/log/pgbackrest"
REPO_HOME = "/home/pgbackrest"
SCRIPT = "/usr/local/lib/airflow-ha/pgbackrest-backup.sh"
SERVICE = "airflow-ha-backup@"
TYPES = ("full", "diff", "incr")
#: `info --output=json` status codes that mean "no stanza yet" (1 missing stanza path, 3 missing stanza data)
MISSING_STANZA = (1, 3)
SLACK_HOURS = 6
#: the same on every platform: Debian 12 ships 2.45 (DESIGN.md §6); EL9 from PGDG (pgdg-common) or EPEL
#: (check_repos of the Patroni layout); every host runs the same version
PACKAGES = ("pgbackrest",)


# -- configuration ---------------------------------------------------------------------------------------


def _repo_opts(inv, secrets) -> list[tuple[str, str]]:
    b = inv.cluster["backup"]
    out = []
    if mode(inv) == "s3":
        out += [("repo1-type", "s3"), ("repo1-path", b["repo_path"] or "/airflow-ha"),
                ("repo1-s3-bucket", b["s3_bucket"]), ("repo1-s3-endpoint", b["s3_endpoint"]),
                ("repo1-s3-region", b["s3_region"]), ("repo1-s3-key", _secret(secrets, "backup_s3_key")),
                ("repo1-s3-key-secret", _secret(secrets, "backup_s3_key_secret"))]
        if b["s3_uri_style"]:
            out.append(("repo1-s3-uri-style", b["s3_uri_style"]))
    else:
        out.append(("repo1-path", repo_path(inv)))
    return out + [("repo1-retention-full", str(b["retention_full"])), ("repo1-cipher-type", "aes-256-cbc"),
                  ("repo1-cipher-pass", secrets["pgbackrest_cipher_pass"]), ("start-fast", "y")]


def _secret(secrets, key) -> str:
    if secrets.get(key):
        return secrets[key]
    raise UserError(f"backup.s3_bucket is set but the secrets file has no {key}", "secrets file",
                    f"add `{key}: ...` (the S3 access key / secret) to the inventory's secrets file (mode 0600)")


def _pg_opts(inv, plat, index: int = 1, address: str | None = None) -> list[tuple[str, str]]:
    p, pg = f"pg{index}", postgres.names(plat)
    data = pg.patroni_data if postgres.patroni_mode(inv) else pg.data
    remote = [(f"{p}-host", address), (f"{p}-host-user", pg.user)] if address else []
    return remote + [(f"{p}-path", data), (f"{p}-port", str(inv.cluster["ports"]["postgres"])),
                     (f"{p}-socket-path", "/var/run/postgresql")]


def config_opts(inv, host, plat, addresses: dict, secrets: dict) -> tuple[list, list]:
    """([global] options, [airflow] options) for one host. Pure: the spec goldens show the result."""
    log = [("log-level-file", "detail")]
    if mode(inv) == "host" and host.has("backup"):
        pgs = [o for i, h in enumerate(inv.with_role("postgres"), 1) for o in _pg_opts(inv, plat, i, addresses[h.name])]
        standby = [("backup-standby", "y")] if postgres.patroni_mode(inv) else []
        return _repo_opts(inv, secrets) + standby + log, pgs
    if mode(inv) == "host":
        repo = repo_host(inv)
        return [("repo1-host", addresses[repo.name]), ("repo1-host-user", REPO_USER)] + log, _pg_opts(inv, plat)
    return _repo_opts(inv, secrets) + log, _pg_opts(inv, plat)


def config(ctx) -> str:
    glob, stanza = config_opts(ctx.inv, ctx.host, ctx.platform, ctx.run.addresses, ctx.secrets)
    role = ("repository host" if ctx.host.has("backup") and mode(ctx.inv) == "host"
            else f"database host (repository: {mode(ctx.inv)})")
    return render("pgbackrest/pgbackrest.conf.j2", role=role, group=owner(ctx.inv)
                  if runs_backups(ctx.inv, ctx.host) else postgres.names(ctx.platform).user,
                  secret=any(k == "repo1-cipher-pass" for k, _ in glob), global_opts=glob, stanza=STANZA,
                  stanza_opts=stanza)


# -- SSH between the database hosts and the repository host (mode "host") -------------------------------


def public_key(private_text: str) -> str:
    """The OpenSSH public line of the secrets file's private key (a placeholder offline)."""
    try:
        from cryptography.hazmat.primitives import serialization
        key = serialization.load_ssh_private_key(private_text.encode(), password=None)
    except (ValueError, TypeError, ImportError):
        return "ssh-ed25519 <pgbackrest_ssh_key.pub>"
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def ssh_peers(inv, host) -> list:
    """Who this host talks to: the repo host talks to every PostgreSQL host, they talk to it."""
    return inv.with_role("postgres") if host.has("backup") else [repo_host(inv)]


def authorized_keys(pub: str, peer_addresses: list[str]) -> str:
    return (f"# Managed by airflow-ha (fabfile/backup.py): pgBackRest between the cluster's hosts only\n"
            f"restrict,from=\"{','.join(peer_addresses)}\" {pub} airflow-ha-pgbackrest\n")


def known_hosts(peers: list[tuple[str, str]], host_keys: dict) -> str:
    lines = [f"{addr} {host_keys.get(name) or f'ssh-ed25519 <host key of {name}>'}" for name, addr in peers]
    return "# Managed by airflow-ha (fabfile/backup.py): pinned host keys of the pgBackRest peers\n" + \
        "\n".join(lines) + "\n"


def _ssh_steps(ctx, user: str, home: str) -> list:
    inv, run = ctx.inv, ctx.run
    peers = [(h.name, run.addresses[h.name]) for h in ssh_peers(inv, ctx.host)]
    pub = public_key(ctx.secrets["pgbackrest_ssh_key"])
    ssh = f"{home}/.ssh"
    return [
        Directory(ssh, owner=user, group=user, mode=0o700),
        File(f"{ssh}/id_ed25519", ctx.secrets["pgbackrest_ssh_key"], owner=user, group=user, mode=0o600),
        File(f"{ssh}/authorized_keys", authorized_keys(pub, [a for _, a in peers]), owner=user, group=user,
             mode=0o600),
        File(f"{ssh}/known_hosts", known_hosts(peers, run.data.get("ssh_host_keys", {})), owner=user, group=user,
             mode=0o644),
    ]


HOST_KEY_SCRIPT = "cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub"


def prepare(run, hosts) -> None:
    """Mode "host": read each peer's SSH host key (pinned in known_hosts; no trust on first use)."""
    if mode(run.inv) != "host":
        return
    keys = {}
    for host in run.inv.with_role("postgres") + [repo_host(run.inv)]:
        if host.name in run.failed:
            continue
        try:
            out = run.remote(host.name).sh(HOST_KEY_SCRIPT, timeout=15).out.strip()
        except Exception:  # an unreachable host is reported by the component itself
            continue
        if out.startswith("ssh-"):
            keys[host.name] = out
    run.data["ssh_host_keys"] = keys


# -- the component -------------------------------------------------------------------------------------


def applies(inv, host) -> bool:
    return enabled(inv) and (host.has("postgres") or (mode(inv) == "host" and host.has("backup")))


def steps(ctx) -> list:
    inv, plat, host, pg = ctx.inv, ctx.platform, ctx.host, postgres.names(ctx.platform)
    pg_user = pg.user
    is_repo = mode(inv) == "host" and host.has("backup")
    user = REPO_USER if is_repo else pg_user
    out = [Packages(target="pgbackrest", names=PACKAGES, manager=plat.pkg)]
    if is_repo:
        out.append(Command(f"user {REPO_USER}", unless=f"getent passwd {REPO_USER}",
                           script=f"useradd --system --user-group --create-home --home-dir {REPO_HOME} "
                                  f"--shell /bin/sh {REPO_USER}"))
    out += [
        Directory("/etc/pgbackrest", mode=0o755),
        File(CONF, config(ctx), group=user, mode=0o640, notify=("pgbackrest-check",)),
        Directory(LOG_DIR, owner=user, group=user, mode=0o770),
    ]
    if mode(inv) in ("host", "local") and (is_repo or mode(inv) == "local") or mode(inv) == "path":
        out.append(Directory(repo_path(inv), owner=user, group=user, mode=0o750))
    if mode(inv) == "host":
        out += _ssh_steps(ctx, user, REPO_HOME if is_repo else pg.home)
    units = (timer_steps(ctx, user) if runs_backups(inv, host) else []) + \
        (metrics_steps(ctx) if inv.cluster["monitoring"] else [])
    # unit files before the first service action: the runner's one daemon-reload comes right before it
    return out + [s for s in units if not isinstance(s, Service)] + [s for s in units if isinstance(s, Service)]


METRICS_SCRIPT = "/usr/local/lib/airflow-ha/pgbackrest-metrics.sh"
METRICS_UNIT = "airflow-ha-backup-metrics"


def metrics_steps(ctx) -> list:
    """With monitoring: a 5-minute timer writes backup age / WAL archiving for node_exporter's textfile collector."""
    inv, host = ctx.inv, ctx.host
    script = render("pgbackrest/metrics.sh.j2", backups=runs_backups(inv, host), owner=owner(inv), stanza=STANZA,
                    database=host.has("postgres"), port=inv.cluster["ports"]["postgres"])
    service = (f"# Managed by airflow-ha (fabfile/backup.py)\n[Unit]\nDescription=airflow-ha: backup metrics for "
               f"node_exporter\n\n[Service]\nType=oneshot\nExecStart={METRICS_SCRIPT}\n")
    timer = ("# Managed by airflow-ha (fabfile/backup.py)\n[Unit]\nDescription=airflow-ha: backup metrics every "
             "5 minutes\n\n[Timer]\nOnBootSec=2min\nOnUnitActiveSec=5min\n\n[Install]\nWantedBy=timers.target\n")
    return [
        File(METRICS_SCRIPT, script, mode=0o755),
        File(f"/etc/systemd/system/{METRICS_UNIT}.service", service, notify=("daemon-reload",)),
        File(f"/etc/systemd/system/{METRICS_UNIT}.timer", timer, notify=("daemon-reload", f"{METRICS_UNIT}.timer")),
        Service(f"{METRICS_UNIT}.timer"),
    ]


def alert_rules(inv) -> str:
    """files/monitoring/alerts-backup.yml.j2 with the health thresholds (expected + slack, twice that)."""
    warn = expected_hours(inv) + SLACK_HOURS
    return render("monitoring/alerts-backup.yml.j2", warn_hours=warn, fail_hours=2 * warn,
                  archive_timeout=ARCHIVE_TIMEOUT)


def timer_steps(ctx, user: str) -> list:
    inv = ctx.inv
    b = inv.cluster["backup"]
    primary_only = mode(inv) != "host" and postgres.patroni_mode(inv)
    out = [
        File(SCRIPT, render("pgbackrest/backup.sh.j2", stanza=STANZA, primary_only=primary_only,
                            port=inv.cluster["ports"]["postgres"]), mode=0o755),
        File(f"/etc/systemd/system/{SERVICE}.service", render("pgbackrest/airflow-ha-backup@.service.j2",
                                                              stanza=STANZA, user=user, script=SCRIPT),
             notify=("daemon-reload",)),
    ]
    timers = {kind: f"airflow-ha-backup-{kind}.timer" for kind in ("full", "diff")}
    out += [File(f"/etc/systemd/system/{unit}", render("pgbackrest/airflow-ha-backup.timer.j2", type=kind,
                                                      schedule=b[f"{kind}_schedule"]), notify=("daemon-reload", unit))
            for kind, unit in timers.items() if b[f"{kind}_schedule"]]
    return out + [Service(unit, present=bool(b[f"{kind}_schedule"])) for kind, unit in timers.items()]


def stanza_steps(run, host) -> list:
    """stanza-create when `info` says missing, then `check` after a config change (on `host`, as `user`)."""
    as_user = f"runuser -u {owner(run.inv)} -- pgbackrest --stanza={STANZA}"
    missing = "|".join(str(c) for c in MISSING_STANZA)
    return [
        Command("stanza", desc=f"pgbackrest stanza-create (stanza {STANZA} missing)",
                unless=f"! {as_user} --output=json info | grep -Eq '\"status\":\\{{\"code\":({missing}),'",
                script=f"{as_user} --log-level-console=info stanza-create", notify=("pgbackrest-check",)),
        Command("pgbackrest-check", desc="pgbackrest check (a WAL switch archived end to end)",
                only_if_notified=True, script=f"{as_user} --log-level-console=warn check"),
        # the restore window starts with a backup, and health fails without one: take the first one now
        Command("first backup", desc="first full backup (the repository holds none)",
                unless=f"{as_user} --output=json info | grep -q '\"backup\":\\[{{'",
                script=f"systemctl start {SERVICE}full.service"),
    ]


def finalize(run, hosts) -> None:
    """The stanza steps on the host backups run on (--check: planned there, nothing runs)."""
    if not hosts or not enabled(run.inv):
        return
    try:
        host = backup_runner(run, planning=run.opts.check)
        run.converge(host, NAME, stanza_steps(run, host))
    except Exception as exc:
        for h in hosts:
            run.fail_host(h, NAME, f"stanza: {exc}")


def backup_runner(run, planning: bool = False):
    """Where backup commands run: the repo host, else the primary (Patroni: the leader).

    `planning` (--check): with no Patroni leader yet (a new cluster), the member that will bootstrap it."""
    inv = run.inv
    if mode(inv) == "host":
        return repo_host(inv)
    if postgres.patroni_mode(inv):
        from . import patroni
        leader = patroni.leader(run)
        if leader is None and planning:
            return patroni.seed(run)
        if leader is None:
            raise UserError("no Patroni leader: backups run on the primary", f"{inv.path}: hosts",
                            "bring the database back first (`inv health`)")
        return leader
    return inv.with_role("postgres")[0]


# -- `info --output=json` ------------------------------------------------------------------------------


@dataclass
class BackupRow:
    """One backup of `inv backup.list`."""

    label: str
    type: str
    start: int
    stop: int
    size: int          # database size (bytes)
    repo_size: int     # size in the repository (bytes, compressed, this backup's own files)
    wal_start: str
    wal_stop: str
    error: bool = False


def parse_info(text: str) -> dict:
    """The `airflow` stanza of `pgbackrest info --output=json`: {status, message, backups, wal_min, wal_max}."""
    try:
        data = json.loads(text)
    except ValueError:
        raise UserError("pgbackrest info did not answer JSON", "", "run `pgbackrest info` on the host") from None
    stanza = next((s for s in data if isinstance(s, dict) and s.get("name") == STANZA), None) \
        if isinstance(data, list) else None
    if stanza is None:
        return {"status": 1, "message": "missing stanza", "backups": [], "wal_min": "", "wal_max": ""}
    archives = stanza.get("archive") or [{}]
    backups = [BackupRow(label=b.get("label", "?"), type=b.get("type", "?"),
                         start=int(b.get("timestamp", {}).get("start") or 0),
                         stop=int(b.get("timestamp", {}).get("stop") or 0),
                         size=int(b.get("info", {}).get("size") or 0),
                         repo_size=int((b.get("info", {}).get("repository") or {}).get("delta") or 0),
                         wal_start=(b.get("archive") or {}).get("start") or "",
                         wal_stop=(b.get("archive") or {}).get("stop") or "",
                         error=bool(b.get("error")))
               for b in stanza.get("backup") or []]
    status = stanza.get("status") or {}
    return {"status": status.get("code", 99), "message": status.get("message", ""), "backups": backups,
            "wal_min": archives[-1].get("min") or "", "wal_max": archives[-1].get("max") or ""}


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def table(info: dict) -> str:
    """`inv backup.list`: type, start, stop (UTC), size, size in the repository, WAL range."""
    from tabulate import tabulate
    rows = [[b.type + (" (error)" if b.error else ""), _when(b.start), _when(b.stop), _size(b.size),
             _size(b.repo_size), f"{b.wal_start} - {b.wal_stop}", b.label] for b in info["backups"]]
    head = ["type", "start (UTC)", "stop (UTC)", "size", "in repo", "WAL range", "label"]
    repo = sum(b.repo_size for b in info["backups"])
    return (tabulate(rows, headers=head) + f"\n{len(rows)} backup(s), {_size(repo)} of backups in the repository; "
            f"WAL archive {info['wal_min'] or '-'} .. {info['wal_max'] or '-'} (stanza status: {info['message']})")


def expected_hours(inv) -> int:
    b = inv.cluster["backup"]
    return b["max_age_hours"] or (24 if b["diff_schedule"] else 168)


def age_check(info: dict, now: float, expected: int):
    """Health row: age of the newest successful backup (warn past expected + slack, fail at twice that)."""
    from .health import Check
    good = [b for b in info["backups"] if not b.error and b.stop]
    if not good:
        return Check("cluster", "last backup", "fail", f"no successful backup ({info['message']})")
    newest = max(good, key=lambda b: b.stop)
    hours = (now - newest.stop) / 3600
    limit = expected + SLACK_HOURS
    status = "ok" if hours <= limit else "warn" if hours <= 2 * limit else "fail"
    return Check("cluster", "last backup", status, f"{newest.type} {hours:.1f}h ago ({newest.label}; "
                 f"warn > {limit}h, fail > {2 * limit}h)")


def archiver_check(row) -> object:
    """Health row from pg_stat_archiver (archived_count, failed_count, last_archived_time, last_failed_time)."""
    from .health import Check
    archived, failed, last_ok, last_fail = row
    if last_fail and (not last_ok or last_fail > last_ok):
        return Check("cluster", "wal archiving", "fail", f"archive_command failing since {last_fail:%Y-%m-%d %H:%M:%S}"
                     f" ({failed} failures; last success {last_ok:%H:%M:%S} )" if last_ok else
                     f"archive_command failing ({failed} failures, never succeeded)")
    if not archived:
        return Check("cluster", "wal archiving", "warn", "no WAL segment archived yet")
    return Check("cluster", "wal archiving", "ok", f"{archived} archived, last {last_ok:%Y-%m-%d %H:%M:%S}"
                 + (f", {failed} earlier failures" if failed else ""))


def health_rows(run) -> list:
    """`inv health`: "no backups" (warn) or the last backup's age; WAL archiving comes from check_postgres."""
    from .health import Check
    if not enabled(run.inv):
        return [Check("cluster", "backups", "warn", "no backups: no backup host, backup.repo_path or S3 "
                      "(README \"Backups\")")]
    try:
        host = backup_runner(run)
        info = info_from(run, host)
    except Exception as exc:
        return [Check("cluster", "last backup", "fail", f"pgbackrest info: {str(exc)[:80]}")]
    return [age_check(info, time.time(), expected_hours(run.inv))]


def info_from(run, host) -> dict:
    res = run.remote(host.name).sh(f"runuser -u {owner(run.inv)} -- pgbackrest --stanza={STANZA} --output=json info",
                                   timeout=60)
    if not res.ok:
        raise UserError(f"pgbackrest info on {host.name}: exit {res.rc}: {res.err.strip()[-200:]}", "", "")
    return parse_info(res.out)


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
        raise UserError(f"--time {target} is before the oldest backup ended ({_when(min(b.stop for b in good))} UTC)",
                        "inv restore --time", "pick a later time (see `inv backup.list`)")
    airflow = [h.name for h in inv.hosts.values() if h.has("api_server", "scheduler", "dag_processor", "triggerer",
                                                                "worker", "flower")]
    pg = [h.name for h in inv.with_role("postgres")]
    what = f"to {target} (UTC unless an offset is given)" if target else "to the end of the WAL archive (latest)"
    lines = [f"restore the metadata database {what}",
             f"STOP Airflow on {', '.join(airflow)} (running tasks are killed)",
             f"DESTROY every change made after the target on {leader or pg[0]} (its data dir is rewritten, "
             "--delta)"]
    if postgres.patroni_mode(inv):
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

    def pg(self, host: str) -> postgres.PostgresNames:
        return postgres.names(self.run.facts[host].platform)

    def pgbackrest(self, host: str) -> str:
        return f"runuser -u {self.pg(host).user} -- pgbackrest --stanza={STANZA}"

    def execute(self) -> None:
        self.archive_current_wal()
        self.stop_airflow()
        if postgres.patroni_mode(self.inv):
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
        from .services import UNITS
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
        port = self.inv.cluster["ports"]["postgres"]
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
        for m in self.replicas() + [self.leader]:
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
        from . import etcd, patroni
        host = self.inv.with_role("etcd")[0].name
        self.sh(host, dcs_reset_script(etcd.endpoints(self.run), patroni.scope(self.inv)), timeout=60,
                what="reset Patroni's cluster state in etcd")

    def start_patroni_leader(self) -> None:
        from . import patroni
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
        from . import patroni
        url = patroni.api_url(self.run, self.inv.hosts[self.leader], "cluster")
        want = len(members) - 1
        count = ("python3 -c 'import json,sys; m=json.load(sys.stdin).get(\"members\",[]); "
                 "print(sum(x.get(\"role\") in (\"replica\",\"sync_standby\") and x.get(\"state\") in "
                 "(\"running\",\"streaming\") for x in m))'")
        return (f"for i in $(seq 900); do [ \"$(curl -s -m 3 {url} | {count} 2>/dev/null)\" = {want} ] && exit 0; "
                "sleep 2; done; echo 'replicas not streaming after 30 min'; exit 1")

    def check_airflow(self) -> None:
        from .airflow import CLI, HOME, VENV
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
        from .drills import Drill
        from .services import UNITS
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


def validate(inv) -> None:
    """One repository: at most one `backup` host, not also S3; S3 complete; sane retention and schedules."""
    b, path = inv.cluster["backup"], inv.path
    hosts = inv.with_role("backup")
    if len(hosts) > 1:
        raise InventoryError(f"{len(hosts)} backup hosts ({', '.join(h.name for h in hosts)}): pgBackRest "
                             "keeps one repository here", f"{path}: hosts", "give the 'backup' role to one host")
    if hosts and b["s3_bucket"]:
        raise InventoryError("a backup host and backup.s3_bucket: two repositories", f"{path}: cluster.backup",
                             "keep the 'backup' role or the S3 settings, not both")
    if hosts and postgres.patroni_mode(inv) and hosts[0].has("postgres"):
        raise InventoryError(f"backup host {hosts[0].name} is also a Patroni member: the repository would be "
                             "lost with that member", f"{path}: hosts.{hosts[0].name}.roles",
                             "give the 'backup' role to a host without 'postgres'")
    missing = [k for k in ("s3_endpoint", "s3_region") if b["s3_bucket"] and not b[k]]
    if missing:
        raise InventoryError(f"backup.s3_bucket without backup.{missing[0]}", f"{path}: cluster.backup",
                             "set s3_bucket, s3_endpoint and s3_region together (e.g. s3.us-east-1.amazonaws.com, "
                             "us-east-1)")
    if b["s3_uri_style"] not in (None, "host", "path"):
        raise InventoryError(f"backup.s3_uri_style {b['s3_uri_style']!r}", f"{path}: cluster.backup.s3_uri_style",
                             "use host (AWS) or path (most S3-compatible stores, e.g. MinIO)")
    if b["repo_path"] is not None and not b["repo_path"].startswith("/"):
        raise InventoryError(f"backup.repo_path {b['repo_path']!r} is not absolute", f"{path}: cluster.backup.repo_path",
                             "write an absolute path such as /var/lib/pgbackrest")
    if b["retention_full"] < 1:
        raise InventoryError("backup.retention_full must be at least 1", f"{path}: cluster.backup.retention_full",
                             "keep 2 or more full backups (the default is 2)")
    for key in ("full_schedule", "diff_schedule"):
        if not CALENDAR.match(b[key]):
            raise InventoryError(f"backup.{key} {b[key]!r} is not a systemd calendar expression",
                                 f"{path}: cluster.backup.{key}", "write e.g. 'Sun *-*-* 01:00:00' or 'daily', "
                                 "'' for none (`systemd-analyze calendar` checks it)")
    if not b["full_schedule"]:
        raise InventoryError("backup.full_schedule is empty: differential backups need a full one",
                             f"{path}: cluster.backup.full_schedule", "use e.g. 'Sun *-*-* 01:00:00' (the default)")


class Backup(Component):
    """pgBackRest on the database hosts and the repository host; the stanza in `finalize`."""

    name = NAME
    settings = SETTINGS
    validate = staticmethod(validate)
    roles = (Role("backup"),)
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    prepare = staticmethod(prepare)
    finalize = staticmethod(finalize)


COMPONENT = Backup()
