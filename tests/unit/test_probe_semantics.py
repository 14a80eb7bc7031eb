"""No-op probes made cheaper must answer exactly as before: run old and new shell side by side (local sh,
fake tools on PATH), for every state that matters."""

from __future__ import annotations

import os
import subprocess

import pytest

from fabfile import firewall
from tests.unit.test_vip import ctx_for, load

OLD_UFW_POLICY = "ufw status verbose | grep -q '^Status: active' && ufw status verbose | grep -q 'deny (incoming)'"


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
    return subprocess.run(["sh", "-c", probe], capture_output=True, text=True, env=env).stdout


ACTIVE_DENY = "Status: active\nLogging: on (low)\nDefault: deny (incoming), allow (outgoing), disabled (routed)\n"


@pytest.mark.parametrize("ufw", [
    f"printf '{ACTIVE_DENY}'",
    "printf 'Status: active\\nDefault: allow (incoming), allow (outgoing)\\n'",
    "echo 'Status: inactive'",
    "echo 'ERROR: problem running iptables' >&2; exit 1",
    f"printf '{ACTIVE_DENY}'; exit 1",
])
def test_ufw_policy_probe_runs_ufw_once_and_answers_as_before(tmp_path, ufw):
    step = next(s for s in firewall._ufw(ctx_for(load(tmp_path), "node1")) if s.target == "ufw policy")
    counter = tmp_path / "calls"
    tools = {"ufw": f"echo x >> {counter}\n{ufw}"}
    new = _probe(step, tmp_path, tools)
    calls_new = counter.read_text().count("x")
    counter.unlink()
    assert new == _probe(OLD_UFW_POLICY, tmp_path, tools)
    assert calls_new == 1
