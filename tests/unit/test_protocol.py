"""The runner's script protocol (fabfile/core/protocol.py): markers in, states and exit statuses out.

The apply script is run for real with the local `sh` against temporary files: the same text a host gets.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fabfile.components import load_inventory
from fabfile.core.offline import FreshHosts
from fabfile.core.protocol import (
    RELOAD,
    ShellHost,
    apply_script,
    facts_script,
    in_apply_order,
    parse_apply,
    read_facts,
    reload_position,
    split,
)
from fabfile.core.remote import Result
from fabfile.core.runner import Options, Run
from fabfile.core.steps import Command, File, Service

SPEC = Path(__file__).resolve().parents[1] / "spec"
DEBIAN = (SPEC / "os-release" / "debian-12").read_text()


def sh(script: str, path: str | None = None) -> str:
    """Run `script` as a host does (`sh -s`, script on stdin); its stdout."""
    env = {"PATH": f"{path}:/usr/bin:/bin"} if path else None
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, env=env, check=False).stdout


def changes(*scripts: str) -> list:
    """(step, change) pairs of commands that always run."""
    return [(c, c.plan("run", set())) for c in (Command(f"c{i}", script=s) for i, s in enumerate(scripts))]


# -- split ---------------------------------------------------------------------------------------------------
def test_split_gives_each_marked_section_its_lines():
    out = "@@probe 0\nabsent\n@@probe 2\nroot root 644 regular file\nabc\n"
    assert split(out, 3) == ["absent\n", "", "root root 644 regular file\nabc\n"]


def test_split_skips_batch_sections_and_foreign_markers():
    out = "@@probe 0\na\n@@batch stat\nx|root\n@@probe 1\nb\n@@probe 7\nout of range\n@@probe x\n"
    assert split(out, 2) == ["a\n", "b\n"], "an index out of range swallows what follows, to the next marker"


def test_split_with_another_marker_reads_diff_sections():
    assert split("@@file 1\nYg==\n@@file 0\nYQ==\n", 2, marker="@@file") == ["YQ==\n", "Yg==\n"]


def test_split_of_no_output_is_empty_states():
    assert split("", 2) == ["", ""]


# -- facts ---------------------------------------------------------------------------------------------------
def test_facts_questions_come_back_by_name():
    script = facts_script({"redis": "echo '10.0.0.1 6379'", "none": ""})
    assert "@@connect redis" in script and "@@connect none" not in script
    facts, answers = read_facts(sh(script.replace("cat /etc/os-release", "echo ID=debian", 1)))
    assert facts.startswith("ID=debian\n@@facts\n") and answers == {"redis": "10.0.0.1 6379\n"}


# -- apply ---------------------------------------------------------------------------------------------------
def test_parse_apply_reads_status_time_and_output_per_change():
    out = "@@begin 0\nhello\n@@end 0 0 12\n@@begin 1\nboom\nmore\n@@end 1 3 5\n"
    assert parse_apply(out) == {0: (0, 12, "hello"), 1: (3, 5, "boom\nmore")}


def test_parse_apply_ignores_an_unfinished_change():
    assert parse_apply("@@begin 0\n@@end 0 0 1\n@@begin 1\nkilled\n") == {0: (0, 1, "")}


def test_apply_script_stops_at_the_first_failing_change(tmp_path):
    f = tmp_path / "f"
    todo = changes(f"echo one > {f}", f"echo two >> {f}\necho oops >&2\nfalse\necho never >> {f}",
                   f"echo three >> {f}")
    done = parse_apply(sh(apply_script(todo, reload=False)))
    assert sorted(done) == [0, 1], "the change after the failing one never ran"
    assert done[0][0] == 0 and done[1][0] == 1 and done[1][2] == "oops", "stderr is the change's output"
    assert f.read_text() == "one\ntwo\n", "set -e: the failing change stopped at its failing line"


def test_apply_script_keeps_exit_statuses_and_ends_cleanly(tmp_path):
    done = parse_apply(sh(apply_script(changes("true", "exit 7"), reload=False)))
    assert [rc for rc, _, _ in done.values()] == [0, 7]
    assert all(ms >= 0 for _, ms, _ in done.values())


def test_daemon_reload_runs_once_before_the_first_service_action(tmp_path):
    (tmp_path / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\n")
    (tmp_path / "systemctl").chmod(0o755)
    unit = File(str(tmp_path / "x.service"), "[Unit]\n", notify=("daemon-reload", "x"))
    services = [Service("x"), Service("y")]
    todo = [(unit, unit.plan("absent", set()))] + [(s, s.plan("\n\n", {"x"})) for s in services]
    assert sh(apply_script(todo, reload=True), str(tmp_path)).count("@@end") == 3
    assert (tmp_path / "calls").read_text().splitlines() == [
        "daemon-reload", "enable x", "restart x", "enable y", "start y"]
    assert apply_script(todo, reload=False).count("daemon-reload") == 0


@pytest.mark.parametrize("warned, expected", [(False, 0), (True, 1)])
def test_reload_goes_before_the_first_service_that_acts(warned, expected):
    first, second = Service("a"), Service("b")
    warn = first.plan("\n\n", set())
    warn.warning = warned
    pairs = [(first, warn), (second, second.plan("\n\n", set()))]
    assert reload_position(pairs, True) == expected and reload_position(pairs, False) is None
    assert in_apply_order(pairs, True).index(RELOAD) == expected
    assert in_apply_order(changes("true"), True) == changes("true"), "no service: no reload"


# -- the runner over a local shell ---------------------------------------------------------------------------
class LocalShell(ShellHost):
    """This machine's `sh` as a host: the runner's real probe and apply round trips."""

    name, round_trips = "node1", 0

    def sh(self, script, timeout=None):
        self.round_trips += 1
        return Result(0, sh(script), "")


class LocalHosts(FreshHosts):
    """Placeholder secrets and inventory addresses; the host is this machine."""

    def connect(self, name, timeout):
        return LocalShell()


def test_the_runner_reports_the_failing_change_and_those_not_run(tmp_path):
    inv = load_inventory(SPEC / "hosts.yaml")
    run = Run(inv, [inv.hosts["node1"]], Options(silent=True), source=LocalHosts(DEBIAN))
    done = tmp_path / "done"
    steps = [Command("first", script=f"touch {done}", unless=f"[ -e {done} ]"),
             Command("second", script="echo broken; exit 4"), Command("third", script="true")]
    results = run.converge(inv.hosts["node1"], "c", steps)
    assert [(r.label, r.status) for r in results] == [
        ("command first", "changed"), ("command second", "failed"), ("command third", "failed")]
    assert results[1].output == "broken" and results[2].output == "not run: an earlier step failed"
    assert done.exists() and run.failed == {"node1": "c failed"}
    assert run.remotes["node1"].round_trips == 2, "one probe, one apply"
    assert [r.status for r in run.converge(inv.hosts["node1"], "c", steps[:1])] == ["ok"], "now converged"
