"""The opt-in profiler (AIRFLOW_HA_PROFILE): spans, round trips, probe stamps and the summary, no lab."""

from __future__ import annotations

import subprocess

import pytest

from bench.profile import summarize, top_level, union
from fabfile.core import profile
from fabfile.core.protocol import join_sections, probe_sections, read_states, section_kind
from fabfile.core.steps import Command, Directory, File
from tests.unit.test_rolling import FakeComponent, deploy


@pytest.fixture
def prof():
    p = profile.enable(None)
    yield p
    profile.disable()


def test_a_profiled_no_op_records_phases_round_trips_and_waits(prof, capsys):
    profile.started()
    rc = deploy([], [FakeComponent("services", "airflow-api-server"), FakeComponent("nginx", "nginx")], changed=False)
    assert rc == 0
    phases = {e["phase"] for e in prof.events}
    assert {"start-up (interpreter, imports, CLI)", "speculate (all hosts)", "probe (all components)",
            "plan (local)", "steps (local: render, hash)", "recap", "component nginx"} <= phases
    text = summarize(prof.data())
    assert "where the time goes (main thread, in order)" in text
    assert "per host: busy" in text and "node3" in text


def test_round_trips_are_tagged_with_the_phase_that_asked(prof):
    with profile.span("probe redis", "node1"):
        start = prof.now()
        profile.round_trip("node1", start, 42)
    profile.round_trip("node1", prof.now(), 1)
    kinds = [e["kind"] for e in prof.events if e["phase"] == "round trip"]
    assert kinds == ["probe redis", "other"]


def test_timed_probe_script_answers_like_the_plain_one(prof, tmp_path):
    """Run both scripts with the local sh: same per-step states; one remote time per section, by kind."""
    (tmp_path / "f").write_text("x\n")
    steps = [Directory(str(tmp_path)), File(str(tmp_path / "f"), "x\n"), File("/no/such/file", "y"),
             Command("getent", unless="getent passwd root"), Command("x", unless="ufw status | grep -q active")]
    sh = lambda script: subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=False).stdout  # noqa: E731
    sections, groups = probe_sections(steps)
    plain = read_states(sh(join_sections(sections)), steps, groups)
    labels = [section_kind(m, steps) for m, _ in sections]
    timed = read_states(profile.take_probe_times(sh(profile.timed_probe_script(sections)), labels, "h"), steps, groups)
    assert timed == plain and plain[1] == []
    assert [r["kind"] for r in prof.remote] == ["batch: stat", "command: getent", "command: ufw"]
    assert all(r["seconds"] >= 0 for r in prof.remote)


def test_without_the_variable_nothing_is_recorded():
    assert profile.PROFILE is None
    with profile.span("x"):
        profile.round_trip("h", 0.0, 1)
    profile.started()


def test_union_and_top_level():
    assert union([(0, 2), (1, 3), (5, 6)]) == 4
    ev = [{"phase": "a", "start": 0, "end": 5, "thread": "MainThread"},
          {"phase": "b", "start": 1, "end": 2, "thread": "MainThread"},
          {"phase": "c", "start": 5, "end": 6, "thread": "MainThread"},
          {"phase": "d", "start": 0, "end": 9, "thread": "T1"}]
    assert [e["phase"] for e in top_level(ev)] == ["a", "c"]
