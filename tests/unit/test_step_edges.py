"""File-system steps over a path of an unexpected shape, on a real file system (local sh, each change run in
a `set -e` shell as the apply runs it): either one apply converges, or it fails loudly and leaves the
user's data alone. The per-step fixtures (tests/steps) pin the same cases as state in, change out."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess

from fabfile.core.steps import Directory, File, Link

ME = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)


def plan(step):
    return step.plan(sh(step.probe()).stdout, set())


def apply(change) -> subprocess.CompletedProcess:
    return sh(f"set -e\n{change.script}")


def test_a_file_over_a_symlink_is_replaced_by_our_regular_file_in_one_run(tmp_path):
    target = tmp_path / "package.conf"
    target.write_text("ours\n")
    target.chmod(0o644)
    path = tmp_path / "app.conf"
    path.symlink_to(target)
    step = File(str(path), "ours\n", owner=ME[0], group=ME[1], mode=0o640)
    change = plan(step)
    assert change.desc == "replace symlink"                 # was "fix owner/mode", on every run
    assert apply(change).returncode == 0
    assert not path.is_symlink() and path.read_text() == "ours\n" and path.stat().st_mode & 0o777 == 0o640
    assert target.stat().st_mode & 0o777 == 0o644           # the link's target is left alone
    assert plan(step) is None


def test_a_file_over_a_dangling_symlink_is_replaced_too(tmp_path):
    path = tmp_path / "app.conf"
    path.symlink_to(tmp_path / "nowhere")
    step = File(str(path), "ours\n", owner=ME[0], group=ME[1])
    assert apply(plan(step)).returncode == 0
    assert not path.is_symlink() and plan(step) is None


def test_a_directory_over_a_regular_file_fails_loudly_and_keeps_the_file(tmp_path):
    path = tmp_path / "data"
    path.write_text("the user's\n")
    step = Directory(str(path), owner=ME[0], group=ME[1], mode=0o750)
    change = plan(step)                                      # was None: reported as converged
    assert change.desc == "exists and is not a directory (regular file)"
    res = apply(change)
    assert res.returncode == 1 and f"{path} exists and is not a directory (regular file)" in res.stderr
    assert path.read_text() == "the user's\n"


def test_a_link_over_a_real_directory_fails_loudly_and_keeps_the_directory(tmp_path):
    path = tmp_path / "current"
    path.mkdir()
    (path / "keep").write_text("x")
    step = Link(str(path), source=str(tmp_path / "3.3.2"))
    change = plan(step)
    assert change.desc == "exists and is a directory"       # was `ln -sfn`: a link inside it, every run
    res = apply(change)
    assert res.returncode == 1 and f"{path} exists and is a directory, not a symbolic link" in res.stderr
    assert [p.name for p in path.iterdir()] == ["keep"]


def test_a_link_converges_from_absent_and_from_another_target(tmp_path):
    (tmp_path / "3.3.2").mkdir()
    (tmp_path / "3.2.0").mkdir()
    path = tmp_path / "current"
    step = Link(str(path), source=str(tmp_path / "3.3.2"))
    assert sh(step.probe()).stdout == "absent\n"
    assert apply(plan(step)).returncode == 0 and plan(step) is None
    path.unlink()
    path.symlink_to(tmp_path / "3.2.0")                      # a link to a directory is a link, not a directory
    assert plan(step).desc == f"link to {tmp_path / '3.3.2'}"
    assert apply(plan(step)).returncode == 0 and plan(step) is None
