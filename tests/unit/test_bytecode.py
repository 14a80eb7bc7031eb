"""The venv `bytecode` step (issue 18), run for real on a throw-away venv of this machine's Python: its
probe says "run" before and "done" after, every module that compiles gets its pyc, a module that does not
compile is skipped (as pip does) without failing the step, and the stamp is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fabfile.airflow import BYTECODE_STAMP, bytecode_step


def _sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -e\n{script}"], check=False, capture_output=True, text=True, timeout=120)


def test_bytecode_step_compiles_the_venv_skips_what_does_not_compile_and_stamps(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "good.py").write_text("X = 1\n")
    (site / "pkg").mkdir()
    (site / "pkg" / "__init__.py").write_text("")
    (site / "pkg" / "bad.py").write_text("print 'python 2'\n")       # vendored py2 code: not compilable
    step = bytecode_step(str(venv), "install-1")

    assert _sh(step.probe()).stdout.strip() == "run"
    res = _sh(step.script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert list((site / "__pycache__").glob("good.*.pyc"))
    assert list((site / "pkg" / "__pycache__").glob("__init__.*.pyc"))
    assert not list((site / "pkg" / "__pycache__").glob("bad.*.pyc"))
    assert (venv / BYTECODE_STAMP).read_text().strip() == "install-1"
    assert _sh(step.probe()).stdout.strip() == "done"
    assert _sh(bytecode_step(str(venv), "install-2").probe()).stdout.strip() == "run"   # a new install


def test_bytecode_step_fails_when_the_venv_has_no_python(tmp_path):
    res = _sh(bytecode_step(str(tmp_path / "missing"), "install-1").script)
    assert res.returncode != 0
    assert not Path(tmp_path / "missing" / BYTECODE_STAMP).exists()
