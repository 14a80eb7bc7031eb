"""Airflow itself: system user, offline install from a wheelhouse into a venv, one config for every node.

The wheelhouse is built on the control machine (`fabfile/wheelhouse.py`) and streamed to each host only
when its manifest differs; the install is pinned by the constraints file shipped in files/airflow/ (or
the one `cluster.constraints_url` names, fetched once: fabfile/constraints.py).
Secrets (fernet key, api secret, jwt secret, connection strings) live in /etc/airflow/airflow.env
(0640 root:airflow) and are identical on every node; airflow.cfg holds none.
`finalize` runs `airflow db migrate` exactly once per run (on one host) and creates the admin user once.

Venvs (issue 16): each Airflow version has its own venv, /opt/airflow/venvs/<version>, and every unit runs
/opt/airflow/venvs/current/bin/airflow (`current` is a symlink). A new version is installed beside the
running one; the services component flips `current` on a host with its first restart, rolling per role
across hosts (fabfile/services.py); two versions are kept (the running one and the one installed), older
ones are pruned. A pre-venvs install (/opt/airflow/venv) is adopted in place, not moved (a running process keeps
its import paths): venvs/<its version> becomes a link to it and `current` points there; it is deleted
when pruned. When the schema changes, `finalize` first takes a pg_dump backup on the database host
(fabfile/postgres.py `backup_steps`), then migrates with the new version's venv.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from . import constraints, pgsql, postgres, selinux
from .airflow_api import monitor_health
from .core.component import Check, Component, Role
from .core.errors import InventoryError, PlatformError, UserError
from .core.protocol import early_probe_script, split
from .core.steps import Change, Command, Directory, File, Step
from .core.templates import FILES, render, static

NAME = "airflow"
@dataclass(frozen=True)
class AirflowSettings:
    """Airflow's `cluster:` keys (worker_concurrency, api_workers and worker_queues: per host overridable)."""

    airflow_version: str = "3.3.2"
    python_version: str = "3.11"       # wheelhouse/constraints target (Debian 12: 3.11, Ubuntu 24.04/EL9: 3.12)
    constraints_url: str | None = None  # optional official constraints URL instead of the shipped file
    wheelhouse: str | None = None      # local wheelhouse dir; default /var/cache/airflow-ha/wheelhouse-<v>-py<p>
    worker_concurrency: int = 4
    parallelism: int = 32
    api_workers: int = 2
    # Celery queues a worker consumes; per host overridable
    worker_queues: list[str] = field(default_factory=lambda: ["default"])
    worker_stop_timeout: int = 600     # seconds a worker may spend finishing tasks on stop (warm shutdown)
    # seconds a task may stay "queued" (sent, not started) before a scheduler re-sends it; after 3 times it
    # fails. A task whose worker host died while starting it waits this long (README "Lost workers").
    task_queued_timeout: int = 600     # Airflow's default
    admin_user: str = "admin"


PORTS = {"api": 8080, "worker_log": 8793, "flower": 5555}
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: the roles that run Airflow processes, with the ports they listen on (their units: fabfile/services.py)
AIRFLOW_ROLES = (
    Role("api_server", ("api",), required="give at least one host (2 for HA) the 'api_server' role"),
    Role("scheduler", required="give at least one host (2 for HA) the 'scheduler' role"),
    Role("dag_processor", required="give one host the 'dag_processor' role"),
    Role("triggerer"),
    Role("worker", ("worker_log",), required="give at least one host the 'worker' role"),
    Role("flower", ("flower",)),
)
ROLES = tuple(role.name for role in AIRFLOW_ROLES)
VENVS = "/opt/airflow/venvs"
VENV = f"{VENVS}/current"          # what every unit and the CLI run: a link to venvs/<version>
LEGACY_VENV = "/opt/airflow/venv"  # the single venv of earlier releases (adopted, see the docstring)
WHEELHOUSE = "/opt/airflow/wheelhouse"
HOME = "/var/lib/airflow"
LOGS = "/var/log/airflow"
ETC = "/etc/airflow"
CLI = "/usr/local/bin/airflow-ha-cli"
DAGS_CURRENT = f"{HOME}/dags/current"
#: in each venv: the alembic head revision of its Airflow (first line: the install it belongs to)
SCHEMA_HEAD_NAME = ".airflow-ha-schema-head"
INSTALL_STAMP = ".airflow-ha-install"
BYTECODE_STAMP = ".airflow-ha-bytecode"
HEARTBEAT_MAX_AGE = 30   # seconds: an older SchedulerJob heartbeat fails `inv health`
FLOWER_PINGS = 3         # flower API reads: a worker busy at the moment of flower's broadcast may miss one ping
#: prints the head revision from the installed package's migration files (no `import airflow`: fast, no config)
SCHEMA_HEAD_PY = r"""import glob, importlib.util, os, re
pkg = importlib.util.find_spec("airflow").submodule_search_locations[0]
revs, downs = set(), set()
for f in glob.glob(os.path.join(pkg, "migrations", "versions", "*.py")):
    text = open(f).read()
    rev = re.search(r'^revision\s*=\s*["\']([0-9a-f]+)["\']', text, re.M)
    down = re.search(r'^down_revision\s*=\s*(.*)$', text, re.M)
    revs.update([rev.group(1)] if rev else [])
    downs.update(re.findall(r'[0-9a-f]{12}', down.group(1)) if down else [])
heads = revs - downs
assert len(heads) == 1, f"expected one alembic head, found {sorted(heads)}"
print(heads.pop())
"""


#: the venv interpreter's packages (Platform.python names the interpreter): Debian's venv module is a package of
#: its own; EL9's python3.12 has it, and python3.12-pip brings the wheel ensurepip installs
PYTHON_PACKAGES = {"debian": ("python3", "python3-venv"), "rhel": ("python3.12", "python3.12-pip")}


def python_packages(platform) -> tuple[str, ...]:
    return PYTHON_PACKAGES[platform.family]


def venv_dir(version: str) -> str:
    """The venv of one Airflow version (a real directory, or a link to the adopted LEGACY_VENV)."""
    return f"{VENVS}/{version}"


def schema_head(version: str) -> str:
    return f"{venv_dir(version)}/{SCHEMA_HEAD_NAME}"


def schema_head_of_wheelhouse(wheels: Path) -> str | None:
    """The alembic head of the Airflow in a local wheelhouse (read from the wheel's migration files, the
    same way SCHEMA_HEAD_PY does on a host); None when no wheel there carries migrations."""
    import re
    import zipfile
    revs, downs = set(), set()
    for whl in sorted(wheels.glob("apache_airflow*.whl")):
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                if re.fullmatch(r"airflow/migrations/versions/[^/]+\.py", name):
                    text = z.read(name).decode(errors="replace")
                    rev = re.search(r"^revision\s*=\s*[\"']([0-9a-f]+)[\"']", text, re.M)
                    down = re.search(r"^down_revision\s*=\s*(.*)$", text, re.M)
                    revs.update([rev.group(1)] if rev else [])
                    downs.update(re.findall(r"[0-9a-f]{12}", down.group(1)) if down else [])
    heads = revs - downs
    return heads.pop() if len(heads) == 1 else None


def applies(inv, host) -> bool:
    return host.has(*ROLES)


def airflow_hosts(inv) -> list:
    return [h for h in inv.hosts.values() if h.has(*ROLES)]


def constraints_path(inv) -> Path:
    """This cluster's constraints file: the cached copy of `constraints_url` if set, else the shipped one."""
    c = inv.settings
    if c.constraints_url:
        return constraints.cache_path(c.constraints_url)
    return FILES / "airflow" / f"constraints-{c.airflow_version}-py{c.python_version}.txt"


def ensure_constraints_local(inv) -> Path:
    """The constraints file on the control machine: `constraints_url` fetched (once) or the shipped file."""
    c = inv.settings
    if c.constraints_url:
        return constraints.fetch(c.constraints_url, f"{inv.path}: cluster.constraints_url")
    path = constraints_path(inv)
    if not path.is_file():
        raise UserError(f"no constraints file for Airflow {c.airflow_version} on Python {c.python_version}",
                        str(path), "generate it with files/airflow/make-constraints.sh or set constraints_url")
    return path


def wheelhouse_dir(inv) -> Path:
    c = inv.settings
    if c.wheelhouse:
        p = Path(c.wheelhouse)
        return p if p.is_absolute() else inv.base_dir / p
    return Path(f"/var/cache/airflow-ha/wheelhouse-{c.airflow_version}-py{c.python_version}")


def ensure_wheelhouse_local(inv) -> Path:
    """Build the wheelhouse on the control machine if missing or built from other constraints (cached)."""
    from . import wheelhouse
    path, pins = wheelhouse_dir(inv), constraints_path(inv)
    if not (path / wheelhouse.MANIFEST).is_file() or not wheelhouse.built_with(path, pins):
        print(f"{'local':<10} airflow    building wheelhouse {path} (once; cached)", flush=True)
        wheelhouse.build(path, inv.settings.airflow_version, inv.settings.python_version, constraints=pins)
    wheelhouse.precompile(path, inv.settings.python_version,
                          log=lambda text: print(f"{'local':<10} airflow    {text}", flush=True))
    return path


class Wheelhouse(Step):
    """The control machine's wheelhouse mirrored on the host (streamed as tar only when it differs)."""

    kind = "wheelhouse"

    def __init__(self, local: Path, manifest: bytes | None = None, installed: tuple[str, str] = ("", "")):
        super().__init__(WHEELHOUSE)
        self.local = local
        # `manifest` given: read through the run's state source (a fresh plan has no local wheelhouse)
        self.manifest = manifest if manifest is not None else (local / "MANIFEST.sha256").read_bytes()
        self.installed = installed   # (install stamp path, install id): that install done = no wheels needed

    def probe(self):
        stamp, install_id = self.installed
        done = f"[ \"$(cat {stamp} 2>/dev/null)\" = {install_id} ] && echo installed || " if stamp else ""
        return f"{done}sha256sum < {WHEELHOUSE}/MANIFEST.sha256 2>/dev/null | cut -c1-64"

    def plan(self, state, notified):
        if state.strip() in ("installed", hashlib.sha256(self.manifest).hexdigest()):
            return None
        unpack = (f"rm -rf {WHEELHOUSE}.new && mkdir -p {WHEELHOUSE}.new && "
                         f"{NICE} tar -xf - -C {WHEELHOUSE}.new && rm -rf {WHEELHOUSE} && "
                  f"mv {WHEELHOUSE}.new {WHEELHOUSE}")
        return Change(f"upload {len(self.manifest.splitlines())} wheels", "true", stream=(unpack, self._tar_chunks))

    def _tar_chunks(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for f in sorted(self.local.iterdir()):
                if f.is_file():
                    tar.add(f, arcname=f.name)
        data = buf.getvalue()
        for i in range(0, len(data), 1 << 20):
            yield data[i:i + (1 << 20)]


def config_values(ctx) -> dict:
    """airflow.cfg values. No single other host in any process's path: the Execution API is always the
    host's own nginx (fabfile/nginx.py: a local-only one on hosts without the nginx role), the broker
    is reached through every Sentinel, statsd is local; only the database is one host (health: SPOF).

    StatsD is always on, monitoring or not: Airflow sends it to the host's loopback, where the statsd exporter
    listens only with `cluster.monitoring` (else the datagrams are dropped there). So switching monitoring
    on or off changes no airflow.cfg and restarts no Airflow process on any host."""
    inv, host = ctx.inv, ctx.host
    ports = inv.ports
    scheme = "https" if inv.settings.tls.enabled else "http"
    front = inv.settings.vip or inv.with_role("nginx")[0].name
    return {
        "airflow_home": HOME, "dags_folder": DAGS_CURRENT, "logs_folder": LOGS,
        "base_url": f"{scheme}://{front}/",
        "execution_api_server_url": f"http://127.0.0.1:{ports.http}/execution/",
        "api_port": ports.api, "api_workers": inv.settings.api_workers,
        "worker_log_server_port": ports.worker_log, "flower_port": ports.flower,
        "flower_url_prefix": "/flower", "hostname": host.name,
        "sentinel_master_name": inv.settings.redis.master_name,
        "statsd_on": True, "statsd_host": "127.0.0.1", "statsd_port": ports.statsd,
        "parallelism": inv.settings.parallelism, "default_timezone": "utc",
        "task_queued_timeout": inv.settings.task_queued_timeout,
    }


def env_values(ctx) -> dict:
    inv, run, s = ctx.inv, ctx.run, ctx.secrets
    port = inv.ports.sentinel
    return {
        "fernet_key": s["fernet_key"], "api_secret_key": s["api_secret_key"], "jwt_secret": s["jwt_secret"],
        "db_user": pgsql.USER, "db_password": s["postgres_password"], "db_host": postgres.db_host(run),
        "db_port": inv.ports.postgres, "db_name": pgsql.DB,
        "db_hosts": postgres.db_hosts(run) if pgsql.patroni_mode(inv) else [], "db_params": postgres.MULTI_HOST_PARAMS,
        "redis_password": s["redis_password"], "sentinel_password": s["sentinel_password"],
        "sentinels": [f"{run.addresses[h.name]}:{port}" for h in inv.with_role("sentinel")],
        "flower_user": "flower", "flower_password": s["flower_password"],
    }


def install_spec(inv) -> str:
    """What the venv gets: the same requirement list the wheelhouse was downloaded for."""
    from .wheelhouse import requirements
    return " ".join(r.replace(" ", "") for r in requirements(inv.settings.airflow_version))


def check_python(ctx) -> None:
    """The wheelhouse/constraints are built for cluster.python_version (before any host is reached, so
    they cannot follow the hosts): a host whose venv Python differs is refused with one clear error."""
    have, want = ctx.platform.python_version, ctx.inv.settings.python_version
    if have and have != want:
        raise PlatformError(
            f"{ctx.platform.name} runs Airflow on Python {have} ({ctx.platform.python}), but the wheelhouse and "
            f"constraints are for Python {want}", f"{ctx.inv.path}: cluster.python_version (host {ctx.host.name})",
            f"set cluster.python_version: '{have}' (every Airflow host must run the same Python minor version)")


def _local_inputs(ctx) -> tuple[str, bytes]:
    """(constraints text, wheelhouse manifest) as the run's state source reads them on the control machine."""
    inv, read = ctx.inv, ctx.run.source.read_local
    build = f"{inv.settings.airflow_version}-py{inv.settings.python_version}"
    return (read(constraints_path(inv), f"constraints-{build}.txt").decode(),
            read(wheelhouse_dir(inv) / "MANIFEST.sha256", f"MANIFEST.sha256 of wheelhouse-{build}"))


def _wheels_only(manifest: bytes, python_version: str) -> str:
    """The manifest without the precompiled bytecode: adding that archive to a wheelhouse is no new install."""
    from .wheelhouse import bytecode_name  # not at import time: start-up of every run (issue 18)
    name = bytecode_name(python_version)
    return "".join(line for line in manifest.decode().splitlines(True) if not line.rstrip().endswith(f"  {name}"))


def steps(ctx) -> list:
    inv, plat = ctx.inv, ctx.platform
    check_python(ctx)
    wheels = wheelhouse_dir(inv)
    constraints, manifest = _local_inputs(ctx)
    install_id = hashlib.sha256("\n".join([
        install_spec(inv), constraints, _wheels_only(manifest, inv.settings.python_version)]).encode()).hexdigest()
    version = inv.settings.airflow_version
    venv = venv_dir(version)
    return [
        Command("group airflow", unless="getent group airflow", script="groupadd --system airflow"),
        Command("user airflow", unless="getent passwd airflow",
                script=f"useradd --system --gid airflow --home-dir {HOME} --shell /usr/sbin/nologin airflow"),
        Directory(HOME, owner="airflow", group="airflow", mode=0o755),
        Directory(f"{HOME}/dags", owner="airflow", group="airflow", mode=0o755),
        Directory(LOGS, owner="airflow", group="airflow", mode=0o755),
        Directory(ETC, owner="root", group="airflow", mode=0o750),
        Directory("/opt/airflow", mode=0o755),
        Directory(VENVS, mode=0o755),
        adopt_legacy_step(),
        prune_step(version),
        Wheelhouse(wheels, manifest, installed=(f"{venv}/{INSTALL_STAMP}", install_id)),
        File("/opt/airflow/constraints.txt", constraints),
        *install_steps(plat.python, venv, install_id, install_spec(inv)),
        Command("current venv", desc=f"link {VENV} to {venv} (first install)",
                unless=f"[ -L {VENV} ] && [ -e {VENV} ]", script=f"ln -sfn {venv} {VENV}"),
        File(f"{ETC}/airflow.cfg", render("airflow/airflow.cfg.j2", **config_values(ctx)),
             owner="root", group="airflow", mode=0o644, notify=("airflow",)),
        File(f"{ETC}/airflow.env", render("airflow/airflow.env.j2", **env_values(ctx)),
             owner="root", group="airflow", mode=0o640, notify=("airflow",)),
        File(CLI, render("airflow/airflow-cli.sh.j2", venv=VENV, airflow_home=HOME), mode=0o755),
        Directory(f"{HOME}/config", owner="root", group="airflow", mode=0o755),
        File(f"{HOME}/config/airflow_ha_celery_config.py", static("airflow/airflow_ha_celery_config.py"),
             notify=("airflow",)),
        File("/etc/logrotate.d/airflow-ha", render("airflow/logrotate.j2", logs=LOGS)),
        *selinux.steps_for_airflow(ctx),
    ]


#: an upgrade installs beside the running version: serving processes first. `nice` alone does not do it:
#: with the kernel's autogroup scheduling (sched_autogroup_enabled=1, e.g. Debian's and the lab's kernels) the
#: CPU is shared between sessions before nice counts, and a 3-host venv install stopped every api-server for
#: 30 s (the VIP went with them). So the command gets a session of its own whose autogroup is niced too
#: (`setsid -w` waits for it; where /proc/self/autogroup does not exist, the echo fails silently).
NICE = ("setsid -w sh -c '{ echo 19 > /proc/self/autogroup; } 2>/dev/null; exec nice -n 19 ionice -c2 -n7 \"$@\"' "
        "low-priority")
#: uv's binary straight out of its wheel in the wheelhouse: no pip in the new venv, no pip run to get uv
#: (a venv with pip plus `pip install uv` cost ~8 s per host of a fresh deploy; issue 18)
UV_FROM_WHEEL = """import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/uv"))
    with z.open(name) as src, open(dest, "wb") as out:
        out.write(src.read())
os.chmod(dest, 0o755)
"""


def install_steps(python: str, venv: str, install_id: str, spec: str) -> list:
    """Create `venv` and install `spec` into it offline (nothing running uses it yet); record its schema head.

    No "airflow" notification: the running units use `current`; services flips it (and restarts them).
    When a venv runs already, `airflow version` proves the new one before anything can switch to it; on a first
    install its first imports are this run's `db migrate` and DAG import check (an import of Airflow costs
    ~2 CPU-s a host: issue 18).
    """
    find = f"--no-index --find-links {WHEELHOUSE} -c /opt/airflow/constraints.txt"
    quoted = " ".join(shlex.quote(s) for s in spec.split())
    stamp, head = f"{venv}/{INSTALL_STAMP}", f"{venv}/{SCHEMA_HEAD_NAME}"
    return [
        Command("venv", desc=f"create {venv}", unless=f"[ -x {venv}/bin/python ]",
                script=f"rm -rf {venv}\n{python} -m venv --without-pip {venv}"),
        Command("install", desc=f"install {spec} into {venv}",
                unless=f"[ \"$(cat {stamp} 2>/dev/null)\" = {install_id} ]",
                script=(f"t=$(mktemp -d)\ntrap 'rm -rf \"$t\"' EXIT\n"
                        f"w=$(ls {WHEELHOUSE}/uv-*.whl 2>/dev/null | head -n 1)\n"
                        f"[ -z \"$w\" ] || {python} - \"$w\" \"$t/uv\" <<'__PY__'\n{UV_FROM_WHEEL}__PY__\n"
                        f"if [ -x \"$t/uv\" ]; then {NICE} \"$t/uv\" pip install -q --python "
                        f"{venv}/bin/python {find} {quoted}\n"
                        f"else {venv}/bin/python -m ensurepip -q && {NICE} {venv}/bin/pip install -q {find} {quoted}; fi\n"
                        f"{_unpack_bytecode(venv)}"
                        f"[ ! -e {VENV} ] || {NICE} {venv}/bin/airflow version >/dev/null\n"
                        f"echo {install_id} > {stamp}")),
        bytecode_step(venv, install_id),
        Command("schema head", desc="record the installed Airflow's schema (alembic head) revision",
                unless=f"[ \"$(sed -n 1p {head} 2>/dev/null)\" = {install_id} ]",
                script=(f"h=$({NICE} {venv}/bin/python - <<'__PY__'\n{SCHEMA_HEAD_PY}__PY__\n)\n"
                        f"[ -n \"$h\" ]\nprintf '%s\\n%s\\n' {install_id} \"$h\" > {head}")),
    ]


def _unpack_bytecode(venv: str) -> str:
    """Shell: the wheelhouse's precompiled .pyc files (wheelhouse.precompile) into the venv's site-packages,
    when the wheelhouse has them for this interpreter's version."""
    from .wheelhouse import bytecode_name
    ask = f"{venv}/bin/python -c"
    return (f"v=$({ask} 'import sys; print(\"%d.%d\" % sys.version_info[:2])')\n"
            f"b={WHEELHOUSE}/{bytecode_name('$v')}\n"
            f"if [ -f \"$b\" ]; then sp=$({ask} 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')\n"
            f"  {NICE} tar -xzf \"$b\" --no-same-owner -C \"$sp\"\nfi\n")


#: compile every module of the venv's site-packages that has no valid .pyc yet (the wheelhouse's checked-hash
#: ones are valid by construction: the interpreter checks them at import); a file that does not compile is
#: skipped, as pip does
COMPILE_PY = """import compileall, importlib.util, os, sysconfig, warnings
from concurrent.futures import ProcessPoolExecutor
warnings.filterwarnings("ignore")

def valid(py):
    try:
        with open(importlib.util.cache_from_source(py), "rb") as f:
            head = f.read(16)
        st = os.stat(py)
    except OSError:
        return False
    flags = int.from_bytes(head[4:8], "little")
    if head[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if flags & 1:
        return True
    return (int.from_bytes(head[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(head[12:16], "little") == st.st_size & 0xFFFFFFFF)

def compile_one(py):
    return compileall.compile_file(py, quiet=2, force=True)

todo = [os.path.join(root, f) for d in dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        for root, _, files in os.walk(d) for f in files if f.endswith(".py")]
todo = [py for py in todo if not valid(py)]
if todo:
    with ProcessPoolExecutor() as pool:
        list(pool.map(compile_one, todo, chunksize=64))
"""


def bytecode_step(venv: str, install_id: str) -> Command:
    """Byte-compile the venv once per install, as root (who owns it).

    The Airflow processes run as `airflow`, who cannot write `__pycache__` in the root-owned venv, and uv
    (unlike pip) compiles nothing at install: every process start compiled its ~1,700 modules in memory
    again, about 6 s of CPU each on the lab (issue 18). The install step has already unpacked the
    wheelhouse's precompiled .pyc files (wheelhouse.precompile), so this compiles only what has no valid
    .pyc: nearly nothing when the control machine precompiled, everything (~30 CPU-seconds per host on the
    lab) when it could not. A venv installed before this step gets it on the next deploy; nothing restarts
    for it (the next start of each process is faster)."""
    stamp = f"{venv}/{BYTECODE_STAMP}"
    return Command("bytecode", desc=f"byte-compile {venv} (read-only for the airflow user)",
                   unless=f"[ \"$(cat {stamp} 2>/dev/null)\" = {install_id} ]",
                   script=(f"{NICE} {venv}/bin/python - <<'__PY__'\n{COMPILE_PY}__PY__\n"
                           f"echo {install_id} > {stamp}"))


def adopt_legacy_step() -> Command:
    """A pre-venvs install keeps running where it is: venvs/<its version> links to it, `current` to that."""
    version = (f"{LEGACY_VENV}/bin/python -c 'import importlib.metadata as m; "
               "print(m.version(\"apache-airflow\"))'")
    return Command("adopt venv", desc=f"keep {LEGACY_VENV} as {VENVS}/<its version> (not moved), link current",
                   unless=f"[ ! -x {LEGACY_VENV}/bin/python ] || [ -L {VENV} ]",
                   script=(f"v=$({version})\n[ -n \"$v\" ]\nln -sfn {LEGACY_VENV} {VENVS}/$v\n"
                           f"ln -sfn {VENVS}/$v {VENV}"))


def prune_step(version: str) -> Command:
    """Keep two venvs: the one `current` runs and `version`'s; older ones (an adopted legacy venv too) go."""
    keep = f"-e current -e {shlex.quote(version)} -e \"$(basename \"$(readlink {VENV})\")\""
    old = f"ls {VENVS} 2>/dev/null | grep -vxF {keep}"
    return Command("prune venvs", desc=f"remove venvs other than the running one and {version}'s (N = 2 kept)",
                   unless=f"[ -z \"$({old})\" ]",
                   script=(f"for n in $({old}); do t=$(readlink -f {VENVS}/$n); rm -rf {VENVS}/$n\n"
                           f"  [ \"$t\" = {LEGACY_VENV} ] && rm -rf {LEGACY_VENV}; echo \"removed $n\"; done"))


#: run.data keys: the host `db migrate` ran (or was found done) on; the connect-time answers by step
MIGRATED_ON, EARLY = "airflow:migrated_on", "airflow:early"


def finalize(run, hosts) -> None:
    """`airflow db migrate` once per run, on the first airflow host reached (the admin user: `afterwards`).

    When the migration changes the schema of a database that has one, a backup comes first (a failed
    backup stops here: nothing is migrated)."""
    candidates = [h for h in run.alive(hosts) if h.has(*ROLES)]
    if not candidates:
        return
    host = candidates[0]
    steps = finalize_steps(run)[:1]
    try:
        if not _done_early(run, host, 0, steps):
            if not backup_before_migrate(run, host):
                return
            results = run.converge(host, NAME, steps)
            if host.name in run.failed or any(r.status == "failed" for r in results):
                return
        run.data[MIGRATED_ON] = host.name
    except Exception as exc:
        run.fail_host(host, NAME, f"db migrate: {exc}")


def afterwards(run, hosts) -> None:
    """The admin user, on the host that migrated, beside the deploy's health gate: nothing the deploy starts
    needs it (issue 18: ~6 s of one host's CPU off the way to the services). No migrate, no admin user."""
    host = next((h for h in run.alive() if h.name == run.data.get(MIGRATED_ON)), None)
    if host is None:
        return
    steps = finalize_steps(run)[1:]
    try:
        if not _done_early(run, host, 1, steps):
            run.converge(host, NAME, steps)
    except Exception as exc:
        run.fail_host(host, NAME, f"admin user: {exc}")


def new_schema_head(run, host) -> str:
    """The alembic head of the inventory's Airflow version: from the local wheelhouse, else the host's record."""
    version = run.inv.settings.airflow_version
    if "schema_head" not in run.data:
        run.data["schema_head"] = schema_head_of_wheelhouse(wheelhouse_dir(run.inv)) or ""
    return run.data["schema_head"] or run.remote(host.name).sh(
        f"sed -n 2p {schema_head(version)} 2>/dev/null", timeout=20).out.strip()




def connect_probe(run, host) -> str:
    """Asked with the facts of the first selected Airflow host (same round trip): the probes of
    `finalize_steps` (db migrate done? admin user there?), so that a no-op's `finalize` makes no round trip
    (issue 18). Nothing migrates the schema or drops the user before `finalize`, so a "done" still holds
    then; anything else (a migrate to do, no psql yet, no database) is asked again there."""
    first = next((h for h in run.hosts if h.has(*ROLES)), None)
    if first is None or host.name != first.name:
        return ""
    return early_probe_script(finalize_steps(run))


def early_answer(run, index: int) -> tuple[str, str]:
    """(host, answer) of the connect-time question for `finalize_steps(run)[index]` alone, taken once per
    index: a later batch's finalize comes after a migrate. ("", "") when there is none."""
    answers = run.data.setdefault(EARLY, {})
    if not answers:
        host, text = next(iter(run.answers.pop(NAME, {}).items()), ("", ""))
        answers.update({i: (host, f"@@early 0\n{state}") for i, state in enumerate(split(text, 2, "@@early"))})
    return answers.pop(index, ("", ""))


def _done_early(run, host, index: int, steps: list) -> bool:
    """`finalize_steps(run)[index]` found done on `host` by the connect-time question (recorded ok, no round trip)."""
    asked_on, text = early_answer(run, index)
    return asked_on == host.name and run.converged_early(host, NAME, steps, text)


def backup_before_migrate(run, host) -> bool:
    """pg_dump the database on its host when `db migrate` will change an existing schema; False = failed."""
    rev = postgres.db_revision(run, host)
    if not rev or rev == new_schema_head(run, host):
        return True            # fresh database, no schema change, or no answer (the migrate step says why)
    version = run.inv.settings.airflow_version
    db = postgres.backup_host(run)
    if db is None:
        run.fail_host(host, NAME, "no database primary to back up before db migrate")
        return False
    results = run.converge(db, "postgres", postgres.backup_steps(run, rev, version))
    if db.name in run.failed or any(r.status == "failed" for r in results):
        run.fail_host(host, NAME, f"backup on {db.name} failed: db migrate not run")
        return False
    if not run.opts.check:
        backup = postgres.find_backup(run, rev, version)
        run.say(f"{backup.host:<10} postgres   backup {backup.path} (restore: {backup.restore()})", always=True)
    return True


def finalize_steps(run) -> list:
    """The steps `finalize` converges on one airflow host: db migrate and the admin user.

    "Already migrated" is read from the database: its alembic revision equals the schema head recorded in
    the inventory version's venv (`schema_head`); the migrate runs with that venv, not `current`. An
    unreachable database reads as "not migrated", so the migrate runs and fails loudly instead of being
    skipped. No pipe hides a command's exit status.
    """
    s, inv = run.secrets, run.inv
    admin = inv.settings.admin_user
    version = inv.settings.airflow_version
    psql = (f"PGPASSWORD={shlex.quote(s['postgres_password'])} PGCONNECT_TIMEOUT=5 psql {postgres.psql_target(run)} -tA")
    head = f"$(sed -n 2p {schema_head(version)} 2>/dev/null)"
    db_rev = f"$({psql} -c 'select version_num from alembic_version' 2>/dev/null)"
    password = shlex.quote(s["admin_password"])
    return [
        Command("db migrate", desc=f"airflow db migrate (Airflow {version})",
                unless=f"h={head}; [ -n \"$h\" ] && [ \"{db_rev}\" = \"$h\" ]",
                script=_quiet(f"AIRFLOW_HA_VENV={venv_dir(version)} {CLI} db migrate", 20)
                + f"\nh={head}; r={db_rev}\n"
                "[ -n \"$h\" ] && [ \"$r\" = \"$h\" ] || "
                "{ echo \"db migrate ended but the schema is at '$r', not at '$h'\"; exit 1; }"),
        Command("admin user", desc=f"create admin user '{admin}'",
                unless=f"[ \"$({psql} -c \"select 1 from ab_user where username='{admin}'\")\" = 1 ]",
                script=_quiet(f"printf '%s\\n%s\\n' {password} {password} | {CLI} users create --username {admin} "
                              f"--role Admin --firstname Airflow --lastname Admin --email {admin}@localhost", 5)),
    ]


def _quiet(command: str, lines: int) -> str:
    """Run `command`, show its last `lines` lines, and keep its exit status (no `| tail` hiding it)."""
    return (f"rc=0; out=$({command} 2>&1) || rc=$?\nprintf '%s\\n' \"$out\" | tail -n {lines}\n"
            "[ $rc -eq 0 ] || { echo \"exit status $rc\"; exit $rc; }")


def validate(inv) -> None:
    """Sane per-host worker settings; a worker for the default queue."""
    for host in inv.hosts.values():
        if inv.settings_for(host).worker_concurrency < 1:
            raise InventoryError("worker_concurrency must be at least 1",
                                 f"{inv.path}: hosts.{host.name}.worker_concurrency", "use 1 or more")
        _check_queues(inv, host)
    if not any("default" in inv.settings_for(h).worker_queues for h in inv.with_role("worker")):
        raise InventoryError("no worker serves the 'default' queue: tasks without a queue would never run",
                             f"{inv.path}: worker_queues", "add 'default' to the worker_queues of at least one worker")


def _check_queues(inv, host) -> None:
    where = f"{inv.path}: hosts.{host.name}.worker_queues"
    queues = inv.settings_for(host).worker_queues
    if "worker_queues" in host.vars and not host.has("worker"):
        raise InventoryError("worker_queues on a host without the 'worker' role", where,
                             "add the 'worker' role or remove worker_queues from this host")
    if not queues or len(set(queues)) != len(queues):
        raise InventoryError(f"worker_queues must list one or more distinct queues, got {queues!r}", where,
                             "e.g. worker_queues: [default, heavy]")
    bad = [q for q in queues if not QUEUE_NAME.match(q)]
    if bad:
        raise InventoryError(f"invalid queue name {bad[0]!r}", where,
                             "use letters, digits, '_', '.' and '-' (Celery queue names)")


# -- `inv health` -------------------------------------------------------------------------------------------
def health_probe(run, host) -> list[str]:
    """An api-server's own /api/v2/monitor/health."""
    if not host.has("api_server"):
        return []
    return [f'echo "@@api $(curl -s -m 4 http://{run.addresses[host.name]}:{run.inv.ports.api}'
            '/api/v2/monitor/health)"']


def health_rows(run, host, answers) -> list[Check]:
    return [monitor_health(host.name, "api-server health", body) for body in answers.get("api", [])]


def database_checks(run, cur) -> list[Check]:
    """What `airflow jobs check --job-type SchedulerJob --allow-multiple` checks, per scheduler host."""
    try:
        cur.execute("SELECT hostname, max(extract(epoch FROM now() - latest_heartbeat)) FROM job "
                    "WHERE job_type = 'SchedulerJob' AND state = 'running' GROUP BY hostname")
        beats = dict(cur.fetchall())
    except Exception as exc:  # before the first migrate
        return [Check("cluster", "schedulers", "fail", f"no job table: {str(exc)[:60]}")]
    out = []
    for host in run.inv.with_role("scheduler"):
        age = beats.get(host.name)
        ok = age is not None and age < HEARTBEAT_MAX_AGE
        out.append(Check(host.name, "scheduler alive", "ok" if ok else "fail",
                         f"heartbeat {age:.0f}s ago" if age is not None else "no running SchedulerJob"))
    return out


def health_checks(run) -> list[Check]:
    """Celery workers online (flower API with its basic-auth secret) vs the hosts with the worker role."""
    import base64
    import json
    import time
    import urllib.request  # only health needs it (start-up time)
    inv = run.inv
    flower = inv.with_role("flower")
    if not flower or flower[0].name in run.failed:
        return []
    host = flower[0]
    auth = base64.b64encode(f"flower:{run.secrets['flower_password']}".encode()).decode()
    expected = {h.name for h in inv.with_role("worker")}
    try:
        with run.remote(host.name).forward(run.addresses[host.name], inv.ports.flower) as port:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/flower/api/workers?refresh=1",
                                         headers={"Authorization": f"Basic {auth}"})
            for attempt in range(FLOWER_PINGS):
                with urllib.request.urlopen(req, timeout=inv.settings.check_timeout) as resp:
                    workers = json.loads(resp.read())
                if expected <= {_celery_host(k) for k in workers} or attempt == FLOWER_PINGS - 1:
                    break
                time.sleep(1)
    except Exception as exc:
        return [Check(host.name, "celery workers", "fail", f"flower: {type(exc).__name__}: {str(exc)[:60]}")]
    return [_worker_check(h.name, workers, inv.settings_for(h).worker_queues) for h in inv.with_role("worker")]


def _celery_host(node: str) -> str:
    """The inventory host of a Celery node name (`celery@node3` or `celery@node3.example`)."""
    return node.split("@", 1)[-1].split(".", maxsplit=1)[0]


def _worker_check(name: str, workers: dict, expected: list) -> Check:
    """One worker's row from flower's /api/workers: online, and consuming exactly its configured queues."""
    info = next((v for k, v in workers.items() if _celery_host(k) == name), None)
    if info is None:
        return Check(name, "celery worker online", "fail", "not online in flower")
    queues = info.get("active_queues") if isinstance(info, dict) else None
    if not isinstance(queues, list):
        return Check(name, "celery worker online", "fail", "online, but flower sent no queue list")
    serving = sorted(q.get("name", "?") for q in queues if isinstance(q, dict))
    if serving != sorted(expected):
        return Check(name, "celery worker online", "fail",
                     f"serves queues {','.join(serving) or 'none'}, inventory says {','.join(sorted(expected))}")
    return Check(name, "celery worker online", "ok", f"answers ping, queues {','.join(serving)}")


class Airflow(Component):
    """The Airflow install and config on every Airflow host; `db migrate` once in `finalize`."""

    name = NAME
    roles = AIRFLOW_ROLES
    settings = AirflowSettings
    default_ports = PORTS
    host_settings = ("worker_concurrency", "api_workers", "worker_queues")
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    validate = staticmethod(validate)
    connect_probe = staticmethod(connect_probe)
    finalize = staticmethod(finalize)
    afterwards = staticmethod(afterwards)
    finalize_before = "services"      # db migrate beside the DAG release (issue 18)
    health_probe = staticmethod(health_probe)
    health_rows = staticmethod(health_rows)
    health_checks = staticmethod(health_checks)
    database_checks = staticmethod(database_checks)

    def local_artifacts(self, inv) -> None:
        """The constraints file and the wheelhouse every host installs from."""
        ensure_constraints_local(inv)
        ensure_wheelhouse_local(inv)


COMPONENT = Airflow()
