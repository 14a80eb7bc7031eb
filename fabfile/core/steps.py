"""Idempotent steps: each one probes state, plans a change only if the state differs, and applies it.

A step never touches the host itself. The runner joins the `probe()` snippets of all steps of a component
into one remote script (one round trip), calls `plan(state, notified)` locally (pure Python: this is what
`--check` prints and what spec tests compare), then joins the planned `Change.script`s into one apply
script (a second round trip, only when something changes).

Batches: steps whose probes one command can answer for many (`systemctl show`, `stat`/`sha256sum`,
`dpkg-query`/`rpm`) name a `batch()` kind; the runner then runs that command once per probe script (see
BATCHES) and gives each step the state its own probe would have printed (fewer processes on the host).

Handlers: a step's `notify` names services; a `Service` step restarts once, at the end of its component,
only if a step that notifies it changed. The special name "daemon-reload" makes the runner call
`systemctl daemon-reload` once before the first service action.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass

q = shlex.quote


@dataclass
class Preview:
    """For --check: what a change does to `target` (a file or a directory) that its script alone hides.

    The runner prints `current` (shell run on the host; default: the file `target`) against `desired`,
    as a unified diff, or as `compare(current, desired)` returns it (e.g. a list of changed files).
    """

    target: str
    desired: str
    current: str = ""
    compare: Callable[[str, str], str] | None = None

    def current_script(self) -> str:
        return self.current or f"[ -f {q(self.target)} ] && cat {q(self.target)}"


@dataclass
class Change:
    """What a step would do: a one-line description, the shell to do it, and (for files) a diff."""

    desc: str
    script: str
    new_content: str | None = None   # files: the desired text, for the --check diff
    notify: tuple = ()
    warning: bool = False            # nothing to apply, but the user should know (reported as "warn")
    stream: tuple | None = None      # (command, chunks()) : bytes streamed to a command before the script
    preview: Preview | None = None   # for --check: what the script changes in a file or directory
    restart: bool = False            # restarts/reloads a unit that is running now (the runner rolls these)
    downtime: str = ""               # why this restart costs downtime (e.g. "single database"), for --check


@dataclass
class Step:
    """Base of every step: probe() prints the state, plan() turns it into a Change or None."""

    kind = "step"
    target: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.target}"

    def probe(self) -> str:
        return "true"

    def plan(self, state: str, notified: set) -> Change | None:
        raise NotImplementedError

    def batch(self) -> str:
        """The BATCHES kind that can answer this step's probe ("" = none: its own probe runs)."""
        return ""

    def own_probe(self) -> str:
        """What is left to probe per step when the batch answers the rest ("" = nothing)."""
        return ""


def _safe_path(path: str) -> bool:
    """Paths `stat %n` and `sha256sum` print back unchanged (no escaping), so a batch can key on them."""
    return not any(c in path for c in "\n\\|")


POLICY_RC_D = "/usr/sbin/policy-rc.d"
SHA256_HEX = 64   # characters in a sha256sum digest


@dataclass
class Packages(Step):
    """OS packages present (apt or dnf); `apt-get update` only when the lists are older than an hour.

    Debian starts a daemon the moment its package is installed: before this run's firewall and configs
    exist (redis-sentinel listens on every address). A `policy-rc.d` answering 101 ("action forbidden",
    Debian policy 9.3.3) keeps every service installed here stopped; its component starts it later, after
    the firewall converged, with its own config. An existing policy-rc.d is left alone. RPMs never start
    services on install. `may_start` exempts the firewall's own package (firewalld starts with a default
    zone that admits SSH only, and must be up before the zone commands of the same apply).
    """

    kind = "packages"
    names: tuple = ()
    manager: str = "apt"
    may_start: bool = False

    def __post_init__(self):
        self.target = self.target or " ".join(self.names)

    def probe(self) -> str:
        names = " ".join(q(n) for n in self.names)
        if self.manager == "apt":
            return f"dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {names} 2>/dev/null | grep ' installed$'"
        # whole lines only: `rpm -q` prints "package X is not installed" on stdout, which ' installed$' let through
        return f"rpm -q --qf '%{{NAME}} installed\\n' {names} 2>/dev/null | grep -x '[^ ]* installed'"

    def batch(self):
        return f"packages-{self.manager}"

    def plan(self, state, notified):
        have = {line.split()[0].split(":")[0] for line in state.splitlines() if line.strip()}
        missing = [n for n in self.names if n not in have]
        if not missing:
            return None
        pkgs = " ".join(q(n) for n in missing)
        if self.manager == "apt":
            opts = "-o Acquire::http::Timeout=30 -o Acquire::Retries=3 -o DPkg::Lock::Timeout=120"
            no_start = ("" if self.may_start else
                        f"[ -e {POLICY_RC_D} ] || {{ printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D}; "
                        f"chmod 755 {POLICY_RC_D}; trap 'rm -f {POLICY_RC_D}' EXIT; }}\n")
            script = (
                "export DEBIAN_FRONTEND=noninteractive\n"
                f"{no_start}[ -n \"$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -60 2>/dev/null)\" ] "
                f"|| timeout 150 apt-get -q {opts} update || timeout 450 apt-get -q {opts} update\n"  # a stall: retry
                f"timeout 1200 apt-get install -y -q --no-install-recommends {opts} "
                f"-o Dpkg::Options::=--force-confold {pkgs}")
        else:
            script = f"timeout 1200 dnf install -y -q {pkgs}"
        return Change(f"install {' '.join(missing)}", script)


def _stat_probe(path: str, checksum: bool) -> str:
    p = q(path)
    tail = f"; sha256sum {p} | cut -c1-64" if checksum else ""
    return f"if [ -e {p} ] || [ -L {p} ]; then stat -c '%U %G %a %F' {p}{tail}; else echo absent; fi"


def _ownership(path, owner, group, mode, state_line) -> list[str]:
    """Commands to fix owner/group/mode given `stat` output '<user> <group> <mode> <type>'."""
    have = state_line.split()
    cmds = []
    if have[:2] != [owner, group]:
        cmds.append(f"chown {q(owner)}:{q(group)} {q(path)}")
    if have[2:3] != [format(mode, "o")]:
        cmds.append(f"chmod {format(mode, 'o')} {q(path)}")
    return cmds


@dataclass
class Directory(Step):
    """A directory with owner, group and mode."""

    kind = "directory"
    owner: str = "root"
    group: str = "root"
    mode: int = 0o755

    def probe(self):
        return _stat_probe(self.target, checksum=False)

    def batch(self):
        return "stat" if _safe_path(self.target) else ""

    def plan(self, state, notified):
        state = state.strip()
        if state == "absent":
            return Change("create", f"install -d -o {q(self.owner)} -g {q(self.group)} "
                                    f"-m {format(self.mode, 'o')} {q(self.target)}")
        kind = " ".join(state.split()[3:])        # stat's %F: "directory", "regular file", ...
        if kind and kind not in ("directory", "symbolic link"):
            # a file (or fifo, socket, device) where the directory belongs: never deleted silently, the
            # apply fails loudly until the user moves it away (a symlink is not judged here: it may point
            # at a directory on purpose)
            why = f"exists and is not a directory ({kind})"
            return Change(why, f"echo {q(f'{self.target} {why}: move it away')} >&2\nexit 1")
        cmds = _ownership(self.target, self.owner, self.group, self.mode, state)
        return Change("fix owner/mode", "\n".join(cmds)) if cmds else None


@dataclass
class File(Step):
    """A file with exact content, owner, group and mode, replaced atomically (temp file + rename)."""

    kind = "file"
    content: str | bytes = ""
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    notify: tuple = ()

    @property
    def data(self) -> bytes:
        return self.content.encode() if isinstance(self.content, str) else self.content

    def probe(self):
        return _stat_probe(self.target, checksum=True)

    def batch(self):
        return "stat" if _safe_path(self.target) else ""

    def plan(self, state, notified):
        lines = state.strip().splitlines() or ["absent"]
        want = hashlib.sha256(self.data).hexdigest()
        text = self.content if isinstance(self.content, str) else None
        # a symlink at the path is replaced by a regular file: `stat -c` (no -L) shows the link itself
        # (mode 777) while chown/chmod would change its target, so fixing owner/mode never converges; the
        # write's rename replaces the link itself (not its target) and the next run sees our regular file.
        # Not `stat -L`: it would manage a file outside our path (a package's, or shared by other links).
        link = lines[0].endswith(" symbolic link")
        if lines[0] == "absent" or link or lines[1:2] != [want]:
            desc = "create" if lines[0] == "absent" else "replace symlink" if link else "update content"
            return Change(desc, self.write_script(),
                          new_content=text if text is not None else "(binary)", notify=self.notify)
        cmds = _ownership(self.target, self.owner, self.group, self.mode, lines[0])
        return Change("fix owner/mode", "\n".join(cmds), notify=self.notify) if cmds else None

    def write_script(self) -> str:
        p = q(self.target)
        b64 = base64.encodebytes(self.data).decode()
        return (f"d=$(dirname {p}); mkdir -p \"$d\"; t=$(mktemp \"$d/.airflow-ha.XXXXXX\")\n"
                f"base64 -d > \"$t\" <<'__AIRFLOW_HA_EOF__'\n{b64}__AIRFLOW_HA_EOF__\n"
                f"chown {q(self.owner)}:{q(self.group)} \"$t\"; chmod {format(self.mode, 'o')} \"$t\"\n"
                f"mv -f \"$t\" {p}")


@dataclass
class Line(Step):
    """A line present in a file; lines matching `replace` (a regex) are removed first."""

    kind = "line"
    path: str = ""
    line: str = ""
    replace: str = ""
    notify: tuple = ()

    def probe(self):
        return f"grep -qxF -- {q(self.line)} {q(self.path)} 2>/dev/null && echo present || echo absent"

    def plan(self, state, notified):
        if state.strip() == "present":
            return None
        drop = f"sed -i -E {q('/' + self.replace.replace('/', chr(92) + '/') + '/d')} {q(self.path)}\n" \
            if self.replace else ""
        create = f"mkdir -p {q(posixpath.dirname(self.path))}\ntouch {q(self.path)}\n"  # before the package
        return Change(f"add line to {self.path}",
                      f"{create}{drop}printf '%s\\n' {q(self.line)} >> {q(self.path)}", notify=self.notify)


@dataclass
class Link(Step):
    """A symbolic link pointing at `source`."""

    kind = "link"
    source: str = ""
    notify: tuple = ()

    def probe(self):
        p = q(self.target)
        return f"readlink {p} || {{ [ -d {p} ] && echo directory; }} || echo absent"

    def plan(self, state, notified):
        if state.strip() == self.source:
            return None
        if state.strip() == "directory":
            # a real directory: `ln -sfn` would put the link inside it (and plan again forever); a
            # directory is never deleted silently, the apply fails loudly until the user moves it away
            msg = f"{self.target} exists and is a directory, not a symbolic link: move it away"
            return Change("exists and is a directory", f"echo {q(msg)} >&2\nexit 1")
        return Change(f"link to {self.source}", f"ln -sfn {q(self.source)} {q(self.target)}", notify=self.notify)


@dataclass
class Absent(Step):
    """A path that must not exist (removed when present)."""

    kind = "absent"
    notify: tuple = ()

    def probe(self):
        p = q(self.target)
        return f"if [ -e {p} ] || [ -L {p} ]; then echo present; else echo absent; fi"

    def plan(self, state, notified):
        if state.strip() == "absent":
            return None
        return Change("remove", f"rm -rf {q(self.target)}", notify=self.notify)


@dataclass
class Command(Step):
    """A command guarded by a state check: `unless` (shell) succeeding means there is nothing to do.

    `only_if_notified` runs it only when a step that notifies `target` changed (e.g. `nginx -t` + reload).
    `preview` lets --check show what the command would write (a file it owns, a directory it replaces).
    """

    kind = "command"
    script: str = ""
    unless: str = ""
    notify: tuple = ()
    only_if_notified: bool = False
    desc: str = ""
    preview: Preview | None = None
    restart: bool = False             # it restarts a running service: the runner rolls it, gated, like Service

    def probe(self):
        if not self.unless:
            return "echo run"
        return f"( {self.unless} ) >/dev/null 2>&1 && echo done || echo run"

    def plan(self, state, notified):
        if self.only_if_notified and self.target not in notified:
            return None
        if not self.only_if_notified and state.strip() == "done":
            return None
        return Change(self.desc or "run", self.script, notify=self.notify, preview=self.preview, restart=self.restart)


#: `is-active` states of a unit whose processes run (or are being started, reloaded or stopped): a restart
#: of it is rolled (one host at a time) like one of an active unit; a wrong "rolled" costs only time, a wrong
#: "first start" may restart every replica at once (e.g. "deactivating" is also the first half of a restart)
RUNNING = ("active", "activating", "reloading", "deactivating")
#: `is-enabled` states of a unit that cannot be enabled (no [Install] section, masked, generated, ...):
#: `systemctl disable` has nothing to remove, so an unwanted one is converged once it is stopped
CANNOT_ENABLE = ("static", "masked", "masked-runtime", "indirect", "generated", "transient")


@dataclass
class Service(Step):
    """A systemd unit enabled and running (or stopped and disabled when `present=False`).

    Restarts when a step that notifies it (by unit name) changed; a unit started in this run is not
    restarted again. Restarting (or reloading) a unit that runs now (RUNNING) sets `Change.restart` (a first
    start does not, nor does restarting a package's default instance onto our first `config`), so the
    runner restarts one host at a time; `downtime` says why that restart stops the service for everyone
    (no other replica), and --check shows it.
    """

    kind = "service"
    present: bool = True
    reload_only: bool = False   # `systemctl reload` instead of restart on notify (nginx)
    listen: tuple = ()          # other notification names that restart it (e.g. "airflow")
    downtime: str = ""          # e.g. "single database": a restart stops the service for the whole cluster
    config: str = ""            # our config file: absent when probed = the unit runs a package's defaults,
    #                             so its restart is a first start (not rolled, no downtime)

    @staticmethod
    def started(unit: str) -> str:
        """The notification a Service step sends when this run (re)starts `unit`: a step waiting for the unit
        to serve again (`Command(Service.started(unit), only_if_notified=True)`) runs only then."""
        return f"{unit}:started"

    def probe(self):
        u = q(self.target)
        ours = f"; [ -e {q(self.config)} ] && echo ours || echo fresh" if self.config else ""
        return (f"echo \"$(systemctl is-enabled {u} 2>/dev/null | head -1)\"; "
                f"echo \"$(systemctl is-active {u} 2>/dev/null | head -1)\"{ours}")

    def batch(self):
        return "systemd"

    def own_probe(self):
        return f"[ -e {q(self.config)} ] && echo ours || echo fresh" if self.config else ""

    def plan(self, state, notified):
        lines = [*state.splitlines(), "", "", ""][:3]
        enabled, active = lines[0].strip(), lines[1].strip()
        first = bool(self.config) and lines[2].strip() != "ours"
        u = q(self.target)
        running = active in RUNNING
        if not self.present:
            if enabled in ("", "not-found") or (enabled in ("disabled", *CANNOT_ENABLE) and not running):
                return None
            if enabled in CANNOT_ENABLE:
                return Change("stop", f"systemctl stop {u}")
            return Change("stop and disable", f"systemctl disable --now {u}")
        cmds, what = [], []
        if enabled not in ("enabled", "static", "alias", "indirect", "generated"):
            cmds.append(f"systemctl enable {u} 2>&1")
            what.append("enable")
        if self.target in notified or notified.intersection(self.listen):
            # restart even if the probe saw it stopped: a package installed earlier in this same apply may
            # have started it with its default config (restart starts a stopped unit)
            # onto our first config a reload is not enough: the package's default instance may hold other
            # listen sockets (nginx's *:80 blocks binding 127.0.0.1:80, and the reload then fails quietly)
            reload = self.reload_only and not first
            cmds.append(f"systemctl {'reload-or-restart' if reload else 'restart'} {u}")
            what.append(("reload" if reload else "restart") if running else "start")
        elif active != "active":
            cmds.append(f"systemctl start {u}")
            what.append("start")
        if not cmds:
            return None
        started = (Service.started(self.target),) if {"start", "restart"} & set(what) else ()
        restart = bool({"restart", "reload"} & set(what)) and not first
        downtime = self.downtime if restart else ""
        desc = " + ".join(what) + (f" (DOWNTIME: {downtime})" if downtime else "")
        return Change(desc, "\n".join(cmds), notify=started, restart=restart, downtime=downtime)


@dataclass
class Warn(Step):
    """Reports a known limitation as "warn" (no change), e.g. time sync inside a container."""

    kind = "warn"
    message: str = ""

    def probe(self):
        return "true"

    def plan(self, state, notified):
        return Change(self.message, "", warning=True)


# -- batches: one command answers the probes of many steps ------------------------------------------------
def _blocks(out: str) -> list[dict]:
    """`systemctl show` output: one dict per unit, in argument order (blocks split by blank lines)."""
    blocks, cur = [], {}
    for line in out.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
            cur = {}
        elif "=" in line:
            key, value = line.split("=", 1)
            cur[key] = value
    return blocks + ([cur] if cur else [])


class SystemdBatch:
    """Every unit's enabled and active state from ONE `systemctl show` (was 2 systemctl runs per unit).

    UnitFileState is what `is-enabled` prints (the same enum; systemd computes it from the unit files it
    last loaded), "not-found" when the unit does not exist; ActiveState is what `is-active` prints.
    """

    @staticmethod
    def script(steps) -> str:
        units = " ".join(q(s.target) for s in steps)
        return f"systemctl show --no-pager -p Id,LoadState,UnitFileState,ActiveState -- {units}"

    @staticmethod
    def states(out: str, steps) -> list | None:
        blocks = _blocks(out)
        if len(blocks) != len(steps) or not all("Id" in b for b in blocks):
            return None                      # not one block per unit: the runner probes them one by one
        out_states = []
        for b in blocks:
            enabled = b.get("UnitFileState") or ("not-found" if b.get("LoadState") == "not-found" else "")
            out_states.append(f"{enabled}\n{b.get('ActiveState', '')}\n")
        return out_states


class StatBatch:
    """Owner, group, mode and type of every File/Directory in ONE `stat`, file checksums in ONE `sha256sum`
    (was a test, `stat`, `sha256sum` and `cut` per file)."""

    @staticmethod
    def script(steps) -> str:
        paths = " ".join(dict.fromkeys(q(s.target) for s in steps))
        files = " ".join(dict.fromkeys(q(s.target) for s in steps if isinstance(s, File)))
        return (f"stat -c '%n|%U %G %a %F' -- {paths}; echo '@@sha256'"
                + (f"; sha256sum -- {files}" if files else ""))

    @staticmethod
    def states(out: str, steps) -> list | None:
        if "@@sha256" not in out:
            return None
        stat_part, sha_part = out.split("@@sha256", 1)
        stats = {}
        for line in stat_part.splitlines():
            if "|" in line:
                name, rest = line.rsplit("|", 1)
                stats[name] = rest
        sums = {}
        for line in sha_part.splitlines():
            digest, _, name = line.partition("  ")
            if len(digest) == SHA256_HEX and name:
                sums[name] = digest
        result = []
        for s in steps:
            if s.target not in stats:
                result.append("absent\n")
            elif isinstance(s, File):
                digest = sums.get(s.target)
                result.append(f"{stats[s.target]}\n" + (f"{digest}\n" if digest else ""))
            else:
                result.append(f"{stats[s.target]}\n")
        return result


class PackagesBatch:
    """Installed packages of every Packages step from ONE `dpkg-query` / `rpm -q` (each step's plan looks
    only for its own names in the shared answer)."""

    def __init__(self, manager: str):
        self.manager = manager

    def script(self, steps) -> str:
        names = sorted({n for s in steps for n in s.names})
        return Packages(names=tuple(names), manager=self.manager).probe()

    def states(self, out: str, steps) -> list | None:
        return [out] * len(steps)


#: batch kind -> what answers it: script(steps) (one command) and states(output, steps) (each step's
#: state as its own probe would print it, or None when the output cannot be read: probed one by one)
BATCHES = {"systemd": SystemdBatch, "stat": StatBatch,
           "packages-apt": PackagesBatch("apt"), "packages-dnf": PackagesBatch("dnf")}


def periodic_script(owner: str, unit: str, path: str, script: str, what: str, when: str,
                    timer: dict[str, str]) -> list:
    """A script that a systemd timer runs as a oneshot service: the script (0755), `<unit>.service`
    (Description `what`), `<unit>.timer` (Description `when`, the [Timer] lines of `timer` in order) and
    the enabled timer, last. `owner` names the module in the files' "Managed by" line."""
    head = f"# Managed by airflow-ha ({owner})\n[Unit]\n"
    service = f"{head}Description=airflow-ha: {what}\n\n[Service]\nType=oneshot\nExecStart={path}\n"
    lines = "".join(f"{k}={v}\n" for k, v in timer.items())
    timer_unit = f"{head}Description=airflow-ha: {when}\n\n[Timer]\n{lines}\n[Install]\nWantedBy=timers.target\n"
    return [File(path, script, mode=0o755),
            File(f"/etc/systemd/system/{unit}.service", service, notify=("daemon-reload",)),
            File(f"/etc/systemd/system/{unit}.timer", timer_unit, notify=("daemon-reload", f"{unit}.timer")),
            Service(f"{unit}.timer")]
