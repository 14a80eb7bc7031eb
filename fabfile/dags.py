"""DAG deployment: a local DAG folder → every Airflow host, atomically, refusing DAGs that fail to import.

The release holds the users' DAG folder (`cluster.dags_dir`, default files/dags/) and nothing else. The
HA test DAGs (files/dags-ha-test/: a sample Celery DAG and the drill load DAGs) are added under
`airflow_ha_test/` only when `cluster.ha_test_dags` is on (the lab inventory turns it on); drills ship them
themselves when it is off (`with_test_dags`).

Layout on hosts: /var/lib/airflow/dags/releases/<content hash>/ and `current` → the active release
(what [core] dags_folder points at). A new release is unpacked beside the old one, imported with
Airflow's DagBag (as the airflow user, with the cluster config), and only then `current` is switched:
a DAG that fails to import is reported (file + error) and the running release stays. The last
`dag_releases_keep` releases are kept; `dags.rollback` switches back to the previous one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .airflow import HOME, ROLES, VENV
from .core.component import Component
from .core.errors import UserError
from .core.steps import Command, Directory, Preview

NAME = "dags"
@dataclass(frozen=True)
class DagsSettings:
    dags_dir: str = "files/dags"       # local DAG folder synced by dags.deploy (relative to the inventory)
    ha_test_dags: bool = False         # also ship files/dags-ha-test/ (sample + drill load DAGs): labs, not production
    dag_releases_keep: int = 5
RELEASES = f"{HOME}/dags/releases"
CURRENT = f"{HOME}/dags/current"
IGNORED = {"__pycache__", ".git", ".airflowignore~", ".gitkeep"}
TEST_DAGS = Path(__file__).resolve().parent.parent / "files" / "dags-ha-test"
TEST_DAGS_PREFIX = "airflow_ha_test"


def applies(inv, host) -> bool:
    return host.has(*ROLES)


def source_dir(inv) -> Path:
    p = Path(inv.settings.dags_dir)
    return p if p.is_absolute() else inv.base_dir / p


def sources(inv) -> list[tuple[Path, str]]:
    """(folder, prefix in the release) pairs: the users' DAGs, plus the HA test DAGs when asked for."""
    return [(source_dir(inv), "")] + ([(TEST_DAGS, TEST_DAGS_PREFIX)] if inv.settings.ha_test_dags else [])


def _files(folders) -> list[tuple[str, Path]]:
    """(path in the release, local file) of every file the release holds, sorted."""
    out = []
    for src, prefix in folders:
        if not src.is_dir():
            raise UserError(f"DAG folder {src} not found", "cluster.dags_dir", "create it or point dags_dir at it")
        out += [(str(Path(prefix) / f.relative_to(src)), f) for f in src.rglob("*")
                if f.is_file() and not IGNORED & set(f.relative_to(src).parts)]
    return sorted(out)


_MEMO: dict = {}


def _memo(what: str, folders, make):
    """make(), once per process for the same files (names, sizes, mtimes): every host plans the same release."""
    key = (what, tuple((rel, str(f), st.st_mtime_ns, st.st_size) for rel, f in _files(folders) for st in [f.stat()]))
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]


def manifest(*folders: tuple[Path, str]) -> str:
    """`sha256  relative path` lines of the files a release holds (what MANIFEST_PROBE prints)."""
    return _memo("manifest", folders, lambda: _manifest(folders))


def _manifest(folders) -> str:
    return "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {rel}\n" for rel, f in _files(folders))


#: the current release's files as `manifest` lists them (nothing when there is no release yet)
MANIFEST_PROBE = (f"cd {CURRENT}/ && find . -type f "
                  + " ".join(f"! -path '*/{n}/*' ! -name '{n}'" for n in sorted(IGNORED))
                  + " -exec sha256sum {} + | sed 's#  \\./#  #'")


def _parse_manifest(text: str) -> dict[str, str]:
    pairs = (line.split("  ", 1) for line in text.splitlines() if "  " in line)
    return {path: digest for digest, path in pairs}


def release_changes(current: str, desired: str) -> str:
    """Files added, changed and removed between two manifests, one per line."""
    old, new = _parse_manifest(current), _parse_manifest(desired)
    lines = []
    for path in sorted(old.keys() | new.keys()):
        if path not in old:
            lines.append(f"added    {path}")
        elif path not in new:
            lines.append(f"removed  {path}")
        elif old[path] != new[path]:
            lines.append(f"changed  {path}")
    return "\n".join(lines) or "no file changes"


def bundle(*folders: tuple[Path, str]) -> tuple[str, bytes]:
    """(release id, tar bytes) of the DAG folders; the id is a hash of names and contents."""
    return _memo("bundle", folders, lambda: _bundle(folders))


def _bundle(folders) -> tuple[str, bytes]:
    files = _files(folders)
    digest = hashlib.sha256()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for rel, f in files:
            data = f.read_bytes()
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return digest.hexdigest()[:12], buf.getvalue()


IMPORT_CHECK = f"""( set -a; . /etc/airflow/airflow.env; set +a
  export AIRFLOW_CONFIG=/etc/airflow/airflow.cfg AIRFLOW_HOME={HOME}
  cd /tmp && runuser -u airflow -- {VENV}/bin/python - "$new" <<'__PY__'
import sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow < 3.1
    from airflow.models.dagbag import DagBag
bag = DagBag(sys.argv[1], bundle_path=sys.argv[1])
for path, err in sorted(bag.import_errors.items()):
    print("IMPORT ERROR", path, str(err).strip().splitlines()[-1])
sys.exit(1 if bag.import_errors else 0)
__PY__
) || {{ rm -rf "$new"; exit 1; }}
"""


def steps(ctx) -> list:
    folders = sources(ctx.inv)
    release, data = bundle(*folders)
    keep = ctx.inv.settings.dag_releases_keep
    new = f"{RELEASES}/{release}"
    b64 = _memo("base64", folders, lambda: base64.encodebytes(data).decode())
    return [
        Directory(f"{HOME}/dags", owner="airflow", group="airflow"),
        Directory(RELEASES, owner="airflow", group="airflow"),
        Command(f"release {release}", desc=f"unpack, import-check and switch to {release}",
                unless=f"[ \"$(readlink {CURRENT})\" = {new} ]",
                preview=Preview(CURRENT, manifest(*folders), current=MANIFEST_PROBE, compare=release_changes),
                script=(f"new={new}\nrm -rf \"$new.tmp\" && mkdir -p \"$new.tmp\"\n"
                        f"base64 -d <<'__DAGS__' | tar -xzf - -C \"$new.tmp\"\n{b64}__DAGS__\n"
                        f"chown -R airflow:airflow \"$new.tmp\"\nrm -rf \"$new\" && mv \"$new.tmp\" \"$new\"\n"
                        + IMPORT_CHECK
                        + f"ln -sfn \"$new\" {CURRENT}.tmp && mv -T {CURRENT}.tmp {CURRENT}\n"
                        f"cd {RELEASES} && ls -1t | grep -v '\\.tmp$' | tail -n +{keep + 1} | xargs -r rm -rf")),
    ]


def rollback_steps(ctx) -> list:
    """Switch `current` to the release before it (by modification time)."""
    return [Command("rollback", desc="switch to the previous release",
                    script=(f"cur=$(basename \"$(readlink {CURRENT})\")\n"
                            f"prev=$(cd {RELEASES} && ls -1t | grep -v '\\.tmp$' | grep -vx \"$cur\" | head -1)\n"
                            "[ -n \"$prev\" ] || { echo 'no previous release'; exit 1; }\n"
                            f"touch {RELEASES}/$prev\nln -sfn {RELEASES}/$prev {CURRENT}.tmp && "
                            f"mv -T {CURRENT}.tmp {CURRENT}\necho \"now at $prev (was $cur)\""))]


class Dags(Component):
    """The DAG release on every Airflow host, bundled on the control machine first."""

    name = NAME
    settings = DagsSettings
    applies = staticmethod(applies)
    steps = staticmethod(steps)

    def local_artifacts(self, inv) -> None:
        bundle(*sources(inv))


class DagsRollback(Component):
    """`dags.rollback`: the same hosts, one step switching `current` back to the previous release."""

    name = NAME
    applies = staticmethod(applies)
    steps = staticmethod(rollback_steps)
COMPONENT = Dags()
ROLLBACK = DagsRollback()
