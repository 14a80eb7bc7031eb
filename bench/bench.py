"""Benchmarks on the lab (`inv bench`): every figure a ratio to the SSH floor measured in the same run.

The floor is what no tool can beat, measured two ways, each the median of `runs` runs:
* whole process (the reference for every ratio): a fresh `python` that imports the project's SSH layer
  (fabfile/core/remote.py, without the rest of the package), opens one SSH connection per host in
  parallel, runs `true` and exits, timed from outside;
* in process: the same connections and `true` from this (warm) process.
Figures: no-op `inv deploy -q` on 3 and 6 hosts (with checks and SSH round trips per host, from the
recap line), their 6/3 ratio, `inv health --json`, a fresh 3-host deploy (`lab.reset`; the wheelhouse on
the control machine is already built), a rolling config change touching every Airflow service
(`cluster.parallelism` toggled in a temporary inventory copy and back: two samples per run) and, with
`--readme`, README command 1 in a fresh clone (needs a bare machine). Targets (issue 18) are printed
PASS/MISS, never asserted. Results: bench/results/*.json; `python -m bench.bench rows [FILE]` prints the
README table rows of a results file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _inv() -> str:
    local = ROOT / ".venv" / "bin" / "inv"
    return str(local if local.exists() else Path(sys.executable).parent / "inv")


#: figure key -> (target label, limit, what is compared); PASS when the compared value <= limit
TARGETS = {
    "noop_3": ("no-op, 3 hosts <= 3x floor", 3.0, "ratio"),
    "noop_6": ("no-op, 6 hosts <= 3x floor", 3.0, "ratio"),
    "noop_6_3_ratio": ("no-op 6 hosts / 3 hosts <= 1.3", 1.3, "value"),
    "fresh_3": ("fresh deploy, 3 hosts <= 120 s", 120.0, "seconds"),
    "readme_1": ("README command 1 <= 240 s", 240.0, "seconds"),
    "rolling_3": ("rolling config change, 3 hosts <= 180 s", 180.0, "seconds"),
}

#: figure key -> label, in table order; every timed figure is also shown as a ratio to the floor
FIGURES = [
    ("floor_process_3", "floor: fresh process, SSH + true, 3 hosts"),
    ("floor_inproc_3", "floor: in process, SSH + true, 3 hosts"),
    ("noop_3", "no-op `inv deploy -q`, 3 hosts"),
    ("health_3", "`inv health --json`, 3 hosts"),
    ("fresh_3", "fresh deploy, 3 hosts (wheelhouse built)"),
    ("airflow_install", "Airflow install per host"),
    ("rolling_3", "rolling change of every Airflow service, 3 hosts"),
    ("readme_1", "README command 1 (bare machine)"),
    ("floor_process_6", "floor: fresh process, SSH + true, 6 hosts"),
    ("floor_inproc_6", "floor: in process, SSH + true, 6 hosts"),
    ("noop_6", "no-op `inv deploy -q`, 6 hosts"),
]

RECAP = re.compile(r"(\d+) host\(s\), (\d+) failed, (\d+) \w+(?: \w+)?, (\d+) SSH round trips(?:, (\d+) checks)?")

#: the whole-process floor: only the project's SSH layer is imported (not fabfile/__init__ and the rest)
FLOOR_SNIPPET = """
import sys, types
from concurrent.futures import ThreadPoolExecutor
root, cfg_path, names = sys.argv[1], sys.argv[2], sys.argv[3:]
for name, sub in (("fabfile", "fabfile"), ("fabfile.core", "fabfile/core")):
    mod = types.ModuleType(name)
    mod.__path__ = [root + "/" + sub]
    sys.modules[name] = mod
from fabfile.core.remote import Remote, load_ssh_config
cfg = load_ssh_config(cfg_path)
def one(name):
    r = Remote(name, cfg)
    r.open()
    assert r.sh("true").ok
    r.close()
with ThreadPoolExecutor(len(names)) as pool:
    list(pool.map(one, names))
"""


# -- pure helpers (unit-tested) --------------------------------------------------------------------------
def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def parse_recap(stdout: str) -> dict:
    """The runner's last line: hosts, failed, changed, SSH round trips and checks (steps probed)."""
    found = RECAP.findall(stdout)
    if not found:
        raise ValueError("no recap line in the output:\n" + stdout[-1000:])
    hosts, failed, changed, trips, checks = found[-1]
    return {"hosts": int(hosts), "failed": int(failed), "changed": int(changed), "round_trips": int(trips),
            "checks": int(checks) if checks else None}


def floor_of(key: str) -> str:
    """The whole-process floor a figure is compared with: same host count."""
    return "floor_process_6" if key.endswith("_6") else "floor_process_3"


def median(out: dict, key: str) -> float | None:
    v = out.get(key)
    return v["median"] if isinstance(v, dict) else v


def ratios(out: dict) -> dict:
    """Every timed figure / its whole-process floor, plus the 6/3 no-op ratio."""
    r = {}
    for key, _ in FIGURES:
        value, base = median(out, key), median(out, floor_of(key))
        if value is not None and base and key != "airflow_install":
            r[key] = value / base
    if median(out, "noop_3") and median(out, "noop_6"):
        r["noop_6_3_ratio"] = median(out, "noop_6") / median(out, "noop_3")
    if median(out, "floor_process_3") and median(out, "floor_process_6"):
        r["floor_6_3_ratio"] = median(out, "floor_process_6") / median(out, "floor_process_3")
    return r


def verdicts(out: dict) -> list[tuple[str, float, str]]:
    """(target, compared value, PASS/MISS) for each target whose figure was measured."""
    rows = []
    for key, (label, limit, what) in TARGETS.items():
        value = out["ratios"].get(key) if what in ("ratio", "value") else median(out, key)
        if value is not None:
            rows.append((label, value, "PASS" if value <= limit else "MISS"))
    return rows


def _fmt(out: dict, key: str) -> str:
    v = out[key]
    text = f"{v['median']:.2f} s ({v['min']:.2f}–{v['max']:.2f}, {len(v['runs'])} runs)"
    ratio = out["ratios"].get(key)
    return text + (f" = {ratio:.2f}× floor" if ratio is not None and not key.startswith("floor_process") else "")


def upgrade(out: dict) -> dict:
    """A results dict of an older bench (in-process floors only, other key names) in today's keys."""
    out = dict(out)
    for old, new in (("floor_3", "floor_inproc_3"), ("floor_6", "floor_inproc_6"),
                     ("noop_round_trips_per_host", "noop_round_trips_per_host_3")):
        if old in out and new not in out:
            out[new] = out.pop(old)
    out.setdefault("ratios", ratios(out))
    return out


def _per_host(out: dict, size: int) -> str:
    parts = []
    for what in ("checks", "round_trips"):
        v = median(out, f"noop_{what}_per_host_{size}")
        if v is not None:
            parts.append(f"{v:.0f} checks" if what == "checks" else f"{v:.1f} round trips")
    return "; " + ", ".join(parts) + " per host" if parts else ""


def readme_rows(out: dict) -> list[str]:
    """The README benchmark table rows (markdown) of one results dict."""
    rows = ["| figure | value |", "|---|---|"]
    for key, label in FIGURES:
        if key in out:
            extra = _per_host(out, 3 if key == "noop_3" else 6) if key in ("noop_3", "noop_6") else ""
            rows.append(f"| {label} | {_fmt(out, key)}{extra} |")
    for key, label in (("noop_6_3_ratio", "no-op 6 hosts / 3 hosts"), ("floor_6_3_ratio", "floor 6 / 3 hosts")):
        if key in out["ratios"]:
            rows.append(f"| {label} | {out['ratios'][key]:.2f} |")
    for label, value, verdict in verdicts(out):
        rows.append(f"| target: {label} | {value:.2f} — **{verdict}** |")
    return rows


def table(out: dict) -> str:
    m = out.get("machine", {})
    head = f"{out.get('date', '')}, {m.get('cores', '?')} cores, {m.get('mem_gb', '?')} GB; medians (min–max)"
    text = "\n".join([head, *readme_rows(out)])
    return text + (f"\n\n6-host run failed: {out['six_error']}" if "six_error" in out else "")


def readme_command(readme: Path = ROOT / "README.md", number: int = 1) -> str:
    """The shell line under `# (number)` in the README's first sh block."""
    lines = readme.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(f"# ({number})"):
            return lines[i + 1].strip()
    raise ValueError(f"README has no '# ({number})' command")


def toggled_inventory(text: str, secrets: str) -> tuple[str, int, int]:
    """(inventory text with cluster.parallelism changed, old value, new value); secrets pinned to the
    original inventory's file so the copy uses the cluster's keys."""
    import yaml

    from fabfile.airflow import AirflowSettings
    data = yaml.safe_load(text)
    cluster = data.setdefault("cluster", {})
    old = int(cluster.get("parallelism", AirflowSettings.parallelism))
    cluster["parallelism"] = old + 1
    cluster.setdefault("secrets", secrets)
    return yaml.safe_dump(data, sort_keys=False), old, old + 1


# -- measurements on the lab -------------------------------------------------------------------------------
def sh(*args, inventory=None, timeout=3600, env=None) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [_inv(), *args] + (["--inventory", str(inventory)] if inventory else [])
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})}, check=False)
    return time.monotonic() - t0, res


def floor_process(names: list[str], ssh_config: Path) -> float:
    """A fresh Python process: import the SSH layer, one connection per host in parallel, `true`, exit."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", FLOOR_SNIPPET, str(ROOT), str(ssh_config), *names],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return time.monotonic() - t0


def floor_inproc(names: list[str], ssh_config: Path) -> float:
    """The same connections from this (warm) process."""
    from fabfile.core.remote import Remote, load_ssh_config
    cfg = load_ssh_config(ssh_config)

    def one(name):
        r = Remote(name, cfg)
        r.open()
        r.sh("true")
        r.close()

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(one, names))
    return time.monotonic() - t0


def noop_and_floors(runs: int, names: list[str], ssh_config: Path, size: int, inventory=None) -> dict:
    """No-op deploys interleaved with both floors (paired in one session); per-host checks and trips."""
    for _ in range(3):                                 # converge first: the no-op must really be a no-op
        _, res = sh("deploy", "-q", inventory=inventory)
        if " 0 failed, 0 changed," in res.stdout:
            break
    times, procs, inprocs, trips, checks = [], [], [], [], []
    for _ in range(runs):
        procs.append(floor_process(names, ssh_config))
        inprocs.append(floor_inproc(names, ssh_config))
        secs, res = sh("deploy", "-q", inventory=inventory)
        recap = parse_recap(res.stdout)
        if res.returncode or recap["changed"]:
            raise RuntimeError(f"the no-op failed or changed {recap['changed']} things:\n" + res.stdout[-2000:])
        times.append(secs)
        trips.append(recap["round_trips"] / recap["hosts"])
        if recap["checks"] is not None:
            checks.append(recap["checks"] / recap["hosts"])
    out = {f"noop_{size}": stats(times), f"floor_process_{size}": stats(procs),
           f"floor_inproc_{size}": stats(inprocs),
           f"noop_round_trips_per_host_{size}": statistics.median(trips)}
    if checks:
        out[f"noop_checks_per_host_{size}"] = statistics.median(checks)
    return out


#: a timed step line of `inv deploy --verbose`: host, component, status, what, seconds
STEP_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(?:ok|changed|warn|failed)\s+(.*?)\s*\((\d+(?:\.\d+)?)s\)$", re.M)


def slowest_steps(stdout: str, count: int = 5) -> list[str]:
    """The `count` slowest steps of a verbose deploy, 'host component what (N s)': where an outlier went."""
    steps = sorted(STEP_LINE.findall(stdout), key=lambda m: -float(m[3]))[:count]
    return [f"{host} {component} {what[:80]} ({secs}s)" for host, component, what, secs in steps]


def fresh(runs: int) -> tuple[dict, dict | None]:
    """`runs` fresh deploys after `lab.reset`; each run's slowest steps are kept beside its time."""
    import lab as labapi
    times, installs, slowest = [], [], []
    for _ in range(runs):
        labapi.reset()
        secs, res = sh("deploy", "--verbose")
        if res.returncode:
            raise RuntimeError("fresh deploy failed:\n" + res.stdout[-3000:])
        times.append(secs)
        slowest.append(slowest_steps(res.stdout))
        installs += [float(secs) for _, _, what, secs in STEP_LINE.findall(res.stdout)
                     if what.startswith("command install:")]
    return {**stats(times), "slowest_steps": slowest}, (stats(installs) if installs else None)


def rolling(runs: int) -> dict:
    """`cluster.parallelism` changed (every Airflow service restarts, rolling) and back: 2 samples a run."""
    original = ROOT / "hosts.yaml"
    copy = ROOT / ".bench-rolling.yaml"      # beside hosts.yaml: every relative path resolves the same
    from fabfile.core.secrets import secrets_path
    text, _, _ = toggled_inventory(original.read_text(), str(secrets_path(original)))
    times = []
    try:
        copy.write_text(text)
        for _ in range(runs):
            for inventory in (copy, None):
                secs, res = sh("deploy", "-q", inventory=inventory)
                recap = parse_recap(res.stdout)
                if res.returncode or not recap["changed"]:
                    raise RuntimeError("rolling change failed or changed nothing:\n" + res.stdout[-2000:])
                times.append(secs)
    except BaseException:
        sh("deploy", "-q")                    # back to hosts.yaml, whatever happened
        raise
    finally:
        copy.unlink(missing_ok=True)
    return stats(times)


def readme_1() -> dict:
    """README command 1 verbatim in a fresh clone (its own venv and lab); the lab here is taken down first."""
    import lab as labapi
    command = readme_command()
    labapi.down()
    with tempfile.TemporaryDirectory(prefix="airflow-ha-readme-") as tmp:
        clone = Path(tmp) / "airflow-ha"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        t0 = time.monotonic()
        res = subprocess.run(["bash", "-c", command], cwd=clone, capture_output=True, text=True, timeout=3600, check=False)
        secs = time.monotonic() - t0
        subprocess.run([str(clone / ".venv/bin/inv"), "lab.down"], cwd=clone, capture_output=True, check=False)
    if res.returncode:
        raise RuntimeError("README command 1 failed:\n" + (res.stdout + res.stderr)[-3000:])
    return stats([secs])


def machine() -> dict:
    with open("/proc/meminfo") as fh:
        mem_kb = int(next(ln.split()[1] for ln in fh if ln.startswith("MemTotal")))
    versions = {}
    for mod in ("fabric", "invoke", "paramiko"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "?"
    return {"cores": os.cpu_count(), "mem_gb": round(mem_kb / 1024 / 1024, 1), "python": platform.python_version(),
            "kernel": platform.release(), **versions}


def run(runs: int = 7, fresh_runs: int = 3, six: bool = True, rolling_runs: int = 1, readme: bool = False) -> dict:
    import lab as labapi
    from lab import ssh_config_path
    names3 = ["node1", "node2", "node3"]
    labapi.up()
    out: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs}
    if fresh_runs:
        out["fresh_3"], install = fresh(fresh_runs)
        if install:
            out["airflow_install"] = install
    out.update(noop_and_floors(runs, names3, ssh_config_path(), 3))
    out["health_3"] = stats([sh("health", "--json")[0] for _ in range(runs)])
    if rolling_runs:
        out["rolling_3"] = rolling(rolling_runs)
    if six:
        inv6 = ROOT / "bench" / "hosts-6.yaml"
        labapi.up(nodes_count=6)
        try:
            out.update(noop_and_floors(runs, [f"node{i}" for i in range(1, 7)], ssh_config_path(), 6, inv6))
        except (RuntimeError, ValueError) as exc:   # keep the 3-host figures; say why 6 hosts has none
            out["six_error"] = str(exc)[:500]
        for name in ("node4", "node5", "node6"):
            labapi.stop_node(name)
        sh("deploy", "-q")                 # back to the 3-host cluster configuration
    if readme:
        out["readme_1"] = readme_1()
    out["ratios"] = ratios(out)
    out["verdicts"] = [{"target": t, "value": v, "result": r} for t, v, r in verdicts(out)]
    return out


def main(runs=7, fresh_runs=3, six=True, rolling_runs=1, readme=False) -> int:
    sys.path.insert(0, str(ROOT))
    out = run(runs, fresh_runs, six, rolling_runs, readme)
    print(table(out))
    fresh_3 = out.get("fresh_3") or {}
    for n, (secs, steps) in enumerate(zip(fresh_3.get("runs", []), fresh_3.get("slowest_steps", []), strict=True), 1):
        print(f"fresh deploy {n} ({secs:.1f} s), slowest steps: " + "; ".join(steps))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    (RESULTS / "latest.json").write_text(json.dumps(out, indent=1))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


def _cli(argv: list[str]) -> int:
    """`python -m bench.bench rows [FILE]`: README rows of a results file (default latest.json);
    `python -m bench.bench profile FILE`: where a profiled run's time went (see bench/profile.py)."""
    if argv[:1] == ["rows"]:
        out = upgrade(json.loads(Path(argv[1] if len(argv) > 1 else RESULTS / "latest.json").read_text()))
        print("\n".join(readme_rows(out)))
        return 0
    if argv[:1] == ["profile"] and len(argv) == 2:  # noqa: PLR2004 - profile FILE
        from bench.profile import summarize
        print(summarize(json.loads(Path(argv[1]).read_text())))
        return 0
    print(_cli.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
