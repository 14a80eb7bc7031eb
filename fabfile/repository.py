"""Where the pgBackRest repository is, read from the inventory alone (fabfile/backup.py explains the modes).

A leaf module: PostgreSQL turns WAL archiving on from it, pgBackRest configures itself from it, monitoring
and health warn from it, without importing each other.
"""

from __future__ import annotations

STANZA = "airflow"
DEFAULT_REPO = "/var/lib/pgbackrest"
REPO_USER = "pgbackrest"
ARCHIVE_COMMAND = f"pgbackrest --stanza={STANZA} archive-push %p"
ARCHIVE_TIMEOUT = 300


def repo_host(inv):
    hosts = inv.with_role("backup")
    return hosts[0] if hosts else None


def mode(inv) -> str:
    """host | local | path | s3 | none (module docstring)."""
    b = inv.settings.backup
    if b.s3_bucket:
        return "s3"
    host = repo_host(inv)
    if host:
        return "local" if host.has("postgres") else "host"
    return "path" if b.repo_path else "none"


def enabled(inv) -> bool:
    return mode(inv) != "none"


def repo_path(inv) -> str:
    return inv.settings.backup.repo_path or DEFAULT_REPO


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
