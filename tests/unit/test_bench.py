"""`inv bench` arithmetic (no lab): the recap it parses, ratios to the floor, targets, README rows."""

from __future__ import annotations

import yaml

from bench import bench
from tests.unit.test_rolling import FakeComponent, deploy


def test_runner_recap_reports_checks_and_stays_parseable(capsys):
    """A converged no-op: one probe round trip per host, every step counted as a check."""
    log: list = []
    rc = deploy(log, [FakeComponent("services", "airflow-api-server")], changed=False)
    assert rc == 0
    recap = bench.parse_recap(capsys.readouterr().out)
    assert recap == {"hosts": 3, "failed": 0, "changed": 0, "round_trips": 3, "checks": 6}


def test_parse_recap_old_line_and_check_mode():
    old = "3 host(s), 0 failed, 0 changed, 10 SSH round trips, 2.5s\n"
    assert bench.parse_recap(old) == {"hosts": 3, "failed": 0, "changed": 0, "round_trips": 10, "checks": None}
    check = "x\n6 host(s), 1 failed, 4 would change, 12 SSH round trips, 380 checks, 3.0s\n"
    assert bench.parse_recap(check)["changed"] == 4 and bench.parse_recap(check)["checks"] == 380


def _out(**medians) -> dict:
    out = {k: bench.stats([v]) for k, v in medians.items()}
    out["ratios"] = bench.ratios(out)
    return out


def test_every_figure_is_a_ratio_to_the_whole_process_floor_of_its_size():
    out = _out(floor_process_3=0.5, floor_inproc_3=0.25, noop_3=1.5, health_3=1.0, fresh_3=100.0,
               rolling_3=150.0, floor_process_6=0.6, noop_6=2.4, airflow_install=20.0)
    r = out["ratios"]
    assert r["noop_3"] == 3.0 and r["health_3"] == 2.0 and r["fresh_3"] == 200.0 and r["floor_inproc_3"] == 0.5
    assert r["noop_6"] == 4.0 and abs(r["noop_6_3_ratio"] - 1.6) < 1e-9
    assert abs(r["floor_6_3_ratio"] - 1.2) < 1e-9 and "airflow_install" not in r
    verdicts = {label: result for label, _, result in bench.verdicts(out)}
    assert verdicts == {"no-op, 3 hosts <= 3x floor": "PASS", "no-op, 6 hosts <= 3x floor": "MISS",
                        "no-op 6 hosts / 3 hosts <= 1.3": "MISS", "fresh deploy, 3 hosts <= 120 s": "PASS",
                        "rolling config change, 3 hosts <= 180 s": "PASS"}


def test_readme_rows_show_seconds_ratio_and_per_host_counts():
    out = _out(floor_process_3=0.5, noop_3=1.5)
    out.update(noop_checks_per_host_3=64, noop_round_trips_per_host_3=3.3)
    rows = bench.readme_rows(out)
    assert rows[:2] == ["| figure | value |", "|---|---|"]
    assert "| no-op `inv deploy -q`, 3 hosts | 1.50 s (1.50–1.50, 1 runs) = 3.00× floor; 64 checks, " \
           "3.3 round trips per host |" in rows
    assert any(r.startswith("| target: no-op, 3 hosts <= 3x floor | 3.00 — **PASS**") for r in rows)


def test_readme_command_1_is_read_from_the_readme():
    assert bench.readme_command().endswith("inv lab.up deploy health")


def test_toggled_inventory_changes_parallelism_and_pins_the_secrets():
    text, old, new = bench.toggled_inventory("cluster:\n  name: airflow\nhosts:\n  node1: {roles: [worker]}\n",
                                             "/repo/.secrets/hosts.yaml")
    data = yaml.safe_load(text)
    assert (old, new) == (32, 33)
    assert data["cluster"] == {"name": "airflow", "parallelism": 33, "secrets": "/repo/.secrets/hosts.yaml"}
    assert data["hosts"] == {"node1": {"roles": ["worker"]}}


def test_floor_snippet_imports_only_the_ssh_layer():
    """The floor process must not pay for the rest of the package (fabfile/__init__ and components)."""
    import subprocess
    import sys
    code = bench.FLOOR_SNIPPET.split("cfg = ")[0] + "print(sorted(m for m in sys.modules if m.startswith('fabfile')))"
    res = subprocess.run([sys.executable, "-c", code, str(bench.ROOT), "/dev/null"], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(["fabfile", "fabfile.core", "fabfile.core.errors", "fabfile.core.profile",
                                      "fabfile.core.remote"])


def test_slowest_steps_of_a_verbose_deploy():
    """A fresh run keeps its slowest steps, so an outlier says where its time went."""
    out = "\n".join([
        "node1      packages   changed      packages os packages: install redis-server nginx (44.2s)",
        "node1      packages   changed      line /etc/hosts node1: add line to /etc/hosts (0.0s)",
        "node2      airflow    changed      command install: uv from the wheelhouse (9.5s)",
        "node3      packages   failed       packages os packages: apt-get update (150s)",
        "cluster    health     ok           every check passes",
        "3 host(s), 0 failed, 238 changed, 98 SSH round trips, 598 checks, 109.5s",
    ])
    assert bench.slowest_steps(out, count=3) == [
        "node3 packages packages os packages: apt-get update (150s)",
        "node1 packages packages os packages: install redis-server nginx (44.2s)",
        "node2 airflow command install: uv from the wheelhouse (9.5s)",
    ]
