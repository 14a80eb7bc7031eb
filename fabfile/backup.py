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
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import pgsql
from .core.component import Check, Component, Role
from .core.errors import InventoryError, UserError
from .core.steps import Command, Directory, File, Packages, Service, periodic_script
from .core.templates import render
from .repository import ARCHIVE_TIMEOUT, REPO_USER, STANZA, enabled, mode, owner, repo_host, repo_path, runs_backups

NAME = "backup"
#: pgBackRest: the repository is the `backup` host, else `repo_path` (a local or shared mount), else S3
#: (`s3_bucket` + `s3_endpoint` + `s3_region`; key and secret in the secrets file as backup_s3_key /
#: backup_s3_key_secret). None of them = no backups (health and --check warn). Schedules are systemd
#: OnCalendar expressions; "" turns a schedule off. max_age_hours 0 = derived (24 with a diff schedule,
#: else 168): health warns past it + 6 h, fails at twice that.
@dataclass(frozen=True)
class BackupBlock:
    """`cluster.backup`: the pgBackRest repository and its schedule."""

    repo_path: str | None = None
    full_schedule: str = "Sun *-*-* 01:00:00"
    diff_schedule: str = "Mon..Sat *-*-* 01:00:00"
    retention_full: int = 2
    max_age_hours: int = 0
    s3_bucket: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_uri_style: str | None = None


@dataclass(frozen=True)
class BackupSettings:
    backup: BackupBlock = field(default_factory=BackupBlock)
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
    b = inv.settings.backup
    out = []
    if mode(inv) == "s3":
        out += [("repo1-type", "s3"), ("repo1-path", b.repo_path or "/airflow-ha"),
                ("repo1-s3-bucket", b.s3_bucket), ("repo1-s3-endpoint", b.s3_endpoint),
                ("repo1-s3-region", b.s3_region), ("repo1-s3-key", _secret(secrets, "backup_s3_key")),
                ("repo1-s3-key-secret", _secret(secrets, "backup_s3_key_secret"))]
        if b.s3_uri_style:
            out.append(("repo1-s3-uri-style", b.s3_uri_style))
    else:
        out.append(("repo1-path", repo_path(inv)))
    return [*out, ("repo1-retention-full", str(b.retention_full)), ("repo1-cipher-type", "aes-256-cbc"),
            ("repo1-cipher-pass", secrets["pgbackrest_cipher_pass"]), ("start-fast", "y")]


def _secret(secrets, key) -> str:
    if secrets.get(key):
        return secrets[key]
    raise UserError(f"backup.s3_bucket is set but the secrets file has no {key}", "secrets file",
                    f"add `{key}: ...` (the S3 access key / secret) to the inventory's secrets file (mode 0600)")


def _pg_opts(inv, plat, index: int = 1, address: str | None = None) -> list[tuple[str, str]]:
    p, pg = f"pg{index}", pgsql.names(plat)
    data = pg.patroni_data if pgsql.patroni_mode(inv) else pg.data
    remote = [(f"{p}-host", address), (f"{p}-host-user", pg.user)] if address else []
    return [*remote, (f"{p}-path", data), (f"{p}-port", str(inv.ports.postgres)),
            (f"{p}-socket-path", "/var/run/postgresql")]


def config_opts(inv, host, plat, addresses: dict, secrets: dict) -> tuple[list, list]:
    """([global] options, [airflow] options) for one host. Pure: the spec goldens show the result."""
    log = [("log-level-file", "detail")]
    if mode(inv) == "host" and host.has("backup"):
        pgs = [o for i, h in enumerate(inv.with_role("postgres"), 1) for o in _pg_opts(inv, plat, i, addresses[h.name])]
        standby = [("backup-standby", "y")] if pgsql.patroni_mode(inv) else []
        return _repo_opts(inv, secrets) + standby + log, pgs
    if mode(inv) == "host":
        repo = repo_host(inv)
        return [("repo1-host", addresses[repo.name]), ("repo1-host-user", REPO_USER), *log], _pg_opts(inv, plat)
    return _repo_opts(inv, secrets) + log, _pg_opts(inv, plat)


def config(ctx) -> str:
    glob, stanza = config_opts(ctx.inv, ctx.host, ctx.platform, ctx.run.addresses, ctx.secrets)
    role = ("repository host" if ctx.host.has("backup") and mode(ctx.inv) == "host"
            else f"database host (repository: {mode(ctx.inv)})")
    return render("pgbackrest/pgbackrest.conf.j2", role=role, group=owner(ctx.inv)
                  if runs_backups(ctx.inv, ctx.host) else pgsql.names(ctx.platform).user,
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
    for host in [*run.inv.with_role("postgres"), repo_host(run.inv)]:
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
    inv, plat, host, pg = ctx.inv, ctx.platform, ctx.host, pgsql.names(ctx.platform)
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
    if (mode(inv) in ("host", "local") and (is_repo or mode(inv) == "local")) or mode(inv) == "path":
        out.append(Directory(repo_path(inv), owner=user, group=user, mode=0o750))
    if mode(inv) == "host":
        out += _ssh_steps(ctx, user, REPO_HOME if is_repo else pg.home)
    units = (timer_steps(ctx, user) if runs_backups(inv, host) else []) + \
        (metrics_steps(ctx) if inv.settings.monitoring else [])
    # unit files before the first service action: the runner's one daemon-reload comes right before it
    return out + [s for s in units if not isinstance(s, Service)] + [s for s in units if isinstance(s, Service)]


METRICS_SCRIPT = "/usr/local/lib/airflow-ha/pgbackrest-metrics.sh"
METRICS_UNIT = "airflow-ha-backup-metrics"


def metrics_steps(ctx) -> list:
    """With monitoring: a 5-minute timer writes backup age / WAL archiving for node_exporter's textfile collector."""
    inv, host = ctx.inv, ctx.host
    script = render("pgbackrest/metrics.sh.j2", backups=runs_backups(inv, host), owner=owner(inv), stanza=STANZA,
                    database=host.has("postgres"), port=inv.ports.postgres)
    return periodic_script("fabfile/backup.py", METRICS_UNIT, METRICS_SCRIPT, script,
                           "backup metrics for node_exporter", "backup metrics every 5 minutes",
                           {"OnBootSec": "2min", "OnUnitActiveSec": "5min"})


def alert_rules(inv) -> str:
    """files/monitoring/alerts-backup.yml.j2 with the health thresholds (expected + slack, twice that)."""
    warn = expected_hours(inv) + SLACK_HOURS
    return render("monitoring/alerts-backup.yml.j2", warn_hours=warn, fail_hours=2 * warn,
                  archive_timeout=ARCHIVE_TIMEOUT)


def timer_steps(ctx, user: str) -> list:
    inv = ctx.inv
    b = inv.settings.backup
    primary_only = mode(inv) != "host" and pgsql.patroni_mode(inv)
    out = [
        File(SCRIPT, render("pgbackrest/backup.sh.j2", stanza=STANZA, primary_only=primary_only,
                            port=inv.ports.postgres), mode=0o755),
        File(f"/etc/systemd/system/{SERVICE}.service", render("pgbackrest/airflow-ha-backup@.service.j2",
                                                              stanza=STANZA, user=user, script=SCRIPT),
             notify=("daemon-reload",)),
    ]
    schedules = {"full": b.full_schedule, "diff": b.diff_schedule}
    timers = {kind: f"airflow-ha-backup-{kind}.timer" for kind in schedules}
    out += [File(f"/etc/systemd/system/{unit}", render("pgbackrest/airflow-ha-backup.timer.j2", type=kind,
                                                      schedule=schedules[kind]), notify=("daemon-reload", unit))
            for kind, unit in timers.items() if schedules[kind]]
    return out + [Service(unit, present=bool(schedules[kind])) for kind, unit in timers.items()]


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
    if pgsql.patroni_mode(inv):
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


def utc_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _size(n: int) -> str:
    kib = 1024
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < kib or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= kib
    return str(n)


def table(info: dict) -> str:
    """`inv backup.list`: type, start, stop (UTC), size, size in the repository, WAL range."""
    from tabulate import tabulate
    rows = [[b.type + (" (error)" if b.error else ""), utc_time(b.start), utc_time(b.stop), _size(b.size),
             _size(b.repo_size), f"{b.wal_start} - {b.wal_stop}", b.label] for b in info["backups"]]
    head = ["type", "start (UTC)", "stop (UTC)", "size", "in repo", "WAL range", "label"]
    repo = sum(b.repo_size for b in info["backups"])
    return (tabulate(rows, headers=head) + f"\n{len(rows)} backup(s), {_size(repo)} of backups in the repository; "
            f"WAL archive {info['wal_min'] or '-'} .. {info['wal_max'] or '-'} (stanza status: {info['message']})")


def expected_hours(inv) -> int:
    b = inv.settings.backup
    return b.max_age_hours or (24 if b.diff_schedule else 168)


def age_check(info: dict, now: float, expected: int):
    """Health row: age of the newest successful backup (warn past expected + slack, fail at twice that)."""
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
    archived, failed, last_ok, last_fail = row
    if last_fail and (not last_ok or last_fail > last_ok):
        return Check("cluster", "wal archiving", "fail", f"archive_command failing since {last_fail:%Y-%m-%d %H:%M:%S}"
                     f" ({failed} failures; last success {last_ok:%H:%M:%S} )" if last_ok else
                     f"archive_command failing ({failed} failures, never succeeded)")
    if not archived:
        return Check("cluster", "wal archiving", "warn", "no WAL segment archived yet")
    return Check("cluster", "wal archiving", "ok", f"{archived} archived, last {last_ok:%Y-%m-%d %H:%M:%S}"
                 + (f", {failed} earlier failures" if failed else ""))


def health_checks(run) -> list:
    """`inv health`: "no backups" (warn) or the last backup's age (WAL archiving: `database_checks`)."""
    if not enabled(run.inv):
        return [Check("cluster", "backups", "warn", "no backups: no backup host, backup.repo_path or S3 "
                      "(README \"Backups\")")]
    try:
        host = backup_runner(run)
        info = info_from(run, host)
    except Exception as exc:
        return [Check("cluster", "last backup", "fail", f"pgbackrest info: {str(exc)[:80]}")]
    return [age_check(info, time.time(), expected_hours(run.inv))]


def database_checks(run, cur) -> list:
    """With a repository: the WAL archiving row from the primary's pg_stat_archiver."""
    if not enabled(run.inv):
        return []
    cur.execute("SELECT archived_count, failed_count, last_archived_time, last_failed_time FROM pg_stat_archiver")
    return [archiver_check(cur.fetchone())]


def info_from(run, host) -> dict:
    res = run.remote(host.name).sh(f"runuser -u {owner(run.inv)} -- pgbackrest --stanza={STANZA} --output=json info",
                                   timeout=60)
    if not res.ok:
        raise UserError(f"pgbackrest info on {host.name}: exit {res.rc}: {res.err.strip()[-200:]}", "", "")
    return parse_info(res.out)


def validate(inv) -> None:
    """One repository: at most one `backup` host, not also S3; S3 complete; sane retention and schedules."""
    b, path = inv.settings.backup, inv.path
    hosts = inv.with_role("backup")
    if len(hosts) > 1:
        raise InventoryError(f"{len(hosts)} backup hosts ({', '.join(h.name for h in hosts)}): pgBackRest "
                             "keeps one repository here", f"{path}: hosts", "give the 'backup' role to one host")
    if hosts and b.s3_bucket:
        raise InventoryError("a backup host and backup.s3_bucket: two repositories", f"{path}: cluster.backup",
                             "keep the 'backup' role or the S3 settings, not both")
    if hosts and pgsql.patroni_mode(inv) and hosts[0].has("postgres"):
        raise InventoryError(f"backup host {hosts[0].name} is also a Patroni member: the repository would be "
                             "lost with that member", f"{path}: hosts.{hosts[0].name}.roles",
                             "give the 'backup' role to a host without 'postgres'")
    missing = [k for k, v in (("s3_endpoint", b.s3_endpoint), ("s3_region", b.s3_region)) if b.s3_bucket and not v]
    if missing:
        raise InventoryError(f"backup.s3_bucket without backup.{missing[0]}", f"{path}: cluster.backup",
                             "set s3_bucket, s3_endpoint and s3_region together (e.g. s3.us-east-1.amazonaws.com, "
                             "us-east-1)")
    if b.s3_uri_style not in (None, "host", "path"):
        raise InventoryError(f"backup.s3_uri_style {b.s3_uri_style!r}", f"{path}: cluster.backup.s3_uri_style",
                             "use host (AWS) or path (most S3-compatible stores, e.g. MinIO)")
    if b.repo_path is not None and not b.repo_path.startswith("/"):
        raise InventoryError(f"backup.repo_path {b.repo_path!r} is not absolute", f"{path}: cluster.backup.repo_path",
                             "write an absolute path such as /var/lib/pgbackrest")
    if b.retention_full < 1:
        raise InventoryError("backup.retention_full must be at least 1", f"{path}: cluster.backup.retention_full",
                             "keep 2 or more full backups (the default is 2)")
    for key, schedule in (("full_schedule", b.full_schedule), ("diff_schedule", b.diff_schedule)):
        if not CALENDAR.match(schedule):
            raise InventoryError(f"backup.{key} {schedule!r} is not a systemd calendar expression",
                                 f"{path}: cluster.backup.{key}", "write e.g. 'Sun *-*-* 01:00:00' or 'daily', "
                                 "'' for none (`systemd-analyze calendar` checks it)")
    if not b.full_schedule:
        raise InventoryError("backup.full_schedule is empty: differential backups need a full one",
                             f"{path}: cluster.backup.full_schedule", "use e.g. 'Sun *-*-* 01:00:00' (the default)")


class Backup(Component):
    """pgBackRest on the database hosts and the repository host; the stanza in `finalize`."""

    name = NAME
    roles = (Role("backup"),)
    settings = BackupSettings
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    validate = staticmethod(validate)
    prepare = staticmethod(prepare)
    finalize = staticmethod(finalize)
    health_checks = staticmethod(health_checks)
    database_checks = staticmethod(database_checks)


COMPONENT = Backup()
