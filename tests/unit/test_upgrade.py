"""`inv upgrade` (issue 16): the plan, the rollback's choice and refusal, venv adoption and pruning, the
roll order (real runner, fake hosts: per role on a version change, per host otherwise), the inventory edit.
No host, no database."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from fabfile import airflow, nginx, postgres, services, upgrade
from fabfile.components import load_inventory
from fabfile.core import runner
from fabfile.core.errors import PreconditionError
from fabfile.core.offline import facts_text
from fabfile.core.runner import Options, execute
from tests.unit import test_rolling as rolling

SPEC = Path(__file__).resolve().parents[1] / "spec"
TIERED = """cluster:
  vip: 192.0.2.100
hosts:
  s1: {address: 192.0.2.21, roles: [scheduler, redis, sentinel]}
  w1: {address: 192.0.2.22, roles: [worker, redis, sentinel, postgres]}
  t1: {address: 192.0.2.23, roles: [triggerer, dag_processor, redis, sentinel, nginx]}
  a1: {address: 192.0.2.24, roles: [api_server, nginx]}
  a2: {address: 192.0.2.25, roles: [api_server, nginx]}
"""


def sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", f"( set -e\n{script}\n)"], capture_output=True, text=True, check=False)


@pytest.fixture
def venvs(tmp_path, monkeypatch):
    """airflow's venv paths moved under tmp_path."""
    monkeypatch.setattr(airflow, "VENVS", str(tmp_path / "venvs"))
    monkeypatch.setattr(airflow, "VENV", str(tmp_path / "venvs" / "current"))
    monkeypatch.setattr(airflow, "LEGACY_VENV", str(tmp_path / "venv"))
    (tmp_path / "venvs").mkdir()
    return tmp_path


def fake_venv(path: Path, version: str, head: str = "") -> None:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text(f"#!/bin/sh\necho {version}\n")
    (path / "bin" / "python").chmod(0o755)
    if head:
        (path / airflow.SCHEMA_HEAD_NAME).write_text(f"install-id\n{head}\n")


def run_step(step) -> None:
    assert sh(step.probe()).stdout.strip() == "run", "the step has something to do"
    res = sh(step.script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sh(step.probe()).stdout.strip() == "done", "idempotent: nothing left to do"


# -- venvs: adoption of the single venv, pruning to N = 2 ---------------------------------------------------
def test_legacy_venv_is_adopted_in_place_and_current_points_at_it(venvs):
    fake_venv(venvs / "venv", "3.3.1", head="aaaaaaaaaaaa")
    run_step(airflow.adopt_legacy_step())
    assert (venvs / "venv" / "bin" / "python").is_file(), "not moved: running processes keep their paths"
    assert Path(airflow.VENV).resolve() == (venvs / "venv").resolve()
    assert Path(airflow.venv_dir("3.3.1")).resolve() == (venvs / "venv").resolve()


def test_prune_keeps_the_running_venv_and_the_target(venvs):
    for v in ("3.2.0", "3.3.1", "3.3.2"):
        fake_venv(venvs / "venvs" / v, v)
    (venvs / "venvs" / "current").symlink_to(venvs / "venvs" / "3.3.1")
    run_step(airflow.prune_step("3.3.2"))
    assert sorted(p.name for p in (venvs / "venvs").iterdir()) == ["3.3.1", "3.3.2", "current"]


def test_prune_removes_an_adopted_legacy_venv_with_its_link(venvs):
    fake_venv(venvs / "venv", "3.3.0")
    run_step(airflow.adopt_legacy_step())
    fake_venv(venvs / "venvs" / "3.3.1", "3.3.1")
    Path(airflow.VENV).unlink()
    Path(airflow.VENV).symlink_to(venvs / "venvs" / "3.3.1")       # 3.3.1 runs now
    run_step(airflow.prune_step("3.3.2"))
    assert not (venvs / "venv").exists() and not (venvs / "venvs" / "3.3.0").is_symlink()
    assert (venvs / "venvs" / "3.3.1").is_dir()


def test_host_state_lists_current_and_installed_venvs(venvs):
    fake_venv(venvs / "venvs" / "3.3.1", "3.3.1", head="aaaaaaaaaaaa")
    fake_venv(venvs / "venvs" / "3.3.2", "3.3.2", head="bbbbbbbbbbbb")
    (venvs / "venvs" / "current").symlink_to(venvs / "venvs" / "3.3.2")
    state = upgrade.parse_state(sh(upgrade.state_script()).stdout)
    assert state.current == "3.3.2" and state.heads == {"3.3.1": "aaaaaaaaaaaa", "3.3.2": "bbbbbbbbbbbb"}


def test_host_state_of_a_legacy_install(venvs):
    fake_venv(venvs / "venv", "3.3.1", head="aaaaaaaaaaaa")
    state = upgrade.parse_state(sh(upgrade.state_script()).stdout)
    assert state.current == "3.3.1" and state.heads == {"3.3.1": "aaaaaaaaaaaa"}


# -- rollback: which version, and when it is refused --------------------------------------------------------
def _states(**hosts):
    return {n: upgrade.HostVenvs(cur, dict.fromkeys(vs, "h")) for n, (cur, vs) in hosts.items()}


def test_rollback_goes_to_the_other_installed_version():
    states = _states(node1=("3.3.2", ["3.3.1", "3.3.2"]), node2=("3.3.2", ["3.3.1", "3.3.2"]))
    assert upgrade.previous_version(states) == "3.3.1"


@pytest.mark.parametrize("states", [
    _states(node1=("3.3.2", ["3.3.2"])),                                              # nothing to go back to
    _states(node1=("3.3.2", ["3.3.1", "3.3.2"]), node2=("3.3.1", ["3.3.1", "3.3.2"])),  # upgrade half done
])
def test_rollback_without_one_previous_version_is_refused(states):
    with pytest.raises(PreconditionError, match="no single previous version"):
        upgrade.previous_version(states)


DUMP = "/var/backups/airflow-ha/airflow-20261130T010000Z-rev-aaaaaaaaaaaa-before-3.3.2.dump"
BACKUP = postgres.Backup("node2", DUMP, "/usr/pgsql-15/bin")


def test_rollback_is_allowed_while_the_schema_is_unchanged():
    upgrade.check_rollback("3.3.1", "aaaaaaaaaaaa", "aaaaaaaaaaaa", postgres.Backup(), "node3")


def test_rollback_after_a_migration_is_refused_naming_the_backup_and_pg_restore():
    with pytest.raises(PreconditionError) as err:
        upgrade.check_rollback("3.2.1", "bbbbbbbbbbbb", "aaaaaaaaaaaa", BACKUP, "node1")
    msg = err.value.message
    assert "cannot roll back to Airflow 3.2.1: the database schema is at bbbbbbbbbbbb" in msg
    assert DUMP in msg and "as root on node2" in msg, "where the backup lies (a former Patroni leader)"
    assert f"runuser -u postgres -- /usr/pgsql-15/bin/pg_restore --clean --if-exists -d airflow {DUMP}" in msg
    assert msg.count("\n") == 1, "one clear error: what, then how to fix"


def test_rollback_refusal_without_a_backup_says_so():
    with pytest.raises(PreconditionError, match="no backup of schema aaaaaaaaaaaa found in /var/backups/airflow-ha"):
        upgrade.check_rollback("3.2.1", "bbbbbbbbbbbb", "aaaaaaaaaaaa", postgres.Backup(), "node3")


class BackupHost:
    """A postgres host that answers find_backup's question: its newest dump (if any) and the server's bin dir."""

    def __init__(self, path):
        self.path = path

    def sh(self, script, timeout=0):
        from fabfile.core.remote import Result
        assert "ls -t /var/backups/airflow-ha/airflow-*-rev-aaaaaaaaaaaa-before-*.dump" in script
        return Result(0, f"path={self.path}\nbindir=/usr/lib/postgresql/15/bin\n", "")


def test_the_newest_backup_is_found_on_whichever_member_holds_it():
    """Patroni: each backup lies on the member that led when it was taken; the newest one wins."""
    older = DUMP.replace("20261130T010000Z", "20261001T010000Z")
    answers = {"node1": BackupHost(""), "node2": BackupHost(DUMP), "node3": BackupHost(older)}
    run = type("R", (), {"inv": load_inventory(SPEC / "hosts-patroni.yaml"), "remote": lambda self, n: answers[n]})()
    assert postgres.find_backup(run, "aaaaaaaaaaaa") == postgres.Backup("node2", DUMP, "/usr/lib/postgresql/15/bin")


# -- the plan -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("db_rev", "head", "starts"), [
    ("aaaaaaaaaaaa", "aaaaaaaaaaaa", "no: schema already at aaaaaaaaaaaa"),
    ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "yes: schema aaaaaaaaaaaa -> bbbbbbbbbbbb"),
    ("", "bbbbbbbbbbbb", "yes: empty database"),
    (None, "bbbbbbbbbbbb", "unknown: the database did not answer"),
])
def test_migrate_is_decided_from_the_db_revision_and_the_new_schema_head(db_rev, head, starts):
    assert upgrade.migrate_verdict(db_rev, head).startswith(starts)


def test_plan_prints_versions_migrate_backup_and_the_per_role_order():
    inv = load_inventory(SPEC / "hosts-patroni.yaml")       # the default layout: every host runs several roles
    lines = upgrade.plan_lines(["3.3.1"], "3.3.2", upgrade.migrate_verdict("a" * 12, "a" * 12),
                               upgrade._backup_line(inv.hosts["node3"], "no: schema already at x", "a" * 12, "3.3.2"),
                               list(inv.hosts.values()))
    text = "\n".join(lines)
    assert lines[0] == "upgrade plan: Airflow 3.3.1 -> 3.3.2"
    assert "migrate:  no: schema already at aaaaaaaaaaaa" in text and "backup:   none (no schema change)" in text
    assert [line.strip() for line in lines[-5:]] == [
        "1. api-server: node1 -> node2", "2. triggerer, dag-processor: node1 -> node2",
        "3. worker: node1 -> node2 -> node3", "4. scheduler: node1 -> node2", "5. flower: node3"]


def test_plan_names_the_backup_when_the_schema_changes():
    inv = load_inventory(SPEC / "hosts.yaml")
    line = upgrade._backup_line(inv.hosts["node3"], "yes: schema a -> b", "aaaaaaaaaaaa", "3.3.2")
    assert line == ("pg_dump -Fc on node3 -> /var/backups/airflow-ha/airflow-*-rev-aaaaaaaaaaaa-before-3.3.2.dump "
                    "(0600, owner postgres)")


def test_backup_step_writes_a_private_timestamped_dump_once():
    run = type("R", (), {"inv": load_inventory(SPEC / "hosts.yaml")})()
    [step] = postgres.backup_steps(run, "aaaaaaaaaaaa", "3.3.2")
    assert "install -d -o postgres -g postgres -m 0700 /var/backups/airflow-ha" in step.script
    assert "umask 077; b=$(psql -p 5432 -tAc" in step.script and "runuser -u postgres" in step.script
    assert '"$b/pg_dump" -Fc -p 5432 -d airflow' in step.script, "the server's own pg_dump (EL9: PGDG's)"
    assert "$(date -u +%Y%m%dT%H%M%SZ)-rev-aaaaaaaaaaaa-before-3.3.2.dump" in step.script
    assert step.unless == "ls /var/backups/airflow-ha/airflow-*-rev-aaaaaaaaaaaa-before-3.3.2.dump >/dev/null 2>&1"


def test_backup_script_dumps_with_the_servers_pg_dump(tmp_path, monkeypatch):
    """The script run for real, with stubs: runuser (runs the command as is), psql (the server's BINDIR),
    pg_dump (writes its -f file), install (mkdir)."""
    stubs, bindir = tmp_path / "stubs", tmp_path / "pgsql-15" / "bin"
    for name, body in {stubs / "runuser": 'shift 3; exec "$@"', stubs / "psql": f"echo {bindir}",
                       stubs / "install": 'for a; do d=$a; done; mkdir -p "$d"',
                       bindir / "pg_dump": 'while [ $# -gt 1 ]; do [ "$1" = -f ] && echo dump > "$2"; shift; done'}.items():
        name.parent.mkdir(parents=True, exist_ok=True)
        name.write_text(f"#!/bin/sh\n{body}\n")
        name.chmod(0o755)
    monkeypatch.setattr(postgres, "BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PATH", f"{stubs}:/usr/bin:/bin")
    run = type("R", (), {"inv": load_inventory(SPEC / "hosts.yaml")})()
    [step] = postgres.backup_steps(run, "aaaaaaaaaaaa", "3.3.2")
    res = sh(step.script)
    assert res.returncode == 0, res.stdout + res.stderr
    [dump] = (tmp_path / "backups").iterdir()
    assert re.fullmatch(r"airflow-\d{8}T\d{6}Z-rev-aaaaaaaaaaaa-before-3\.3\.2\.dump", dump.name)
    assert dump.read_text() == "dump\n" and f"backup: {dump}" in res.stdout


def test_schema_head_is_read_from_the_wheel(tmp_path):
    with zipfile.ZipFile(tmp_path / "apache_airflow_core-9.9.9-py3-none-any.whl", "w") as z:
        z.writestr("airflow/migrations/versions/0001_a.py", 'revision = "aaaaaaaaaaaa"\ndown_revision = None\n')
        z.writestr("airflow/migrations/versions/0002_b.py", "revision = 'bbbbbbbbbbbb'\ndown_revision = 'aaaaaaaaaaaa'\n")
        z.writestr("airflow/__init__.py", "")
    assert airflow.schema_head_of_wheelhouse(tmp_path) == "bbbbbbbbbbbb"
    assert airflow.schema_head_of_wheelhouse(tmp_path / "nothing-here") is None


def test_set_inventory_version_keeps_comments_and_layout():
    text = "# top\ncluster:\n  name: airflow\n  airflow_version: 3.3.2   # pinned\nhosts: {}\n"
    assert upgrade.set_inventory_version(text, "3.3.1") == text.replace("3.3.2   #", "3.3.1   #")
    assert upgrade.set_inventory_version("cluster:\n  name: a\nhosts: {}\n", "3.3.1") == \
        "cluster:\n  airflow_version: 3.3.1\n  name: a\nhosts: {}\n"


# -- the roll: per role across hosts on a version change, per host otherwise -------------------------------
class RollHost(rolling.FakeHost):
    """A running fake host that logs each apply's restarted units; `flips`: `current` is not at the target."""

    def __init__(self, name, log, flips):
        super().__init__(name, log)
        self.flips, self.scripts = flips, []

    def sh(self, script, timeout=0):
        if "@@begin" in script:
            self.scripts.append(script)
            self.log.append(("restart", self.name, *re.findall(r"systemctl restart (airflow-[a-z-]+)", script)))
        return super().sh(script, timeout)

    def _state(self, probe):
        if "readlink /opt/airflow/venvs/current" in probe and not self.flips:
            return "/opt/airflow/venvs/3.3.2\n"
        return super()._state(probe)


def roll(monkeypatch, inv, flips=True, check=False, failing=()) -> list:
    """The real services component over running fake hosts whose files all differ: restarts, drains, gates
    (a `failing` host's gate never passes)."""
    log = []
    monkeypatch.setattr(nginx, "set_drained", lambda run, host, drained: log.append(
        ("drain" if drained else "undrain", host.name)))
    monkeypatch.setattr(services.COMPONENT, "gate", lambda run, host: log.append(("gate", host.name)) or (
        "not answering" if host.name in failing else None))
    monkeypatch.setattr(runner, "Run", rolling.FakeRun)
    rolling.HOSTS.clear()
    rolling.HOSTS.update({n: RollHost(n, log, flips) for n in inv.hosts})
    opts = Options(check=check, gate_timeout=0.05, gate_interval=0.01)
    assert execute(inv, list(inv.hosts.values()), [services.COMPONENT], opts) == (1 if failing else 0)
    return [e for e in log if e[0] in ("restart", "drain", "undrain", "gate")]


def drained(name, *units):
    return [("drain", name), ("restart", name, *units), ("gate", name), ("undrain", name)]


def gated(name, *units):
    return [("restart", name, *units), ("gate", name)]


def test_a_version_change_on_colocated_hosts_rolls_per_role_across_hosts(monkeypatch):
    """Default layout (every host runs several roles): all api-servers first, drained one at a time, then
    triggerers/dag-processors, workers, schedulers, Flower; one host at a time, each restart gated."""
    events = roll(monkeypatch, load_inventory(SPEC / "hosts-patroni.yaml"))
    assert events == [
        *drained("node1", "airflow-api-server"), *drained("node2", "airflow-api-server"),
        *gated("node1", "airflow-triggerer"), *gated("node2", "airflow-dag-processor", "airflow-triggerer"),
        *gated("node1", "airflow-worker"), *gated("node2", "airflow-worker"), *gated("node3", "airflow-worker"),
        *gated("node1", "airflow-scheduler"), *gated("node2", "airflow-scheduler"),
        *gated("node3", "airflow-flower")]


def test_a_version_change_on_a_split_layout_rolls_role_hosts_in_airflow_order(tmp_path, monkeypatch):
    (tmp_path / "hosts.yaml").write_text(TIERED)
    events = roll(monkeypatch, load_inventory(tmp_path / "hosts.yaml"))
    assert events == [*drained("a1", "airflow-api-server"), *drained("a2", "airflow-api-server"),
                      *gated("t1", "airflow-dag-processor", "airflow-triggerer"), *gated("w1", "airflow-worker"),
                      *gated("s1", "airflow-scheduler")]


def test_current_flips_with_a_hosts_first_restart_and_each_unit_stamps_with_its_own(monkeypatch):
    """`current` flips in the host's first apply, before its restart; a unit's generation stamp is written
    in the apply that restarts it (a roll stopped earlier leaves it to restart on the next run)."""
    roll(monkeypatch, load_inventory(SPEC / "hosts-patroni.yaml"))
    for host in rolling.HOSTS.values():
        first, *later = host.scripts
        assert first.index("ln -sfn /opt/airflow/venvs/3.3.2 /opt/airflow/venvs/current") < \
            first.index("systemctl restart airflow-"), host.name
        assert not any("ln -sfn" in script for script in later), host.name
        for script in host.scripts:
            assert set(re.findall(r"\.airflow-ha-generation\.(airflow-[a-z-]+)", script)) == \
                set(re.findall(r"systemctl restart (airflow-[a-z-]+)", script)), host.name


def test_a_roll_stopped_in_the_api_server_phase_restarts_nothing_else(monkeypatch, capsys):
    events = roll(monkeypatch, load_inventory(SPEC / "hosts-patroni.yaml"), failing=("node2",))
    restarts = [e for e in events if e[0] == "restart"]
    assert restarts == [("restart", "node1", "airflow-api-server"), ("restart", "node2", "airflow-api-server")]
    out = capsys.readouterr().out
    assert out.count("rolling restart: skipped") == 8, "every later part of every host"
    assert "node3      services   warn         rolling restart: skipped, 10 change(s) not applied (roll stopped " \
           "at node2 (api-server): not answering)" in out, "node3's first part: `current` not flipped there"


def test_a_config_change_rolls_per_host(monkeypatch):
    """No version change: all of a host's restarts in one apply and one gate, api-server hosts first."""
    events = roll(monkeypatch, load_inventory(SPEC / "hosts-patroni.yaml"), flips=False)
    both = ("airflow-api-server", "airflow-scheduler")
    assert events == [*drained("node1", *both, "airflow-triggerer", "airflow-worker"),
                      *drained("node2", *both, "airflow-dag-processor", "airflow-triggerer", "airflow-worker"),
                      *gated("node3", "airflow-worker", "airflow-flower")]


def test_check_lists_the_per_role_order(monkeypatch, capsys):
    assert roll(monkeypatch, load_inventory(SPEC / "hosts-patroni.yaml"), check=True) == []
    out = capsys.readouterr().out
    assert "services   would restart one host at a time: node1 (api-server) -> node2 (api-server) -> " \
           "node1 (triggerer) -> node2 (triggerer, dag-processor) -> node1 (worker) -> node2 (worker) -> " \
           "node3 (worker) -> node1 (scheduler) -> node2 (scheduler) -> node3 (flower)" in out
    listed = [" ".join(line.split()) for line in out[out.index("restarts (in this order):"):].splitlines()]
    assert "node2 services restart airflow-dag-processor (rolling 4/10)" in listed
    assert "node3 services restart airflow-flower (rolling 10/10)" in listed


def test_config_changes_roll_hosts_by_their_earliest_role(tmp_path):
    (tmp_path / "hosts.yaml").write_text(TIERED)
    inv = load_inventory(tmp_path / "hosts.yaml")
    order = [h.name for h in services.roll_order(None, list(inv.hosts.values()))]
    assert order == ["a1", "a2", "t1", "w1", "s1"]


def test_a_version_without_constraints_is_refused_before_any_host_is_reached(tmp_path, monkeypatch, capsys):
    (tmp_path / "hosts.yaml").write_text((SPEC / "hosts.yaml").read_text())
    monkeypatch.setattr(upgrade, "Run", lambda *a, **k: pytest.fail("no connection may be opened"))
    with pytest.raises(SystemExit) as exc:
        upgrade.run("9.9.9", inventory=tmp_path / "hosts.yaml")
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "no constraints file for Airflow 9.9.9 on Python 3.11" in err and err.count("error:") == 1
    assert "airflow_version: 3.3.2" in (tmp_path / "hosts.yaml").read_text(), "the inventory is left alone"


class StateHost:
    """Answers `inv upgrade`'s questions: the venvs (`current` and installed), the database revision."""

    def __init__(self, current, heads, db_rev):
        self.current, self.heads, self.db_rev, self.round_trips = current, heads, db_rev, 0

    def close(self):
        pass

    def gather(self, questions):
        """Debian facts, no connect answers (every host is this one object)."""
        return facts_text(rolling.DEBIAN, "node"), {}

    def sh(self, script, timeout=0):
        from fabfile.core.remote import Result
        if "@@current" in script:
            return Result(0, f"@@current {self.current}\n" + "".join(f"@@venv {v} {h}\n" for v, h in self.heads.items()), "")
        if "alembic_version" in script:
            return Result(0, f"{self.db_rev}\n", "")
        if "ls -t /var/backups/airflow-ha" in script:
            return Result(0, f"path={DUMP}\nbindir=/usr/lib/postgresql/15/bin\n", "")
        return Result(0, "", "")


@pytest.fixture
def wired(tmp_path, monkeypatch):
    """`upgrade.run` over fake hosts, a fake local wheelhouse (schema head bbbbbbbbbbbb), stack.run recorded."""
    (tmp_path / "hosts.yaml").write_text((SPEC / "hosts.yaml").read_text())
    inv = load_inventory(tmp_path / "hosts.yaml")
    host = StateHost("3.3.2", {"3.3.1": "bbbbbbbbbbbb", "3.3.2": "bbbbbbbbbbbb"}, "bbbbbbbbbbbb")

    def make_run(inv_, hosts, opts):
        r = rolling.FakeRun(inv_, hosts, opts)
        r.remote = lambda name: host
        return r
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "apache_airflow_core-3.3.1-py3-none-any.whl", "w") as z:
        z.writestr("airflow/migrations/versions/b.py", 'revision = "bbbbbbbbbbbb"\ndown_revision = None\n')
    calls = []
    monkeypatch.setattr(upgrade, "Run", make_run)
    monkeypatch.setattr(airflow, "ensure_wheelhouse_local", lambda inv_: wheels)
    monkeypatch.setattr(upgrade.stack, "run", lambda *a, **k: calls.append((a, k)) or 0)
    return tmp_path / "hosts.yaml", host, calls, inv


def test_check_prints_the_plan_and_changes_nothing(wired, capsys):
    path, _, calls, _ = wired
    assert upgrade.run("3.3.1", inventory=path, check=True) == 0
    out = capsys.readouterr().out
    assert "upgrade plan: Airflow 3.3.2 -> 3.3.1" in out and "migrate:  no: schema already at bbbbbbbbbbbb" in out
    assert calls == [((None, None, path), {"check": True, "verbose": False, "overrides": {"airflow_version": "3.3.1"}})]
    assert "airflow_version: 3.3.2" in path.read_text()


def test_upgrade_writes_the_version_then_deploys(wired):
    path, _, calls, _ = wired
    assert upgrade.run("3.3.1", inventory=path) == 0
    assert "airflow_version: 3.3.1" in path.read_text()
    assert calls == [((None, None, path), {"verbose": False})], "the same as `inv deploy`"


def test_rollback_deploys_the_other_installed_version(wired):
    path, host, calls, _ = wired
    host.current = "3.3.2"
    assert upgrade.run(rollback=True, inventory=path) == 0
    assert "airflow_version: 3.3.1" in path.read_text() and calls


def test_rollback_after_a_migration_exits_with_the_restore_command(wired, capsys):
    path, host, calls, _ = wired
    host.heads, host.db_rev = {"3.3.1": "aaaaaaaaaaaa", "3.3.2": "bbbbbbbbbbbb"}, "bbbbbbbbbbbb"
    with zipfile.ZipFile(next((path.parent / "wheels").iterdir()), "w") as z:     # 3.3.1's head: aaaa...
        z.writestr("airflow/migrations/versions/a.py", 'revision = "aaaaaaaaaaaa"\ndown_revision = None\n')
    with pytest.raises(SystemExit) as exc:
        upgrade.run(rollback=True, inventory=path)
    assert exc.value.code == 2 and not calls
    err = capsys.readouterr().err
    assert "cannot roll back to Airflow 3.3.1" in err and f"pg_restore --clean --if-exists -d airflow {DUMP}" in err
    assert "airflow_version: 3.3.2" in path.read_text()
