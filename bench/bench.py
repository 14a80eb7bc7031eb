"""Benchmarks on the lab: deploy, no-op re-deploy, health and the physical floor (`inv bench`).

Every figure is the median of `runs` runs with min–max. The floor is what no tool can beat: fresh SSH
connections running `true` on every host in parallel. Results are printed as one table (with targets
PASS/MISS, never asserted) and written as JSON under bench/results/ with the machine's cores, memory
and tool versions. Commands are run exactly as a user runs them (`.venv/bin/inv ...`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
INV = str(ROOT / ".venv/bin/inv")
RESULTS = ROOT / "bench" / "results"

#: target name -> (figure key, limit, unit); PASS when figure <= limit
TARGETS = {
    "no-op re-deploy, 3 hosts <= 3 s": ("noop_3", 3.0),
    "no-op / floor <= 4x (stretch)": ("noop_floor_ratio", 4.0),
    "SSH round trips per host in a no-op <= 15": ("noop_round_trips_per_host", 15),
    "6-host / 3-host no-op ratio <= 1.3": ("noop_6_3_ratio", 1.3),
    "inv health <= 3 s": ("health_3", 3.0),
    "fresh deploy, 3 hosts <= 300 s": ("fresh_3", 300.0),
    "Airflow install per node <= 30 s": ("airflow_install", 30.0),
}


def sh(*args, inventory=None, timeout=3600) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [INV, *args] + (["--inventory", str(inventory)] if inventory else [])
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return time.monotonic() - t0, res


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def floor(names: list[str], ssh_config: Path) -> float:
    """Fresh connections running `true` on every host in parallel (the physical floor)."""
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


def noop(runs: int, inventory=None) -> tuple[dict, dict]:
    times, trips = [], []
    for _ in range(3):                                 # converge first: the no-op must really be a no-op
        _, res = sh("deploy", "-q", inventory=inventory)
        if re.search(r", 0 failed, 0 changed,", res.stdout):
            break
    for _ in range(runs):
        secs, res = sh("deploy", "-q", inventory=inventory)
        if res.returncode:
            raise RuntimeError("no-op deploy failed:\n" + res.stdout[-2000:])
        m = re.search(r"(\d+) host\(s\), \d+ failed, (\d+) changed, (\d+) SSH round trips", res.stdout)
        if int(m.group(2)):
            raise RuntimeError(f"the no-op changed {m.group(2)} things:\n" + res.stdout[-2000:])
        times.append(secs)
        trips.append(int(m.group(3)) / int(m.group(1)))
    return stats(times), stats(trips)


def fresh(runs: int) -> tuple[dict, dict]:
    import lab as labapi
    times, installs = [], []
    for _ in range(runs):
        labapi.reset()
        secs, res = sh("deploy", "--verbose")
        if res.returncode:
            raise RuntimeError("fresh deploy failed:\n" + res.stdout[-3000:])
        times.append(secs)
        installs += [float(x) for x in re.findall(r"command install: .*\((\d+\.\d)s\)", res.stdout)]
    return stats(times), stats(installs)


def machine() -> dict:
    mem_kb = int(next(ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")))
    versions = {}
    for mod in ("fabric", "invoke", "paramiko"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = "?"
    return {"cores": os.cpu_count(), "mem_gb": round(mem_kb / 1024 / 1024, 1), "python": platform.python_version(),
            "kernel": platform.release(), **versions}


def run(runs: int = 3, fresh_runs: int = 3, six: bool = True) -> dict:
    import lab as labapi
    from lab import ssh_config_path
    names3 = ["node1", "node2", "node3"]
    labapi.up()
    out: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if fresh_runs:
        out["fresh_3"], out["airflow_install"] = fresh(fresh_runs)
    out["noop_3"], out["noop_round_trips_per_host"] = noop(runs)
    out["floor_3"] = stats([floor(names3, ssh_config_path()) for _ in range(runs)])
    out["health_3"] = stats([sh("health", "--json")[0] for _ in range(runs)])
    if six:
        inv6 = ROOT / "bench" / "hosts-6.yaml"
        labapi.up(nodes_count=6)
        try:
            out["noop_6"], out["noop_round_trips_per_host_6"] = noop(runs, inventory=inv6)
            out["floor_6"] = stats([floor([f"node{i}" for i in range(1, 7)], ssh_config_path()) for _ in range(runs)])
            out["noop_6_3_ratio"] = out["noop_6"]["median"] / out["noop_3"]["median"]
        except RuntimeError as exc:          # keep the 3-host figures; say why 6 hosts has none
            out["six_error"] = str(exc)[:500]
        for name in ("node4", "node5", "node6"):
            labapi.stop_node(name)
        sh("deploy", "-q")                 # back to the 3-host cluster configuration
    out["noop_floor_ratio"] = out["noop_3"]["median"] / out["floor_3"]["median"]
    out["health_floor_ratio"] = out["health_3"]["median"] / out["floor_3"]["median"]
    return out


def table(out: dict) -> str:
    rows = []
    labels = [("fresh deploy, 3 hosts (from lab.reset)", "fresh_3", "s"),
              ("Airflow install per node", "airflow_install", "s"),
              ("no-op re-deploy, 3 hosts", "noop_3", "s"),
              ("SSH round trips per host (no-op)", "noop_round_trips_per_host", ""),
              ("inv health, 3 hosts", "health_3", "s"),
              ("floor: fresh SSH + true, 3 hosts", "floor_3", "s"),
              ("no-op re-deploy, 6 hosts", "noop_6", "s"),
              ("floor, 6 hosts", "floor_6", "s")]
    for label, key, unit in labels:
        if key in out:
            v = out[key]
            rows.append([label, f"{v['median']:.2f}{unit}", f"{v['min']:.2f}–{v['max']:.2f}", len(v["runs"])])
    for label, key in (("no-op / floor", "noop_floor_ratio"), ("health / floor", "health_floor_ratio"),
                       ("no-op 6 / 3 hosts", "noop_6_3_ratio")):
        if key in out:
            rows.append([label, f"{out[key]:.2f}x", "", ""])
    text = tabulate(rows, headers=["figure (median)", "value", "min–max", "runs"])
    checks = []
    for target, (key, limit) in TARGETS.items():
        if key in out:
            value = out[key]["median"] if isinstance(out[key], dict) else out[key]
            checks.append([target, f"{value:.2f}", "PASS" if value <= limit else "MISS"])
    text += "\n\n" + tabulate(checks, headers=["target", "measured", "result"])
    return text + (f"\n\n6-host run failed: {out['six_error']}" if "six_error" in out else "")


def main(runs=3, fresh_runs=3, six=True) -> int:
    sys.path.insert(0, str(ROOT))
    out = run(runs, fresh_runs, six)
    print(table(out))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    (RESULTS / "latest.json").write_text(json.dumps(out, indent=1))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0
