"""`inv upgrade`: another Airflow version (or back to the previous one) with no failed task (issue 16).

One mechanism: `inv upgrade --airflow-version X` writes `airflow_version: X` into the inventory file and
runs `inv deploy`; editing the file and running `inv deploy` does the same. This module only adds what
comes before: the checks, the plan (`--check`), and the rollback's choice and refusal. The deploy then:

1. builds X's wheelhouse on the control machine from X's constraints file (none: one error, nothing changed);
2. installs X into /opt/airflow/venvs/X beside the running venv on every host, keeps 2 venvs (airflow.py);
3. when X's schema head differs from the database's revision: `pg_dump -Fc` on the database host (the
   single postgres host or the Patroni leader), then `airflow db migrate` once, with X's venv;
4. rolls per role across hosts, one host at a time within each phase, each health-gated: every api-server
   (drained from nginx), then triggerers and dag-processors, workers (warm shutdown), schedulers, Flower;
   a host's `current` link flips with its first restart (services.py `roll_plans`).

`--rollback` is the same deploy towards the other installed version, allowed only while the database
schema is what that version expects (patch releases); otherwise it refuses and says how to restore the
backup. Airflow supports live upgrades only without schema changes (installation/upgrading.rst): with a
migration, processes of the old version run against the new schema until their phase restarts them; the
plan says so.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import airflow, postgres, services, stack
from .components import load_inventory
from .core.errors import PreconditionError, UserError
from .core.runner import Options, Run, fail


@dataclass
class HostVenvs:
    """What one host runs and has installed."""

    current: str = ""                              # the version `current` points at ("" = none)
    heads: dict = field(default_factory=dict)      # installed version -> its recorded schema head ("" = unknown)


def state_script() -> str:
    """One round trip: the version `current` runs, each installed venv with its schema head; a legacy
    (not yet adopted) /opt/airflow/venv reads as the current version."""
    venvs, legacy, head = airflow.VENVS, airflow.LEGACY_VENV, airflow.SCHEMA_HEAD_NAME
    version = f"{legacy}/bin/python -c 'import importlib.metadata as m; print(m.version(\"apache-airflow\"))'"
    return (f"c=$(readlink {airflow.VENV} 2>/dev/null) && echo \"@@current ${{c##*/}}\"\n"
            f"if [ ! -L {airflow.VENV} ] && [ -x {legacy}/bin/python ]; then v=$({version})\n"
            f"  echo \"@@current $v\"; echo \"@@venv $v $(sed -n 2p {legacy}/{head} 2>/dev/null)\"; fi\n"
            f"for d in {venvs}/*/; do n=$(basename \"$d\"); [ -d \"$d\" ] && [ \"$n\" != current ] || continue\n"
            f"  echo \"@@venv $n $(sed -n 2p \"$d{head}\" 2>/dev/null)\"; done")


def parse_state(out: str) -> HostVenvs:
    state = HostVenvs()
    for line in out.splitlines():
        tag, *words = line.split()
        if tag == "@@current" and words:
            state.current = words[0]
        elif tag == "@@venv" and words:
            state.heads[words[0]] = words[1] if len(words) > 1 else ""
    return state


def read_state(run, hosts) -> dict[str, HostVenvs]:
    """host name -> HostVenvs, asked of every host in parallel."""
    outs = run.parallel(lambda h: run.remote(h.name).sh(state_script(), timeout=30).out, hosts)
    return {h.name: parse_state(out) for h, out in zip(hosts, outs, strict=True)}


def previous_version(states: dict[str, HostVenvs]) -> str:
    """The version a rollback goes to: on every host, the one installed venv that `current` does not run."""
    currents = {s.current for s in states.values()}
    others = {name: sorted(set(s.heads) - {s.current}) for name, s in states.items()}
    prev = {tuple(o) for o in others.values()}
    if len(currents) != 1 or len(prev) != 1 or len(next(iter(prev))) != 1:
        detail = ", ".join(f"{n}: runs {s.current or '-'}, also has {', '.join(others[n]) or 'nothing'}"
                           for n, s in states.items())
        raise PreconditionError(f"no single previous version to roll back to ({detail})", "Airflow hosts",
                                "finish the upgrade first (`inv deploy`), or give the version: "
                                "`inv upgrade --airflow-version X`")
    return next(iter(prev))[0]


def migrate_verdict(db_rev: str | None, head: str | None) -> str:
    """What `db migrate` will do, in words (the plan's "migrate:" line)."""
    if db_rev is None:
        return "unknown: the database did not answer"
    if not db_rev:
        return "yes: empty database (first deploy), no backup needed"
    if not head:
        return f"unknown: no schema head for the new version (database at {db_rev})"
    if db_rev == head:
        return f"no: schema already at {head}"
    return (f"yes: schema {db_rev} -> {head}; processes of the old version run against the new schema until "
            "their phase restarts them (Airflow supports live upgrades only without migrations: expect errors or "
            "downtime)")


def check_rollback(target: str, db_rev: str | None, expected: str, backup: postgres.Backup, db_host: str) -> None:
    """A rollback runs only while the schema is what `target` expects; else one error: how to restore."""
    if db_rev is not None and expected and db_rev == expected:
        return
    if db_rev is None:
        raise PreconditionError("the database did not answer: its schema cannot be checked",
                                f"database on {db_host}", "check `inv health`, then try again")
    found = (f"restore the backup taken before the upgrade, {backup.path}: stop every Airflow unit "
             f"(systemctl stop 'airflow-*' on each host), then as root on {backup.host}: "
             f"{backup.restore()}; then run `inv upgrade --rollback` again") if backup.path else (
        f"no backup of schema {expected or '?'} found in {postgres.BACKUP_DIR} on the postgres hosts: restore "
        "your own, or stay on this version")
    raise PreconditionError(
        f"cannot roll back to Airflow {target}: the database schema is at {db_rev}, Airflow {target} expects "
        f"{expected or 'an unknown revision'} (the upgrade migrated it; `airflow db downgrade` restores no data)",
        f"database on {db_host}", found)


def plan_lines(froms: list[str], target: str, migrate: str, backup: str, hosts: list) -> list[str]:
    """The upgrade plan, as `--check` prints it (and every run, before the deploy)."""
    phases = [(roles, on) for roles, on in services.phase_hosts(hosts) if on]
    return [
        f"upgrade plan: Airflow {', '.join(froms) or 'none'} -> {target}",
        f"  install:  /opt/airflow/venvs/{target} beside the running venv on every Airflow host (2 venvs kept)",
        f"  migrate:  {migrate}",
        f"  backup:   {backup}",
        "  order:    per role, one host at a time, each health-gated (api-servers drained from nginx, workers",
        "            warm-stopped); a host's `current` flips just before its first restart",
        *(f"            {i}. {services.phase_label(roles)}: {' -> '.join(h.name for h in on)}"
          for i, (roles, on) in enumerate(phases, 1)),
    ]


def set_inventory_version(text: str, version: str) -> str:
    """The inventory text with `cluster.airflow_version: <version>` (comments and layout kept)."""
    line = re.compile(r"^(\s+airflow_version:\s*)([^\s#]+)", re.M)
    if line.search(text):
        return line.sub(lambda m: f"{m.group(1)}{version}", text, count=1)
    if re.search(r"^cluster:\s*$", text, re.M):
        return re.sub(r"^cluster:\s*$", f"cluster:\n  airflow_version: {version}", text, count=1, flags=re.M)
    return f"cluster:\n  airflow_version: {version}\n" + text


def _refuse_pinned(inv) -> None:
    """Inventories that pin one version's artifacts cannot take another version from the command line."""
    for key, value in (("wheelhouse", inv.settings.wheelhouse), ("constraints_url", inv.settings.constraints_url)):
        if value:
            raise UserError(f"cluster.{key} pins the files of one Airflow version", f"{inv.path}: cluster.{key}",
                            f"point {key} at the new version's, set airflow_version there and run `inv deploy`")


def _backup_line(db, migrate: str, db_rev: str | None, target: str) -> str:
    if not migrate.startswith("yes: schema"):
        return "none (no schema change)"
    where = db.name if db else "the Patroni leader (none answers now)"
    return f"pg_dump -Fc on {where} -> {postgres.backup_glob(db_rev, target)} (0600, owner postgres)"


def prepare(inv, target: str, rollback: bool):
    """Connect, read the hosts, check the target; returns (plan lines) or raises UserError."""
    airflow.ensure_constraints_local(inv)          # a version without constraints: error, nothing changed
    wheels = airflow.ensure_wheelhouse_local(inv)
    hosts = airflow.airflow_hosts(inv)
    r = Run(inv, hosts, Options(silent=True))
    try:
        r.connect()
        if r.failed:
            name = next(iter(r.failed))
            raise PreconditionError(f"{name} unreachable: {r.failed[name]}", f"{inv.path}: hosts.{name}",
                                    "every Airflow host must be up to change versions")
        states = read_state(r, hosts)
        if rollback:
            target = previous_version(states)
            inv.settings = dataclasses.replace(inv.settings, airflow_version=target)
            airflow.ensure_constraints_local(inv)
            wheels = airflow.ensure_wheelhouse_local(inv)
        head = airflow.schema_head_of_wheelhouse(wheels) or next(
            (s.heads.get(target) for s in states.values() if s.heads.get(target)), "")
        db_rev = postgres.db_revision(r, hosts[0])
        db = postgres.backup_host(r)
        if rollback:
            backup = postgres.find_backup(r, head) if head else postgres.Backup()
            check_rollback(target, db_rev, head, backup, db.name if db else "the Patroni leader")
        migrate = migrate_verdict(db_rev, head)
        froms = sorted({s.current for s in states.values() if s.current})
        lines = plan_lines(froms, target, migrate, _backup_line(db, migrate, db_rev, target), hosts)
        return target, lines
    finally:
        r.close()


def run(version: str | None = None, rollback: bool = False, inventory=None, check: bool = False,
        verbose: bool = False) -> int:
    """`inv upgrade`: print the plan, then (unless --check) write the version into the inventory and deploy."""
    try:
        inv = load_inventory(inventory)
        if bool(version) == rollback:
            raise UserError("give either --airflow-version X or --rollback", "inv upgrade")
        _refuse_pinned(inv)
        if version:
            inv.settings = dataclasses.replace(inv.settings, airflow_version=version)
        target, lines = prepare(inv, version or "", rollback)
        print("\n".join(lines), flush=True)
        if check:
            return stack.run(None, None, inventory, check=True, verbose=verbose,
                             overrides={"airflow_version": target})
        path = Path(inv.path)
        path.write_text(set_inventory_version(path.read_text(), target))
        print(f"{path}: airflow_version: {target}; deploying (the same as `inv deploy`)", flush=True)
        return stack.run(None, None, inventory, verbose=verbose)
    except UserError as exc:
        fail(exc)
