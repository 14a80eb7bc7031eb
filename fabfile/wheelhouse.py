"""Build the wheelhouse the hosts install Airflow from, offline, on the control machine.

Pure local: no Fabric connection. Lab hosts have no route to PyPI, so the control machine runs
``pip download`` once into a cache directory (default ``/var/cache/airflow-ha/wheelhouse-<ver>-py<py>``)
and the deploy ships that directory. On the host::

    python3 -m venv /opt/airflow/venvs/<version>     # one venv per version: fabfile/airflow.py
    /opt/airflow/venvs/<version>/bin/pip install --no-index --find-links /opt/airflow/wheelhouse uv   # optional
    /opt/airflow/venvs/<version>/bin/uv pip install --python /opt/airflow/venvs/<version>/bin/python --no-index \
        --find-links /opt/airflow/wheelhouse -c constraints.txt 'apache-airflow[...]==X' ...

(fabfile/airflow.py writes those steps). Why these choices:

* Cross-download: wheels are selected for the *target* interpreter (``--python-version``,
  ``--implementation cp``, ``--abi``) and explicit manylinux tags up to ``max_glibc``, with
  ``--only-binary=:all:`` (pip requires it with ``--platform``; the whole Airflow 3.3.2 set has
  wheels). So a Python 3.12 wheelhouse (Ubuntu 24.04, EL9) builds on this 3.11 machine. The default
  glibc ceiling 2.34 (EL9) also covers Debian 12 (2.36) and Ubuntu 24.04 (2.39).
* The constraints file (files/airflow/constraints-<ver>-py<py>.txt, or the cached copy of
  ``cluster.constraints_url``: fabfile/constraints.py) pins everything, e.g. celery<5.7.
* The machine's pip config may carry a global ``constraint =`` (this lab's does): ``PIP_CONSTRAINT=
  /dev/null`` overrides it (an *empty* PIP_CONSTRAINT does not). The configured index / extra
  indexes stay in effect: they are how this machine reaches PyPI.
* Bytecode, once: :func:`precompile` adds ``bytecode-py<ver>.tar.gz``, the checked-hash .pyc files of every
  wheel, which each host unpacks into its venv instead of compiling ~6,700 modules itself (issue 18).
* Idempotent: a stamp file records the inputs; if it matches and MANIFEST.sha256 matches the files,
  :func:`build` returns at once. A rebuild happens in a temporary sibling directory (reusing the old
  wheels as a local find-links source) and replaces the old directory only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

FILES = Path(__file__).resolve().parent.parent / "files"
DEFAULT_EXTRAS = ("celery", "postgres", "statsd")
DEFAULT_EXTRA_PACKAGES = (
    "apache-airflow-providers-fab",       # FabAuthManager (identical users on every node)
    "apache-airflow-providers-standard",  # operators; also pulled by apache-airflow itself
    "async-timeout>=4.0.3",               # redis-py needs it on Python < 3.11.3 (Debian 12: 3.11.2)
    "uv",                                 # fast offline install on the hosts (falls back to pip)
    "pip",
    "setuptools",
    "wheel",
)
MANIFEST = "MANIFEST.sha256"
BYTECODE = "bytecode-py{}.tar.gz"    # precompile(): the site-packages' .pyc files, hash-checked
STAMP = ".wheelhouse-stamp.json"
STAMP_FORMAT = 1


def default_dest(airflow_version: str, python_version: str = "3.11") -> Path:
    return Path(f"/var/cache/airflow-ha/wheelhouse-{airflow_version}-py{python_version}")


def constraints_file(airflow_version: str, python_version: str = "3.11") -> Path:
    return FILES / "airflow" / f"constraints-{airflow_version}-py{python_version}.txt"


def requirements(airflow_version: str, extras=DEFAULT_EXTRAS, extra_packages=DEFAULT_EXTRA_PACKAGES) -> list[str]:
    extra = f"[{','.join(extras)}]" if extras else ""
    return [f"apache-airflow{extra}=={airflow_version}", *extra_packages]


def platforms(max_glibc: str = "2.34", arch: str = "x86_64") -> list[str]:
    """Explicit manylinux tags (pip <= 23 does not expand ``manylinux_2_N`` to older glibc levels)."""
    top = int(max_glibc.split(".")[1])
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(top, 4, -1)]
    return [*tags, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_text(directory: Path) -> str:
    """``sha256  filename`` lines, sorted by filename (sha256sum -c compatible)."""
    names = sorted(p.name for p in directory.iterdir()
                   if p.is_file() and p.name not in (MANIFEST, STAMP) and not p.name.startswith("."))
    return "".join(f"{_sha256(directory / n)}  {n}\n" for n in names)


def _inputs(airflow_version, python_version, extras, extra_packages, constraints: Path, plats, only_binary):
    return {
        "format": STAMP_FORMAT,
        "airflow_version": airflow_version,
        "python_version": python_version,
        "requirements": requirements(airflow_version, extras, extra_packages),
        "constraints_sha256": _sha256(constraints),
        "platforms": list(plats),
        "only_binary": only_binary,
    }


def built_with(dest: Path, constraints: Path) -> bool:
    """False if dest's stamp records other constraints (no stamp: a wheelhouse made by hand, trusted)."""
    try:
        stamp = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return True
    return stamp.get("inputs", {}).get("constraints_sha256") == _sha256(constraints)


def is_current(dest: Path, inputs: dict) -> bool:
    """The stamp records the same inputs and the files still match the manifest."""
    try:
        stamp = json.loads((dest / STAMP).read_text())
        manifest = (dest / MANIFEST).read_text()
    except (OSError, ValueError):
        return False
    return stamp.get("inputs") == inputs and manifest == manifest_text(dest)


def build(dest: Path | str | None = None, airflow_version: str = "3.3.2", python_version: str = "3.11",
          extras=DEFAULT_EXTRAS, extra_packages=DEFAULT_EXTRA_PACKAGES, *,
          constraints: Path | str | None = None, max_glibc: str = "2.34", only_binary: bool = True,
          python: str = sys.executable, log=print) -> Path:
    """Download every wheel needed to install Airflow offline into ``dest``; return ``dest``.

    Returns immediately when ``dest`` already holds a wheelhouse built from the same inputs.
    ``only_binary=False`` downloads for *this* interpreter instead (no ``--platform``): only valid
    when the control machine has the target's Python minor version and platform.
    """
    dest = Path(dest) if dest else default_dest(airflow_version, python_version)
    constraints = Path(constraints) if constraints else constraints_file(airflow_version, python_version)
    if not constraints.is_file():
        raise FileNotFoundError(f"constraints file {constraints} missing: run files/airflow/make-constraints.sh "
                                f"{airflow_version} python{python_version}")
    plats = platforms(max_glibc) if only_binary else []
    inputs = _inputs(airflow_version, python_version, extras, extra_packages, constraints, plats, only_binary)
    if is_current(dest, inputs):
        return dest

    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        cmd = [python, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
               "--dest", str(tmp), "-c", str(constraints)]
        if only_binary:
            abi = "cp" + python_version.replace(".", "")
            cmd += ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
                    "--abi", abi, "--abi", "abi3", "--abi", "none"]
            for plat in plats:
                cmd += ["--platform", plat]
        if dest.is_dir():  # warm rebuild: reuse what we already have
            cmd += ["--find-links", str(dest)]
        cmd += requirements(airflow_version, extras, extra_packages)
        env = dict(os.environ, PIP_CONSTRAINT="/dev/null", PIP_REQUIRE_VIRTUALENV="0")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join(line for line in proc.stdout.splitlines()[-15:] + proc.stderr.splitlines()[-25:]
                             if "is ignored: it is neither a file nor a directory" not in line)
            raise RuntimeError(f"pip download failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
        (tmp / MANIFEST).write_text(manifest_text(tmp))
        (tmp / STAMP).write_text(json.dumps({"inputs": inputs}, indent=1, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
        tmp.rename(dest)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    size = sum(p.stat().st_size for p in files) / 1e6
    log(f"wheelhouse {dest}: {len(files)} files, {size:.0f} MB in {time.monotonic() - started:.0f} s")
    return dest


def bytecode_name(python_version: str) -> str:
    """The archive's name in the wheelhouse (the one place it is spelled: the hosts' install script too)."""
    return BYTECODE.format(python_version)


def precompile(dest: Path, python_version: str, log=print) -> Path | None:
    """Byte-compile the wheelhouse once, here, for every host: ``dest/bytecode-py<ver>.tar.gz``.

    Each wheel is unpacked as an install lays it out in site-packages (its ``.data/purelib`` and
    ``platlib`` included) and compiled to *checked-hash* .pyc files (PEP 552): valid wherever the source
    is byte-identical, whatever its mtime, so every host's venv can take them as they are (the host's
    bytecode step then compiles only what has no .pyc). The interpreter checks the hash at each import and
    recompiles a source that differs, so a wrong .pyc costs time, never correctness. Compiling on each
    host instead cost ~20 CPU-seconds per host, with the hosts sharing the CPU in the lab (issue 18).

    Needs this machine's Python to be the hosts' minor version (the .pyc format is per minor version);
    otherwise returns None and the hosts compile everything themselves. Cached: an existing archive is
    kept (a rebuilt wheelhouse is a new directory). MANIFEST.sha256 is rewritten to list it.
    """
    import compileall  # only here: airflow.py imports this module on every run for bytecode_name
    import py_compile
    import warnings
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != python_version:
        return None
    archive = dest / bytecode_name(python_version)
    if archive.is_file():
        return archive
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".bytecode.", dir=dest.parent) as tmp:
        site = Path(tmp) / "site"
        for wheel in sorted(dest.glob("*.whl")):
            _unpack_wheel(wheel, site)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compileall.compile_dir(site, quiet=2, workers=0,
                                   invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        part = Path(tmp) / archive.name
        with tarfile.open(part, "w:gz", compresslevel=6) as tar:
            for pyc in sorted(site.rglob("__pycache__/*.pyc")):
                tar.add(pyc, arcname=str(pyc.relative_to(site)))
        part.chmod(0o644)
        part.rename(archive)
    _write_manifest(dest)
    log(f"wheelhouse {dest}: bytecode compiled once for every host ({archive.stat().st_size / 1e6:.0f} MB) "
        f"in {time.monotonic() - started:.0f} s")
    return archive


def _unpack_wheel(wheel: Path, site: Path) -> None:
    """What an installer puts in site-packages from one wheel (scripts and headers left out)."""
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or ".." in parts:
                continue
            if parts[0].endswith(".data"):
                if parts[1:2] not in (["purelib"], ["platlib"]) or not parts[2:]:
                    continue
                parts = parts[2:]
            target = site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src:
                target.write_bytes(src.read())


def _write_manifest(dest: Path) -> None:
    tmp = dest / f".{MANIFEST}.tmp"
    tmp.write_text(manifest_text(dest))
    tmp.rename(dest / MANIFEST)


if __name__ == "__main__":  # python -m fabfile.wheelhouse [DEST] [AIRFLOW_VERSION] [PYTHON_VERSION]
    args = sys.argv[1:]
    version = args[1] if args[1:] else "3.3.2"
    pyver = args[2] if args[2:] else "3.11"
    print(build(Path(args[0]) if args else None, version, pyver))
