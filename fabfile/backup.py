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

Commands (tasks.py): `inv backup`, `inv backup.list` (from `info --output=json`), `inv restore`.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .core.errors import UserError
from .core.steps import Command, Directory, File, Packages, Service, periodic_script
from .core.templates import render

NAME = "backup"
STANZA = "airflow"
CONF = "/etc/pgbackrest/pgbackrest.conf"
LOG_DIR = "/var/log/pgbackrest"
DEFAULT_REPO = "/var/lib/pgbackrest"
REPO_USER = "pgbackrest"
REPO_HOME = "/home/pgbackrest"
SCRIPT = "/usr/local/lib/airflow-ha/pgbackrest-backup.sh"
SERVICE = "airflow-ha-backup@"
ARCHIVE_COMMAND = f"pgbackrest --stanza={STANZA} archive-push %p"
ARCHIVE_TIMEOUT = 300
TYPES = ("full", "diff", "incr")
#: `info --output=json` status codes that mean "no stanza yet" (1 missing stanza path, 3 missing stanza data)
MISSING_STANZA = (1, 3)
SLACK_HOURS = 6


# -- where the repository is ---------------------------------------------------------------------------


def repo_host(inv):
    hosts = inv.with_role("backup")
    return hosts[0] if hosts else None


def mode(inv) -> str:
    """host | local | path | s3 | none (module docstring)."""
    b = inv.cluster["backup"]
    if b["s3_bucket"]:
        return "s3"
    host = repo_host(inv)
    if host:
        return "local" if host.has("postgres") else "host"
    return "path" if b["repo_path"] else "none"


def enabled(inv) -> bool:
    return mode(inv) != "none"


def repo_path(inv) -> str:
    return inv.cluster["backup"]["repo_path"] or DEFAULT_REPO


def runs_backups(inv, host) -> bool:
    """The host whose timers start backups: the repo host, else every PostgreSQL host (primary only)."""
    return host.has("backup") if mode(inv) == "host" else host.has("postgres")


def owner(inv) -> str:
    """The OS user that runs backups: `pgbackrest` on a repo host, else postgres (its name on every platform)."""
    return REPO_USER if mode(inv) == "host" else "postgres"


def archive_settings(inv) -> list[tuple[str, str]]:
    """PostgreSQL settings for WAL archiving ([] without a repository: nothing changes)."""
    if not enabled(inv):
        return []
    return [("archive_mode", "on"), ("archive_command", ARCHIVE_COMMAND), ("archive_timeout", str(ARCHIVE_TIMEOUT))]


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
    p = f"pg{index}"
    data = plat.paths["pg_patroni_data"] if inv.patroni else plat.paths["pg_data"]
    remote = [(f"{p}-host", address), (f"{p}-host-user", plat.users["postgres"])] if address else []
    return remote + [(f"{p}-path", data), (f"{p}-port", str(inv.cluster["ports"]["postgres"])),
                     (f"{p}-socket-path", "/var/run/postgresql")]


def config_opts(inv, host, plat, addresses: dict, secrets: dict) -> tuple[list, list]:
    """([global] options, [airflow] options) for one host. Pure: the spec goldens show the result."""
    log = [("log-level-file", "detail")]
    if mode(inv) == "host" and host.has("backup"):
        pgs = [o for i, h in enumerate(inv.with_role("postgres"), 1) for o in _pg_opts(inv, plat, i, addresses[h.name])]
        standby = [("backup-standby", "y")] if inv.patroni else []
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
                  if runs_backups(ctx.inv, ctx.host) else ctx.platform.users["postgres"],
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
        File(f"{ssh}/id_ed25519", ctx.secrets["pgbackrest_ssh_key"], owner=user, group=user, mode=0o600, secret=True),
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
        except Exception:  # noqa: BLE001 - an unreachable host is reported by the component itself
            continue
        if out.startswith("ssh-"):
            keys[host.name] = out
    run.data["ssh_host_keys"] = keys


# -- the component -------------------------------------------------------------------------------------


def applies(inv, host) -> bool:
    return enabled(inv) and (host.has("postgres") or (mode(inv) == "host" and host.has("backup")))


def steps(ctx) -> list:
    inv, plat, host = ctx.inv, ctx.platform, ctx.host
    pg_user = plat.users["postgres"]
    is_repo = mode(inv) == "host" and host.has("backup")
    user = REPO_USER if is_repo else pg_user
    out = [Packages(target="pgbackrest", names=tuple(plat.packages["pgbackrest"]), manager=plat.pkg)]
    if is_repo:
        out.append(Command(f"user {REPO_USER}", unless=f"getent passwd {REPO_USER}",
                           script=f"useradd --system --user-group --create-home --home-dir {REPO_HOME} "
                                  f"--shell /bin/sh {REPO_USER}"))
    out += [
        Directory("/etc/pgbackrest", mode=0o755),
        File(CONF, config(ctx), group=user, mode=0o640, notify=("pgbackrest-check",), secret=True),
        Directory(LOG_DIR, owner=user, group=user, mode=0o770),
    ]
    if mode(inv) in ("host", "local") and (is_repo or mode(inv) == "local") or mode(inv) == "path":
        out.append(Directory(repo_path(inv), owner=user, group=user, mode=0o750))
    if mode(inv) == "host":
        out += _ssh_steps(ctx, user, REPO_HOME if is_repo else plat.paths["pg_home"])
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
    b = inv.cluster["backup"]
    primary_only = mode(inv) != "host" and inv.patroni
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


def finalize_steps(run) -> list:
    """Offline plans: the stanza steps (real runs pick the host in `finalize`)."""
    host = backup_runner(run) if not getattr(run, "offline", False) else _offline_runner(run.inv)
    return stanza_steps(run, host)


def _offline_runner(inv):
    return repo_host(inv) if mode(inv) == "host" else inv.with_role("postgres")[0]


def finalize(run, hosts) -> None:
    if run.opts.check or not hosts or not enabled(run.inv):
        return
    try:
        host = backup_runner(run)
        run.converge(host, NAME, stanza_steps(run, host))
    except Exception as exc:  # noqa: BLE001
        for h in hosts:
            run.fail_host(h, NAME, f"stanza: {exc}")


def backup_runner(run):
    """Where backup commands run: the repo host, else the primary (Patroni: the leader)."""
    inv = run.inv
    if mode(inv) == "host":
        return repo_host(inv)
    if inv.patroni:
        from . import patroni
        leader = patroni.leader(run)
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
    except Exception as exc:  # noqa: BLE001
        return [Check("cluster", "last backup", "fail", f"pgbackrest info: {str(exc)[:80]}")]
    return [age_check(info, time.time(), expected_hours(run.inv))]


def info_from(run, host) -> dict:
    res = run.remote(host.name).sh(f"runuser -u {owner(run.inv)} -- pgbackrest --stanza={STANZA} --output=json info",
                                   timeout=60)
    if not res.ok:
        raise UserError(f"pgbackrest info on {host.name}: exit {res.rc}: {res.err.strip()[-200:]}", "", "")
    return parse_info(res.out)


# -- commands: inv backup, inv backup.list, inv restore -----------------------------------------------


def _open(inventory):
    from .core import inventory as inventory_mod
    from .core.runner import Options, Run
    inv = inventory_mod.load(inventory)
    if not enabled(inv):
        raise UserError("no backup repository in the inventory", f"{inv.path}: hosts / cluster.backup",
                        "give one host the 'backup' role, or set cluster.backup.repo_path or S3 (README \"Backups\")")
    run = Run(inv, list(inv.hosts.values()), Options(quiet=True, silent=True))
    run.connect()
    return run


def backup_now(inventory=None, kind: str = "full") -> int:
    """`inv backup`: one backup now (as the timers do), then the list."""
    from .core.runner import fail
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
    from .core.runner import fail
    try:
        run = _open(inventory)
        try:
            print(table(info_from(run, backup_runner(run))))
        finally:
            run.close()
    except UserError as exc:
        fail(exc)
    return 0


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
    if inv.patroni:
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


def restore(inventory=None, target: str | None = None, yes: bool = False) -> int:
    """`inv restore`: the plan without --yes; with it, the whole restore (see restore_plan)."""
    from .core.runner import fail
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
    if not run.inv.patroni:
        return run.inv.with_role("postgres")[0].name
    from . import patroni
    host = patroni.leader(run)
    return host.name if host else run.inv.with_role("postgres")[0].name


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

    def plat(self, host: str):
        return self.run.facts[host].platform

    def pgbackrest(self, host: str) -> str:
        return f"runuser -u {self.plat(host).users['postgres']} -- pgbackrest --stanza={STANZA}"

    def execute(self) -> None:
        self.archive_current_wal()
        self.stop_airflow()
        if self.inv.patroni:
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
        return f"runuser -u {self.plat(host).users['postgres']} -- psql -XAtq -p {port} -d postgres"

    def restore_single(self) -> None:
        host, unit = self.leader, self.plat(self.leader).units["postgres"]
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
        return self.plat(host).units["patroni"]

    def stop_patroni(self) -> None:
        """Replicas first, the leader last (it removes its leader key on a clean stop)."""
        for m in self.replicas() + [self.leader]:
            self.sh(m, f"systemctl stop {self.patroni_unit(m)}", timeout=180, what="stop Patroni")
        self.say(f"Patroni stopped on {', '.join(self.members())}")

    def restore_outside_patroni(self) -> None:
        """pgbackrest restore, then PostgreSQL replays WAL to the target and promotes under pg_ctl; stopped again
        without pgBackRest's recovery settings, a clean primary for Patroni to take over."""
        plat = self.plat(self.leader)
        data, conf_dir = plat.paths["pg_patroni_data"], plat.paths["pg_patroni_conf_dir"]
        pg_ctl = f"runuser -u {plat.users['postgres']} -- {plat.paths['pg_bin']}/pg_ctl -D {data} -w -t 3600"
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
            data = shlex.quote(self.plat(m).paths["pg_patroni_data"])
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
