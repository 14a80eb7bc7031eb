"""--check shows what commands would write too: redis.conf / sentinel.conf diffs and the DAG release's file changes.

No host: the runner's own converge (probe, plan, --check diffs) runs against a fake connection that answers
the probe and diff scripts with the state of an imagined host.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fabfile import dags, redis
from fabfile.components import load_inventory
from fabfile.core.offline import fresh_run, fresh_state
from fabfile.core.protocol import ShellHost
from fabfile.core.runner import Options, diff_sources, render_diff
from fabfile.core.steps import Command, Preview

SPEC = Path(__file__).resolve().parents[1] / "spec"


class FakeHost(ShellHost):
    """Answers probe scripts (every step: its fresh-host state, guarded commands: "run") and diff scripts
    (the current content of a previewed target, found by a snippet of the script that reads it)."""

    def __init__(self, steps, current: dict[str, str]):
        self.steps, self.current, self.scripts = steps, current, []

    def sh(self, script, timeout=0):
        self.scripts.append(script)
        if "@@probe" in script or "@@batch" in script:
            out = "".join(f"@@probe {i}\n{self._state(s)}" for i, s in enumerate(self.steps))
            # batches, as a fresh host answers them: no unit, no file, no package
            for kind, body in re.findall(r"^echo '@@batch (\S+)'\n(.*?)\n}", script, flags=re.M | re.S):
                units = body.split(" -- ")[-1].split("\n")[0].split()
                answer = {"systemd": "\n".join(f"Id={u}\nLoadState=not-found\n" for u in units),
                          "stat": "@@sha256\n"}.get(kind, "")
                out += f"@@batch {kind}\n{answer}"
        else:
            blocks = re.split(r"^echo '@@file (\d+)'\n", script, flags=re.M)[1:]
            out = "".join(f"@@file {i}\n{self._read(body)}\n" for i, body in zip(blocks[::2], blocks[1::2], strict=True))
        return type("Result", (), {"out": out, "err": "", "rc": 0, "ok": True})()

    def _state(self, step):
        return "run\n" if isinstance(step, Command) else fresh_state(step)

    def _read(self, body):
        text = next((v for k, v in self.current.items() if k in body), "")
        return base64.encodebytes(text.encode()).decode()


def _run(tmp_path=None, dags_dir=None):
    path = SPEC / "hosts.yaml"
    if dags_dir:
        path = tmp_path / "hosts.yaml"
        path.write_text((SPEC / "hosts.yaml").read_text().replace("dags_dir: dags", f"dags_dir: '{dags_dir}'"))
    return fresh_run(load_inventory(path), (SPEC / "os-release" / "debian-12").read_text(), Options(check=True))


def _check(run, component: str, steps, current, capsys) -> str:
    fake = FakeHost(steps, current)
    run.remote = lambda name: fake
    run.converge(run.inv.hosts["node1"], component, steps)      # the real --check path
    assert len(fake.scripts) == 2, "one round trip to probe, one to read every diffed target"
    return capsys.readouterr().out


def test_check_shows_redis_and_sentinel_conf_diffs(capsys):
    run = _run()
    steps = redis.steps(run.context(run.inv.hosts["node1"]))
    current = {"cat /etc/redis/redis.conf": "bind 0.0.0.0\nport 6379\n",
               "cat /etc/redis/sentinel.conf": "port 26379\nsentinel monitor airflow 192.0.2.12 6379 2\n"
                                               "sentinel known-replica airflow 192.0.2.13 6379\n"}
    out = _check(run, "redis", steps, current, capsys)
    for line in ("--- node1:/etc/redis/redis.conf (current)", "+++ node1:/etc/redis/redis.conf (planned)",
                 "-bind 0.0.0.0", "+include /etc/redis/airflow-ha.conf",
                 "--- node1:/etc/redis/sentinel.conf (current)", "-sentinel monitor airflow 192.0.2.12 6379 2",
                 "-sentinel known-replica airflow 192.0.2.13 6379", "+sentinel monitor airflow 192.0.2.11 6379 2"):
        assert line in out.splitlines(), f"{line!r} missing from --check output:\n{out}"
    assert "would change command /etc/redis/redis.conf" in out
    assert "/etc/redis/airflow-ha.conf (planned)" in out, "File steps keep their diffs"


def test_check_lists_dag_files_added_changed_removed(tmp_path, capsys):
    src = tmp_path / "dags"
    (src / "sub").mkdir(parents=True)
    (src / "a.py").write_text("new a\n")
    (src / "same.py").write_text("same\n")
    (src / "sub" / "new.py").write_text("new\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "a.pyc").write_bytes(b"\0")      # never shipped, never listed

    def sha(text):
        return hashlib.sha256(text.encode()).hexdigest()
    current = f"{sha('old a')}  a.py\n{sha('same' + chr(10))}  same.py\n{sha('gone')}  old.py\n"
    run = _run(tmp_path, src)
    out = _check(run, "dags", dags.steps(run.context(run.inv.hosts["node1"])), {f"cd {dags.CURRENT}/": current}, capsys)
    block = out[out.index(f"node1:{dags.CURRENT} (current -> planned)"):].splitlines()[1:4]
    assert block == ["  changed  a.py", "  removed  old.py", "  added    sub/new.py"]
    assert "same.py" not in out and "__pycache__" not in out


def test_dag_release_preview_on_a_fresh_host():
    assert dags.release_changes("", "x  a.py\n") == "added    a.py"
    assert dags.release_changes("x  a.py\n", "x  a.py\n") == "no file changes"


def test_diff_sources_are_component_agnostic():
    cmd = Command("x", script="true", preview=Preview("/etc/x", "b\n"))
    todo = [(cmd, cmd.plan("run", set()))]
    [preview] = diff_sources(todo)
    assert render_diff("h", preview, "a\n").splitlines()[2:] == ["@@ -1 +1 @@", "-a", "+b"]
    assert diff_sources([(c := Command("y", script="true"), c.plan("run", set()))]) == []


def test_quiet_check_reads_nothing():
    run = _run()
    run.opts.quiet = True
    cmd = Command("x", script="true", preview=Preview("/etc/x", "b\n"))
    fake = FakeHost([cmd], {})
    run.remote = lambda name: fake
    run.converge(run.inv.hosts["node1"], "c", [cmd])
    assert len(fake.scripts) == 1
