"""Bytecode compiled once on the control machine (wheelhouse.precompile, issue 18), for real on small wheels
of this machine's Python: the archive holds checked-hash .pyc files laid out as an install lays out the
wheels (`.data/purelib` included, scripts left out), MANIFEST lists it, a second call reuses it, another
Python minor version gets none; a venv that takes the archive keeps its .pyc files (the host's bytecode
step compiles only what has none, and a stale timestamp .pyc again), and the archive is no new install."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from fabfile import wheelhouse
from fabfile.airflow import _wheels_only, bytecode_step

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
TAG = sys.implementation.cache_tag


def _wheel(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def _wheelhouse(tmp_path: Path) -> Path:
    dest = tmp_path / "wheelhouse"
    dest.mkdir()
    _wheel(dest / "alpha-1.0-py3-none-any.whl", {"alpha/__init__.py": "A = 1\n",
                                                "alpha-1.0.dist-info/METADATA": "Name: alpha\n"})
    _wheel(dest / "beta-2.0-py3-none-any.whl", {"beta-2.0.data/purelib/beta.py": "B = 2\n",
                                               "beta-2.0.data/scripts/beta": "#!/bin/sh\n"})
    (dest / wheelhouse.MANIFEST).write_text(wheelhouse.manifest_text(dest))
    return dest


def _flags(data: bytes) -> int:
    return int.from_bytes(data[4:8], "little")


def test_archive_of_checked_hash_pycs_listed_in_the_manifest_and_cached(tmp_path):
    dest = _wheelhouse(tmp_path)
    archive = wheelhouse.precompile(dest, PY, log=lambda _: None)

    assert archive == dest / wheelhouse.bytecode_name(PY)
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
        assert names == sorted([f"alpha/__pycache__/__init__.{TAG}.pyc", f"__pycache__/beta.{TAG}.pyc"])
        assert all(_flags(tar.extractfile(n).read(16)) == 3 for n in names)   # hash-based, checked
    assert archive.name in (dest / wheelhouse.MANIFEST).read_text()
    assert (dest / wheelhouse.MANIFEST).read_text() == wheelhouse.manifest_text(dest)
    before = archive.stat().st_mtime_ns
    assert wheelhouse.precompile(dest, PY, log=lambda _: None) == archive
    assert archive.stat().st_mtime_ns == before


def test_another_python_minor_version_gets_no_archive(tmp_path):
    dest = _wheelhouse(tmp_path)
    other = f"{sys.version_info[0]}.{sys.version_info[1] + 1}"
    assert wheelhouse.precompile(dest, other, log=lambda _: None) is None
    assert not list(dest.glob("bytecode-*"))


def test_a_venv_keeps_the_archive_pycs_and_compiles_only_the_rest(tmp_path):
    dest = _wheelhouse(tmp_path)
    archive = wheelhouse.precompile(dest, PY, log=lambda _: None)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "alpha").mkdir()
    (site / "alpha" / "__init__.py").write_text("A = 1\n")
    (site / "beta.py").write_text("B = 2\n")
    (site / "gamma.py").write_text("C = 3\n")                 # not in any wheel: no .pyc shipped
    with tarfile.open(archive) as tar:
        tar.extractall(site, filter="data")
    shipped = (site / "alpha" / "__pycache__" / f"__init__.{TAG}.pyc").read_bytes()

    res = subprocess.run(["bash", "-c", bytecode_step(str(venv), "install-1").script],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert (site / "alpha" / "__pycache__" / f"__init__.{TAG}.pyc").read_bytes() == shipped   # kept
    assert _flags((site / "__pycache__" / f"gamma.{TAG}.pyc").read_bytes()) == 0           # compiled here
    out = subprocess.run([str(venv / "bin/python"), "-c", "import alpha, beta, gamma; print(alpha.A + beta.B + gamma.C)"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "6"


def test_a_stale_timestamp_pyc_is_compiled_again(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "mod.py").write_text("X = 1\n")
    subprocess.run([str(venv / "bin/python"), "-m", "py_compile", str(site / "mod.py")], check=True, timeout=60)
    pyc = site / "__pycache__" / f"mod.{TAG}.pyc"
    (site / "mod.py").write_text("X = 22\n")                  # another size: the old .pyc is stale
    res = subprocess.run(["bash", "-c", bytecode_step(str(venv), "install-1").script],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert int.from_bytes(pyc.read_bytes()[12:16], "little") == len("X = 22\n")


def test_the_archive_in_the_manifest_is_no_new_install():
    wheels = b"aa  alpha-1.0-py3-none-any.whl\n"
    assert _wheels_only(wheels + f"bb  bytecode-py{PY}.tar.gz\n".encode(), PY) == wheels.decode()
