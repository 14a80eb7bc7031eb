"""No-op probes made cheaper must answer exactly as before: run old and new shell side by side (local sh,
fake tools on PATH), for every state that matters."""

from __future__ import annotations

import os
import subprocess

import pytest

from fabfile import firewall
from tests.unit.test_vip import ctx_for, load


def _probe(step_or_unless, tmp_path, tools: dict[str, str]) -> str:
    """The Command probe's answer with fake tools (name -> shell body) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    probe = step_or_unless.probe() if hasattr(step_or_unless, "probe") else \
        f"( {step_or_unless} ) >/dev/null 2>&1 && echo done || echo run"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", probe], capture_output=True, text=True, env=env, check=False).stdout


@pytest.mark.parametrize("conf, defaults, chain, answer", [
    ("ENABLED=yes", 'DEFAULT_INPUT_POLICY="DROP"', "exit 0", "done"),
    ("ENABLED=no", 'DEFAULT_INPUT_POLICY="DROP"', "exit 0", "run"),           # `ufw disable` by hand
    ("ENABLED=yes", 'DEFAULT_INPUT_POLICY="ACCEPT"', "exit 0", "run"),        # `ufw default allow incoming`
    ("ENABLED=yes", 'DEFAULT_INPUT_POLICY="DROP"', "exit 1", "run"),          # rules not loaded in the kernel
    (None, None, "exit 0", "run"),                                            # ufw not installed yet
])
def test_ufw_policy_probe_reads_ufw_files_and_starts_no_ufw(tmp_path, monkeypatch, conf, defaults, chain, answer):
    for attr, text in (("UFW_CONF", conf), ("UFW_DEFAULTS", defaults)):
        path = tmp_path / attr
        if text is not None:
            path.write_text(f"# ufw's own file\n{text}\nOTHER=1\n")
        monkeypatch.setattr(firewall, attr, str(path))
    step = next(s for s in firewall._ufw(ctx_for(load(tmp_path), "node1")) if s.target == "ufw policy")
    counter = tmp_path / "calls"
    tools = {"ufw": f"echo x >> {counter}; exit 1", "iptables": chain}
    assert _probe(step, tmp_path, tools).split() == [answer]
    assert not counter.exists(), "a no-op starts no ufw"


def test_ufw_rules_probe_is_a_stamp_of_the_verified_rule_files(tmp_path, monkeypatch):
    rules = [tmp_path / "user.rules", tmp_path / "user6.rules"]
    for r in rules:
        r.write_text("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n")
    monkeypatch.setattr(firewall, "UFW_RULE_FILES", tuple(str(r) for r in rules))
    monkeypatch.setattr(firewall, "UFW_STAMP", str(tmp_path / "stamp"))
    counter = tmp_path / "calls"
    tools = {"ufw": f"echo x >> {counter}; exit 1"}

    def answer(inv_text="vip: 10.0.0.100"):
        step = next(s for s in firewall._ufw(ctx_for(load(tmp_path, inv_text), "node1")) if s.target == "ufw rules")
        return _probe(step, tmp_path, tools).split()[0], step
    assert answer()[0] == "run", "no stamp yet"
    _run_sh(f"{firewall.ufw_rules_stamp(firewall.ufw_rules(ctx_for(load(tmp_path), 'node1')))} > {tmp_path / 'stamp'}",
            tmp_path)
    assert answer()[0] == "done"
    assert answer("{}")[0] == "run", "other wanted rules (no VIP: no VRRP rules)"
    rules[1].write_text("### tuple ### allow tcp 6379 ::/0 any ::/0 in\n")     # `ufw allow 6379` by hand
    assert answer()[0] == "run"
    assert not counter.exists(), "the probe starts no ufw"
    script = answer()[1].script
    assert script.index("ufw show added") < script.index("ufw rules differ") < script.index("> " + str(tmp_path / "stamp"))


# -- batched probes: one command per kind answers exactly what each step's own probe printed ---------------
def _run_sh(script: str, tmp_path, tools: dict[str, str] | None = None) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (tools or {}).items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, env=env, check=False).stdout


def _old_and_new(steps, tmp_path, tools=None):
    from fabfile.core.protocol import join_sections, probe_sections, read_states, split
    old = split(_run_sh(join_sections([(f"@@probe {i}", s.probe()) for i, s in enumerate(steps)]), tmp_path, tools),
                len(steps))
    sections, groups = probe_sections(steps)
    new, retry = read_states(_run_sh(join_sections(sections), tmp_path, tools), steps, groups)
    assert retry == []
    return old, new


def test_stat_batch_states_equal_each_steps_own_probe(tmp_path):
    from fabfile.core.steps import Directory, File
    (tmp_path / "a.conf").write_text("hello\n")
    (tmp_path / "b.conf").write_text("other\n")
    (tmp_path / "b.conf").chmod(0o600)
    (tmp_path / "d").mkdir()
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link").symlink_to(tmp_path / "a.conf")
    (tmp_path / "with space.conf").write_text("s\n")
    steps = [File(str(tmp_path / "a.conf"), "hello\n"), File(str(tmp_path / "b.conf"), "x"),
             File(str(tmp_path / "missing"), "x"), Directory(str(tmp_path / "d")), Directory(str(tmp_path / "a.conf")),
             File(str(tmp_path / "d"), "x"), File(str(tmp_path / "broken"), "x"), File(str(tmp_path / "link"), "x"),
             Directory(str(tmp_path / "nodir")), File(str(tmp_path / "with space.conf"), "s\n"),
             File(str(tmp_path / "a.conf"), "hello\n")]
    old, new = _old_and_new(steps, tmp_path)
    assert new == old
    assert [s.plan(st, set()) is None for s, st in zip(steps, new, strict=True)][:1] == [True]


DPKG = """for n in "$@"; do case $n in
  -W|-f=*) ;; nginx) echo 'nginx installed';; redis-server) echo 'redis-server installed';;
  half) echo 'half half-installed';; *) echo "dpkg-query: no packages found matching $n" >&2;; esac; done"""


def test_packages_batch_plans_like_each_steps_own_probe(tmp_path):
    from fabfile.core.steps import Packages
    steps = [Packages(names=("nginx",)), Packages(names=("redis-server", "half")), Packages(names=("absent1",))]
    old, new = _old_and_new(steps, tmp_path, {"dpkg-query": DPKG})
    assert [s.plan(o, set()) for s, o in zip(steps, old, strict=True)] == \
        [s.plan(n, set()) for s, n in zip(steps, new, strict=True)]
    assert steps[0].plan(new[0], set()) is None and steps[1].plan(new[1], set()).desc == "install half"


# an rpm that knows two packages, and prints what rpm prints for the others (on stdout, exit 1)
RPM = """for n in "$@"; do case $n in
  -q|--qf|'%{NAME} installed\\n') ;; nginx|redis) echo "$n installed";; *) echo "package $n is not installed";; esac; done
exit 1"""
OLD_RPM_FILTER = "grep ' installed$'"


def test_dnf_probe_keeps_only_installed_lines_and_plans_as_before(tmp_path):
    from fabfile.core.steps import Packages
    step = Packages(names=("nginx", "python3.12-pip", "redis", "chrony"), manager="dnf")
    new = _run_sh(step.probe(), tmp_path, {"rpm": RPM})
    old = _run_sh(step.probe().replace("grep -x '[^ ]* installed'", OLD_RPM_FILTER), tmp_path, {"rpm": RPM})
    assert new == "nginx installed\nredis installed\n"
    assert "package python3.12-pip is not installed" in old          # what the old filter let through
    assert step.plan(new, set()).script == step.plan(old, set()).script == \
        "timeout 1200 dnf install -y -q python3.12-pip chrony"
    assert _run_sh(Packages(names=("absent1",), manager="dnf").probe(), tmp_path, {"rpm": RPM}) == ""


# a systemctl that knows three units: is-enabled / is-active (the old probe) and show (the batch)
SYSTEMCTL = """verb=$1; shift
state() { case $1 in
  redis-server) echo "enabled active";; nginx) echo "disabled inactive";; ufw) echo "masked failed";;
  *) echo "- inactive";; esac; }
case $verb in
  is-enabled) set -- $(state $1); [ "$1" = - ] && { echo "Failed to get unit file state" >&2; exit 1; }; echo $1;;
  is-active) set -- $(state $1); echo $2;;
  show) first=1; for u in "$@"; do case $u in --no-pager|-p|-p*|--|Id,*) continue;; esac
      [ $first = 1 ] || echo; first=0; set -- $(state $u); echo "Id=$u.service"
      if [ "$1" = - ]; then echo LoadState=not-found; else echo LoadState=loaded; echo "UnitFileState=$1"; fi
      echo "ActiveState=$2"; done;;
esac"""


def test_systemd_batch_plans_like_is_enabled_and_is_active(tmp_path):
    from fabfile.core.steps import Service
    steps = [Service("redis-server", config=str(tmp_path / "none.conf")), Service("nginx"), Service("ufw"),
             Service("gone", present=False), Service("gone2")]
    old, new = _old_and_new(steps, tmp_path, {"systemctl": SYSTEMCTL})
    for step, o, n in zip(steps, old, new, strict=True):
        po, pn = step.plan(o, {"nginx"}), step.plan(n, {"nginx"})
        assert (po and (po.desc, po.script, po.restart)) == (pn and (pn.desc, pn.script, pn.restart)), step.target


def test_unreadable_batch_is_probed_one_by_one(tmp_path):
    """A systemctl show that does not print one block per unit: those steps fall back to their own probes."""
    from fabfile.core.protocol import join_sections, probe_sections, read_states
    from fabfile.core.steps import Service
    steps = [Service("redis-server"), Service("nginx")]
    sections, groups = probe_sections(steps)
    _, retry = read_states(_run_sh(join_sections(sections), tmp_path, {"systemctl": "echo Id=x.service"}), steps, groups)
    assert retry == [0, 1]


def test_a_silent_host_is_not_probed_twice():
    """A probe that timed out (no output at all) leaves the states empty, as before: no second round trip."""
    from fabfile.core.protocol import ShellHost
    from fabfile.core.remote import Result
    from fabfile.core.steps import File, Service

    class Silent(ShellHost):
        round_trips = 0

        def sh(self, script, timeout=0):
            self.round_trips += 1
            return Result(124, "", "timed out")

    host = Silent()
    states = host.probe([Service("nginx"), File("/etc/x", "x")])
    assert states == ["", ""] and host.round_trips == 1
