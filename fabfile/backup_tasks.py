"""The backup commands over a running cluster: `inv backup`, `inv backup.list`, `inv restore`.

The pgBackRest component (fabfile/backup.py) converges what they use; these open the inventory (checked
against every component, fabfile/components.py) and drive the repository host or the primary.
"""

from __future__ import annotations

import sys
import time

from . import patroni, postgres
from .backup import (
    SERVICE,
    TYPES,
    Restore,
    backup_runner,
    backup_set,
    enabled,
    info_from,
    mode,
    restore_plan,
    table,
    target_epoch,
    with_offset,
)
from .components import load_inventory
from .core.errors import UserError
from .core.runner import Options, Run, fail


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
    if not postgres.patroni_mode(run.inv):
        return run.inv.with_role("postgres")[0].name
    host = patroni.leader(run)
    return host.name if host else run.inv.with_role("postgres")[0].name
