"""What can be measured without the lab: start-up time of checkouts, and the processes a no-op probe starts.

    python -m bench.startup times [--runs 21] DIR [DIR...]   # e.g. DIRs made with `git archive REV | tar -x -C DIR`
    python -m bench.startup probes                          # tools each spec host's probe script runs

`times` runs each command in each checkout in turn (interleaved, so load drifts hit all alike) and prints
min / median of wall and CPU (user+sys, from getrusage) seconds. `inv deploy` goes to 3 hosts that refuse
connections (127.0.0.1 port 1): start-up, inventory, local artifacts and recap, no SSH.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLAN = ("from pathlib import Path; from fabfile.components import COMPONENTS, load_inventory; "
        "from fabfile.core.offline import plan_offline; plan_offline(load_inventory(Path('tests/spec/hosts.yaml')), "
        "Path('tests/spec/os-release/debian-12').read_text(), COMPONENTS)")
#: tool -> what a run of it looks like in a probe script (ufw: its rule strings are not runs)
TOOLS = {t: rf"(?<![\w/-]){t}(?![\w-])" for t in ("systemctl", "stat", "sha256sum", "cut", "head", "dpkg-query",
                                                  "psql", "redis-cli", "getent", "grep")}
TOOLS["ufw"] = r"\bufw (?:status|show)\b"


def _unreachable_inventory(tmp: Path) -> Path:
    (tmp / "ssh_config").write_text("Host *\n  HostName 127.0.0.1\n  Port 1\n  User root\n  StrictHostKeyChecking no\n")
    text = (ROOT / "hosts.yaml").read_text().replace(
        "cluster:\n", f"cluster:\n  ssh_config: ssh_config\n  dags_dir: {ROOT / 'files' / 'dags'}\n", 1)
    (tmp / "hosts.yaml").write_text(text)
    return tmp / "hosts.yaml"


def times(dirs: list[str], runs: int = 21) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        inv = _unreachable_inventory(Path(tmp))
        cmds = {"python -c 'import tasks'": [str(BIN / "python"), "-c", "import tasks"],
                "inv --list": [str(BIN / "inv"), "--list"],
                "inv deploy -q, 3 unreachable hosts": [str(BIN / "inv"), "deploy", "-q", "--inventory", str(inv)],
                "import + offline plan, 3 hosts": [str(BIN / "python"), "-c", PLAN]}
        res: dict = {(c, d): ([], []) for c in cmds for d in dirs}
        for _ in range(runs):
            for c, cmd in cmds.items():
                for d in dirs:
                    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
                    subprocess.run(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                    t1, r1 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
                    res[(c, d)][0].append(t1 - t0)
                    res[(c, d)][1].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    lines = [f"{runs} interleaved runs; seconds, min / median; load {os.getloadavg()[0]:.1f}"]
    for c in cmds:
        for d in dirs:
            w, u = res[(c, d)]
            lines.append(f"  {c:<36} {d:<28} wall {min(w):.3f} / {statistics.median(w):.3f}   "
                         f"cpu {min(u):.3f} / {statistics.median(u):.3f}")
    return "\n".join(lines)


def probes() -> str:
    """Per spec host (Debian 12): the steps of a full deploy and how often each tool appears in its probe script."""
    import re

    from fabfile.components import COMPONENTS, load_inventory
    from fabfile.core.offline import fresh_run
    from fabfile.core.protocol import probe_script
    inv = load_inventory(ROOT / "tests" / "spec" / "hosts.yaml")
    osr = (ROOT / "tests" / "spec" / "os-release" / "debian-12").read_text()
    run = fresh_run(inv, osr)
    lines = []
    for name, host in inv.hosts.items():
        ctx = run.context(host)
        steps = [s for c in COMPONENTS if c.applies(inv, host) for s in c.steps(ctx)]
        script = re.sub(r"^echo '@@[^']*'$", "", probe_script(steps), flags=re.M)
        counts = {t: len(re.findall(pattern, script)) for t, pattern in TOOLS.items()}
        lines.append(f"{name}: {len(steps)} steps, {len(script)} bytes; " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["probes"]:
        print(probes())
    elif args[:1] == ["times"] and len(args) > 1:
        runs = int(args[args.index("--runs") + 1]) if "--runs" in args else 21
        print(times([a for i, a in enumerate(args[1:], 1) if a != "--runs" and args[i - 1] != "--runs"], runs))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
