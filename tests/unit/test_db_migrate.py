"""`db migrate` is decided from the database and fails when the CLI fails (issue #20, item 13).

The steps' shell runs here with `sh`, as on the hosts, against a fake `airflow-ha-cli` and a fake `psql`
on PATH: no host, no database.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from fabfile import airflow
from fabfile.components import load_inventory as load


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A run over the default inventory, a fake CLI and psql, and a schema-head file under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    head = tmp_path / "schema-head"
    monkeypatch.setattr(airflow, "schema_head", lambda version: str(head))
    monkeypatch.setattr(airflow, "CLI", str(bin_dir / "airflow-ha-cli"))
    inv = load("hosts.yaml")
    run = SimpleNamespace(inv=inv, secrets={"postgres_password": "pw", "admin_password": "ap"},
                          addresses=dict.fromkeys(inv.hosts, "10.0.0.1"))

    def tool(name, body):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def sh(script):
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
        return subprocess.run(["sh", "-c", f"( set -e\n{script}\n)"], capture_output=True, text=True, env=env, check=False)

    return SimpleNamespace(run=run, head=head, tool=tool, sh=sh)


def _migrate(run):
    return next(s for s in airflow.finalize_steps(run) if s.target == "db migrate")


def test_unreachable_database_reads_as_not_migrated(fake):
    fake.head.write_text("install-id\nd2f4e1b3c5a7\n")
    fake.tool("psql", "echo 'could not connect' >&2; exit 2")
    step = _migrate(fake.run)
    assert fake.sh(step.probe()).stdout.strip() == "run"


def test_empty_head_and_empty_revision_do_not_match(fake):
    """The old bug: an empty stamp matched the empty revision of an unmigrated database."""
    fake.tool("psql", "exit 0")
    assert fake.sh(_migrate(fake.run).probe()).stdout.strip() == "run"


def test_migrated_database_is_ok(fake):
    fake.head.write_text("install-id\nd2f4e1b3c5a7\n")
    fake.tool("psql", "echo d2f4e1b3c5a7")
    step = _migrate(fake.run)
    assert step.plan(fake.sh(step.probe()).stdout, set()) is None


def test_failing_migrate_fails_the_step(fake):
    fake.head.write_text("install-id\nd2f4e1b3c5a7\n")
    fake.tool("psql", "exit 2")
    fake.tool("airflow-ha-cli", "echo 'OperationalError: connection refused'; exit 1")
    res = fake.sh(_migrate(fake.run).script)
    assert res.returncode != 0
    assert "OperationalError" in res.stdout


def test_migrate_that_leaves_the_schema_behind_fails(fake):
    fake.head.write_text("install-id\nd2f4e1b3c5a7\n")
    fake.tool("psql", "echo 0000aaaa1111")
    fake.tool("airflow-ha-cli", "echo done")
    res = fake.sh(_migrate(fake.run).script)
    assert res.returncode != 0 and "not at 'd2f4e1b3c5a7'" in res.stdout


def test_successful_migrate_passes(fake):
    fake.head.write_text("install-id\nd2f4e1b3c5a7\n")
    fake.tool("psql", "echo d2f4e1b3c5a7")
    fake.tool("airflow-ha-cli", "echo migrated")
    assert fake.sh(_migrate(fake.run).script).returncode == 0


def test_failing_user_create_fails_the_step(fake):
    fake.tool("airflow-ha-cli", "cat >/dev/null; echo 'no such role'; exit 1")
    step = next(s for s in airflow.finalize_steps(fake.run) if s.target == "admin user")
    res = fake.sh(step.script)
    assert res.returncode != 0 and "no such role" in res.stdout


def test_schema_head_script_finds_the_single_head(tmp_path):
    pkg = tmp_path / "airflow" / "migrations" / "versions"
    pkg.mkdir(parents=True)
    (tmp_path / "airflow" / "__init__.py").write_text("raise SystemExit('must not be imported')\n")
    (pkg / "a.py").write_text('revision = "aaaaaaaaaaaa"\ndown_revision = None\n')
    (pkg / "b.py").write_text('revision = "bbbbbbbbbbbb"\ndown_revision = "aaaaaaaaaaaa"\n')
    (pkg / "c.py").write_text("revision = 'cccccccccccc'\ndown_revision = ('bbbbbbbbbbbb',)\n")
    res = subprocess.run(["python3", "-c", airflow.SCHEMA_HEAD_PY], capture_output=True, text=True,
                         cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "cccccccccccc"


# -- finalize's probes asked at connect (issue 18: finalize's own round trips saved in a no-op) --------------
def test_connect_probe_is_asked_of_one_host_and_ends_inside_its_braces(fake):
    fake.tool("psql", "exit 2")
    fake.run.hosts = list(fake.run.inv.hosts.values())
    first = next(h for h in fake.run.hosts if h.has(*airflow.ROLES))
    others = [h for h in fake.run.hosts if h is not first]
    assert all(airflow.connect_probe(fake.run, h) == "" for h in others), "asked of one host only"
    # the facts script runs each question inside `{ ...; }` with more after it: an `exit` must not leak out
    out = fake.sh(f"{{ {airflow.connect_probe(fake.run, first)}\n}} 2>/dev/null\necho after").stdout
    assert out.endswith("after\n")
    fake.run.answers = {airflow.NAME: {first.name: out}}
    fake.run.data = {}
    migrate, admin = airflow.early_answer(fake.run, 0), airflow.early_answer(fake.run, 1)
    assert migrate[0] == admin[0] == first.name
    assert migrate[1].startswith("@@early 0\n") and admin[1].startswith("@@early 0\n")
    assert airflow.early_answer(fake.run, 0)[0] == "", "used once (a later batch asks again)"


@pytest.mark.parametrize("rev, admin, converged", [
    ("d2f4e1b3c5a7", "1", [True, True]),       # a no-op: finalize needs no round trip
    ("c0ffee000000", "1", [False, True]),      # a migrate to do: finalize probes again and runs it
    ("d2f4e1b3c5a7", "", [True, False]),       # no admin user yet
])
def test_connect_probe_asks_the_finalize_steps_early(fake, rev, admin, converged):
    """The probes of finalize_steps ride with the facts; their answers are the steps' own probe states."""
    from fabfile.core.protocol import split
    fake.head.write_text("3.3.2\nd2f4e1b3c5a7\n")
    fake.tool("psql", f"case \"$*\" in *ab_user*) echo {admin};; *) echo {rev};; esac")
    fake.run.hosts = list(fake.run.inv.hosts.values())
    first = next(h for h in fake.run.hosts if h.has(*airflow.ROLES))
    out = fake.sh(f"{{ {airflow.connect_probe(fake.run, first)}\n}} 2>/dev/null").stdout
    steps = airflow.finalize_steps(fake.run)
    states = split(out, len(steps), "@@early")
    assert [s.plan(state, set()) is None for s, state in zip(steps, states, strict=True)] == converged


def test_no_admin_user_without_a_migrate(fake):
    """`afterwards` creates the admin user only on the host whose migrate ran or was found done."""
    asked = []
    hosts = list(fake.run.inv.hosts.values())
    fake.run.data, fake.run.answers = {}, {}
    fake.run.alive = lambda hosts=None: list(fake.run.inv.hosts.values())
    fake.run.converge = lambda host, component, steps: asked.append((host.name, [s.target for s in steps])) or []
    airflow.afterwards(fake.run, hosts)
    assert asked == [], "the migrate failed or never ran: no admin user"
    fake.run.data[airflow.MIGRATED_ON] = "node2"
    airflow.afterwards(fake.run, hosts)
    assert asked == [("node2", ["admin user"])]
