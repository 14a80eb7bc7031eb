"""Rolling restarts by default (issue 13): the real runner (`execute`) against fake hosts, no SSH.

Each fake host answers the runner's probe scripts (a File that differs notifies a Service; the Service is
running or not), its apply scripts (every step succeeds) and the Sentinel/Redis questions of fabfile/redis.py,
and logs what it was asked, in order, with the gate calls: the log is the order of events on the cluster.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path

import pytest

from fabfile import postgres, redis, services
from fabfile.components import load_inventory
from fabfile.core.component import Component
from fabfile.core.offline import FreshHosts, facts_text, fresh_run
from fabfile.core.protocol import ShellHost
from fabfile.core.remote import Result
from fabfile.core.runner import Options, Run, execute
from fabfile.core.steps import Command, File, Service

SPEC = Path(__file__).resolve().parents[1] / "spec"
DEBIAN = (SPEC / "os-release" / "debian-12").read_text()
RUNNING, STOPPED = "enabled\nactive\n", "\n\n"
NEW_SHA = hashlib.sha256(b"new\n").hexdigest()      # every fake config file's desired content is "new\n"
ADDR = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}


class FakeHost(ShellHost):
    """One host: `service` is what its units' probes answer; `changed` makes its files differ."""

    def __init__(self, name, log, service=RUNNING, changed=True, barrier=None):
        self.name, self.log, self.service, self.changed, self.barrier = name, log, service, changed, barrier
        self.round_trips = 0
        self.master = ADDR["node1"]

    def close(self):
        pass

    def gather(self, questions):
        """Debian facts, no connect answers (and, as in the tests' counts, no round trip)."""
        return facts_text(DEBIAN, self.name), {}

    def sh(self, script, timeout=0):
        self.round_trips += 1
        return Result(0, self._answer(script), "")

    def _answer(self, script):
        if "@@probe" in script or "@@batch" in script:
            self.log.append(("probe", self.name))
            blocks = re.split(r"^echo '(@@(?:probe|batch) \S+)'\n", script, flags=re.M)[1:]
            return "".join(f"{m}\n{self._state(b)}" for m, b in zip(blocks[::2], blocks[1::2], strict=True))
        if "@@begin" in script:
            self.log.append(("apply", self.name))
            if self.barrier:
                self.barrier.wait(timeout=5)     # BrokenBarrierError unless every host applies at once
            return "".join(f"@@begin {i}\n@@end {i} 0 1\n" for i in re.findall(r"@@begin (\d+)", script))
        if "SENTINEL FAILOVER" in script:
            self.log.append(("failover", self.name))
            for host in HOSTS.values():
                host.master = ADDR["node2"]
            return "OK\n"
        if "get-master-addr-by-name" in script:
            return f"{self.master} 6379 \n"
        if "CKQUORUM" in script:
            return "@@redis\nrole:slave\nmaster_link_status:up\n@@sentinel\nOK 3 usable Sentinels\n"
        return ""

    def _state(self, probe):
        if "is-enabled" in probe:
            return self.service
        if probe.startswith("{ systemctl show"):       # the systemd batch: one block per unit
            enabled, active = [*self.service.splitlines(), "", ""][:2]
            units = probe.split(" -- ", 1)[1].split("\n")[0].split()
            return "\n".join(f"Id={u}.service\nUnitFileState={enabled}\nActiveState={active}\n" for u in units)
        if probe.startswith("{ stat -c"):              # the stat batch: present files have the new content
            paths = probe.split(" -- ", 1)[1].split(";")[0].split()
            if self.changed:
                return "@@sha256\n"
            return "".join(f"{p}|root root 644 regular file\n" for p in paths) + "@@sha256\n" + \
                "".join(f"{NEW_SHA}  {p}\n" for p in paths)
        return "absent\n" if self.changed else f"root root 644 regular file\n{NEW_SHA}\n"


HOSTS: dict[str, FakeHost] = {}


class FakeHosts(FreshHosts):
    """The state source of these tests: placeholder secrets, inventory addresses, the fake hosts above."""

    def connect(self, name, timeout):
        return HOSTS[name]


class FakeRun(Run):
    """The real Run over the fake hosts (for tests that call its parts, not execute())."""

    def __init__(self, inv, hosts, opts=None, source=None):
        super().__init__(inv, hosts, opts or Options(), FakeHosts(DEBIAN))


class FakeComponent(Component):
    """A component like fabfile's: a config file that notifies its unit, the unit, an optional gate."""

    def __init__(self, name, unit, roles=(), gate_log=None, failing=(), **service):
        self.name, self.unit, self.host_roles, self.service = name, unit, roles, service
        if gate_log is not None:
            def gate(run, host):
                gate_log.append(("gate", host.name))
                return "not answering" if host.name in failing else None
            self.gate = gate

    def applies(self, inv, host):
        return not self.host_roles or host.has(*self.host_roles)

    def steps(self, ctx):
        return [File(f"/etc/{self.name}.conf", "new\n", notify=(self.unit,)), Service(self.unit, **self.service)]


class FakeRedis(FakeComponent):
    """fabfile/redis.py's rolling hooks (prepare, roll_order, before_restart, gate) on simple steps."""

    prepare = staticmethod(redis.prepare)
    roll_order = staticmethod(redis.roll_order)
    before_restart = staticmethod(redis.before_restart)

    def __init__(self, log):
        super().__init__("redis", "redis-server", roles=("redis",))
        self.gate = lambda run, host: log.append(("gate", host.name)) or redis.gate(run, host)


@pytest.fixture
def log():
    return []


def deploy(log, components, check=False, serial=0, **hosts_kw):
    inv = load_inventory(SPEC / "hosts.yaml")
    HOSTS.clear()
    HOSTS.update({n: FakeHost(n, log, **hosts_kw) for n in inv.hosts})
    opts = Options(check=check, serial=serial, gate_timeout=0.3, gate_interval=0.01)
    return execute(inv, list(inv.hosts.values()), components, opts, source=FakeHosts(DEBIAN))


def after_probes(log):
    return [e for e in log if e[0] != "probe"]


def test_restarts_of_running_units_roll_one_host_at_a_time(log, capsys):
    rc = deploy(log, [FakeComponent("services", "airflow-api-server", gate_log=log)])
    assert rc == 0
    assert after_probes(log) == [("apply", "node1"), ("gate", "node1"), ("apply", "node2"), ("gate", "node2"),
                                 ("apply", "node3"), ("gate", "node3")]
    out = capsys.readouterr().out
    assert "restarts one host at a time: node1 -> node2 -> node3" in out
    assert "node2      services   restart airflow-api-server (rolling 2/3)" in out


def test_first_starts_are_applied_in_parallel_without_gate(log):
    barrier = threading.Barrier(3)
    rc = deploy(log, [FakeComponent("services", "airflow-api-server", gate_log=log)], service=STOPPED, barrier=barrier)
    assert rc == 0 and not barrier.broken
    assert sorted(after_probes(log)) == [("apply", "node1"), ("apply", "node2"), ("apply", "node3")]


def test_package_started_units_get_their_first_config_in_parallel(log):
    """Fresh deploy: apt started redis/nginx/postgres with defaults; moving them onto our config is no roll."""
    barrier = threading.Barrier(3)
    rc = deploy(log, [FakeComponent("redis", "redis-server", gate_log=log, config="/etc/redis/airflow-ha.conf")],
                barrier=barrier)     # the probe says "active", and no "ours": our config is not there yet
    assert rc == 0 and not barrier.broken
    assert sorted(after_probes(log)) == [("apply", "node1"), ("apply", "node2"), ("apply", "node3")]


def test_failing_gate_stops_the_roll_and_leaves_later_hosts_untouched(log, capsys):
    rc = deploy(log, [FakeComponent("services", "airflow-api-server", gate_log=log, failing=("node2",)),
                      FakeComponent("nginx", "nginx", gate_log=log)])
    assert rc == 1
    events = after_probes(log)
    assert events[:3] == [("apply", "node1"), ("gate", "node1"), ("apply", "node2")]
    assert set(events[3:6]) == {("gate", "node2")}, "polled until gate_timeout"
    assert ("apply", "node3") in events and events.index(("apply", "node3")) > events.index(("apply", "node1"), 3)
    services_applies = [e for e in events[:events.index(("apply", "node1"), 3)] if e[0] == "apply"]
    assert ("apply", "node3") not in services_applies, "the roll stopped before node3"
    out = capsys.readouterr().out
    assert "node2      services   failed       host: not healthy" in out
    assert "node3      services   warn         rolling restart: skipped, 2 change(s) not applied " \
           "(roll stopped at node2: not answering)" in out
    # the next component still rolls over the hosts that did not fail (node2 is skipped from then on)
    assert ("apply", "node2") not in events[events.index(("apply", "node1"), 3):]


def test_redis_master_is_failed_over_and_restarted_last(log):
    rc = deploy(log, [FakeRedis(log)])
    assert rc == 0
    assert after_probes(log) == [("apply", "node2"), ("gate", "node2"), ("apply", "node3"), ("gate", "node3"),
                                 ("failover", "node1"), ("apply", "node1"), ("gate", "node1")]


def test_check_lists_restarts_in_order_and_marks_downtime(log, capsys):
    comps = [FakeRedis(log), FakeComponent("postgres", "postgresql", roles=("postgres",), gate_log=log,
                                       downtime="single database"),
             FakeComponent("services", "airflow-api-server", roles=("api_server",), gate_log=log),
             FakeComponent("nginx", "nginx", roles=("nginx",), gate_log=log, reload_only=True)]
    deploy(log, comps, check=True)
    assert all(e[0] == "probe" for e in log), "--check applies nothing, calls no gate, fails nothing over"
    out = capsys.readouterr().out
    listed = out[out.index("restarts (in this order):"):].splitlines()[1:11]
    assert [" ".join(line.split()) for line in listed] == [
        "node2 redis restart redis-server (rolling 1/3)",
        "node3 redis restart redis-server (rolling 2/3)",
        "node1 redis SENTINEL FAILOVER airflow: a replica takes over before the old master restarts",
        "node1 redis restart redis-server (rolling 3/3)",
        "node3 postgres restart postgresql (DOWNTIME: single database)",
        "node1 services restart airflow-api-server (rolling 1/2)",
        "node2 services restart airflow-api-server (rolling 2/2)",
        "node1 nginx reload nginx (rolling 1/3)",
        "node2 nginx reload nginx (rolling 2/3)",
        "node3 nginx reload nginx (rolling 3/3)",
    ]
    assert "would change service postgresql: restart (DOWNTIME: single database)" in out


def test_converged_cluster_costs_one_probe_round_trip_per_host(log):
    comps = [FakeComponent("services", "airflow-api-server", gate_log=log), FakeComponent("nginx", "nginx", gate_log=log)]
    assert deploy(log, comps, changed=False) == 0
    assert sorted(log) == [("probe", "node1"), ("probe", "node2"), ("probe", "node3")]
    assert {h.round_trips for h in HOSTS.values()} == {1}


def test_serial_batches_still_work_and_roll_inside_each_batch(log):
    rc = deploy(log, [FakeComponent("services", "airflow-api-server", gate_log=log)], serial=2)
    assert rc == 0
    assert after_probes(log) == [("apply", "node1"), ("gate", "node1"), ("apply", "node2"), ("gate", "node2"),
                                 ("apply", "node3"), ("gate", "node3")]
    assert log.index(("probe", "node3")) > log.index(("gate", "node2")), "node3 is planned in the second batch"


def test_services_gate_verdict():
    ok = "@@unit airflow-api-server active 42\n@@unit airflow-worker active 11\n@@api 200\n@@ready 1\n"
    assert services.gate_verdict(ok) is None
    bad = "@@unit airflow-scheduler activating 0\n@@unit airflow-worker active 3\n@@api 502\n@@ready 0\n"
    assert services.gate_verdict(bad) == ("airflow-scheduler activating; airflow-worker active for 3s only (< 10s); "
                                          "api-server health: HTTP 502; celery worker not ready")


def test_redis_gate_verdict():
    up = "@@redis\nrole:slave\nmaster_link_status:up\n@@sentinel\nOK 3 usable Sentinels\n"
    assert redis.gate_verdict(up, is_master=False) is None
    assert redis.gate_verdict("@@redis\nrole:master\n", is_master=True) is None
    assert "acts as master" in redis.gate_verdict("@@redis\nrole:master\n", is_master=False)
    assert redis.gate_verdict("@@redis\nrole:slave\nmaster_link_status:down\n@@sentinel\nNOQUORUM 1 usable\n",
                              is_master=False) == "redis replica link down; sentinel: NOQUORUM 1 usable"


def test_postgres_restart_is_marked_as_downtime():
    [service] = [s for s in _postgres_steps() if isinstance(s, Service)]
    assert service.plan(RUNNING + "ours\n", {"postgresql"}).desc == "restart (DOWNTIME: single database)"
    assert service.plan(RUNNING + "fresh\n", {"postgresql"}).desc == "restart", "apt's instance: no downtime"


def _postgres_steps():
    inv = load_inventory(SPEC / "hosts.yaml")
    return postgres.steps(fresh_run(inv, DEBIAN).context(inv.hosts["node3"]))


def test_failed_failover_leaves_the_master_untouched(log, capsys, monkeypatch):
    monkeypatch.setattr(redis, "failover", lambda run: "sentinels did not agree")
    assert deploy(log, [FakeRedis(log)]) == 1
    assert ("apply", "node1") not in log and log[-1] == ("gate", "node3")
    assert "node1      redis      failed       host: not restarted: sentinels did not agree" in capsys.readouterr().out


class FakeApiServers(FakeComponent):
    """fabfile/services.py's drain hooks around an api-server restart, the drains logged."""

    def __init__(self, log):
        super().__init__("services", "airflow-api-server", roles=("api_server",), gate_log=log)
        self.before_restart, self.after_restart = services.before_restart, services.after_restart

    @staticmethod
    def drained(log):
        return lambda run, host, drained: log.append(("drain" if drained else "undrain", host.name))


def test_an_api_server_is_drained_before_its_restart_and_taken_back_after_its_gate(log, monkeypatch):
    from fabfile import nginx
    monkeypatch.setattr(nginx, "set_drained", FakeApiServers.drained(log))
    assert deploy(log, [FakeApiServers(log)]) == 0
    events = [e for e in log if e[0] in ("drain", "apply", "gate", "undrain")]
    assert events == [(e, n) for n in ("node1", "node2") for e in ("drain", "apply", "gate", "undrain")]


def test_drain_script_marks_one_server_down_and_back(tmp_path):
    """The script run on every nginx host: only the named server line changes, and nginx is tested and
    reloaded only when the file changed."""
    import subprocess

    from fabfile import nginx
    site = tmp_path / "site.conf"
    text = ("upstream airflow_api {\n    server 10.0.0.1:8080 max_fails=2 fail_timeout=10s;  # node1\n"
            "    server 10.0.0.11:8080 max_fails=2 fail_timeout=10s;  # node11\n}\n")
    site.write_text(text)
    (tmp_path / "nginx").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\n")
    (tmp_path / "nginx").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}

    def run(drained):
        script = nginx.drain_script(str(site), "10.0.0.1:8080", drained).replace("sleep 1", "true")
        subprocess.run(["sh", "-ec", script], check=True, env=env)
    run(True)
    assert site.read_text() == text.replace("10.0.0.1:8080 max", "10.0.0.1:8080 down max")
    run(True)                                  # already drained: no second reload
    run(False)
    assert site.read_text() == text
    assert (tmp_path / "calls").read_text().splitlines() == ["-t -q", "-s reload"] * 2


def test_sentinels_are_asked_in_parallel_and_answers_keep_inventory_order(log):
    inv = load_inventory(SPEC / "hosts.yaml")
    barrier = threading.Barrier(len(inv.with_role("sentinel")))

    class Waiting(FakeHost):
        def sh(self, script, timeout=0):
            barrier.wait(timeout=5)          # BrokenBarrierError unless every Sentinel is asked at once
            return super().sh(script, timeout)

    HOSTS.clear()
    HOSTS.update({n: Waiting(n, log) for n in inv.hosts})
    run = FakeRun(inv, list(inv.hosts.values()), Options())
    views = redis.sentinel_views(run)
    assert list(views) == [h.name for h in inv.with_role("sentinel")] and set(views.values()) == {ADDR["node1"]}


def test_sentinels_answer_with_the_facts_and_the_first_prepare_uses_it(log):
    """connect asks each Sentinel host in the facts round trip; prepare uses that once, then asks again."""
    inv = load_inventory(SPEC / "hosts.yaml")
    asked: list = []

    class WithFacts(FakeHost):
        gather = ShellHost.gather

        def sh(self, script, timeout=0):
            if "@@facts" in script:
                self.round_trips += 1
                extra = f"@@connect redis\n{ADDR['node2']} 6379 \n" if "@@connect redis" in script else ""
                return Result(0, f"{DEBIAN.rstrip()}\n@@facts\nuid=0\nhostname={self.name}\n{extra}", "")
            asked.append(self.name)
            return super().sh(script, timeout)

    HOSTS.clear()
    HOSTS.update({n: WithFacts(n, log) for n in inv.hosts})
    run = FakeRun(inv, list(inv.hosts.values()), Options())
    run.connect_probes = {"redis": redis.connect_probe}
    run.connect()
    assert run.facts["node1"].hostname == "node1" and run.facts["node1"].platform.name
    assert set(run.answers["redis"]) == {h.name for h in inv.with_role("sentinel")}
    redis.prepare(run, list(inv.hosts.values()))
    assert run.data["redis_master"] == ADDR["node2"] and asked == [], "no extra round trip"
    redis.prepare(run, list(inv.hosts.values()))        # e.g. the next --serial batch: asked live
    assert run.data["redis_master"] == ADDR["node1"]
    assert sorted(asked) == sorted(h.name for h in inv.with_role("sentinel")) and "redis" not in run.answers


def test_connecting_a_host_outside_the_subset_mid_run(log):
    """`inv patch --hosts node2` drains node2's api-server from every nginx, so it connects the nginx hosts
    outside the subset mid-run (seen on the lab: KeyError in the per-host seconds)."""
    inv = load_inventory(SPEC / "hosts.yaml")
    HOSTS.clear()
    HOSTS.update({n: FakeHost(n, log) for n in inv.hosts})
    run = FakeRun(inv, [inv.hosts["node2"]])
    run.connect()
    run.connect(list(inv.hosts.values()))
    assert set(run.facts) == set(inv.hosts) and not run.failed


@pytest.mark.parametrize("asked, round_trips, status", [
    ("@@early 0\ndone\n", 0, "ok"),    # converged in the answer given with the facts: no round trip
    ("@@early 0\nrun\n", 2, "changed"),  # something to do: probed again now (1), then applied (1)
    ("", 2, "changed"),                # no answer: the same
])
def test_converge_uses_an_early_answer_only_when_it_shows_nothing_to_do(log, asked, round_trips, status):
    from fabfile.core.protocol import early_probe_script
    inv = load_inventory(SPEC / "hosts.yaml")
    HOSTS.clear()
    HOSTS.update({n: FakeHost(n, log) for n in inv.hosts})
    run = FakeRun(inv, list(inv.hosts.values()))
    run.connect()
    step = Command("db migrate", unless="true", script="echo migrated")
    assert "@@early 0" in early_probe_script([step])
    host = inv.hosts["node1"]
    results = [] if run.converged_early(host, "airflow", [step], asked) else run.converge(host, "airflow", [step])
    assert HOSTS["node1"].round_trips == round_trips
    assert [r.status for r in run.results] == [status] and run.checks["node1"] == 1
    assert [r.status for r in results] == ([] if status == "ok" else [status])


class SlowFinalize(FakeComponent):
    """A component whose finalize takes a while and may run beside later components (`finalize_before`)."""

    def __init__(self, log, before, error=None):
        super().__init__("airflow", "airflow-x")
        self.log, self.finalize_before, self.error = log, before, error

    def finalize(self, run, hosts):
        self.log.append(("finalize", "start"))
        time.sleep(0.3)
        self.log.append(("finalize", "end"))
        if self.error:
            raise self.error


class Recorder(FakeComponent):
    """Logs when its own finalize runs: right after its hosts applied its steps."""

    def __init__(self, log, name):
        super().__init__(name, f"{name}-unit")
        self.log = log

    def finalize(self, run, hosts):
        self.log.append((self.name, "done"))


def _events(log):
    """The log as a string: a = one host applied, F/f = the slow finalize started/ended, D/S = dags/services done."""
    marks = {("finalize", "start"): "F", ("finalize", "end"): "f", ("dags", "done"): "D", ("services", "done"): "S"}
    return "".join("a" if e[0] == "apply" else marks.get(e, "") for e in log)


def test_a_finalize_with_finalize_before_runs_beside_the_components_in_between(log):
    rc = deploy(log, [SlowFinalize(log, before="services"), Recorder(log, "dags"), Recorder(log, "services")])
    assert rc == 0
    assert _events(log) == "aaaFaaaDfaaaS"     # dags applied while the finalize ran; services after it


def test_without_finalize_before_the_next_component_waits(log):
    rc = deploy(log, [SlowFinalize(log, before=""), Recorder(log, "dags")])
    assert rc == 0
    assert _events(log) == "aaaFfaaaD"


def test_a_background_finalize_is_joined_at_the_end_and_its_error_raised(log):
    """No component of that name follows: joined at the end of the batch; its exception is not lost."""
    with pytest.raises(RuntimeError, match="migrate broke"):
        deploy(log, [SlowFinalize(log, before="services", error=RuntimeError("migrate broke")), Recorder(log, "dags")])
    assert _events(log) == "aaaFaaaDf"


def test_check_runs_a_background_finalize_in_place(log):
    """--check (and the offline plan) keep the component order in their output: no thread."""
    rc = deploy(log, [SlowFinalize(log, before="services"), Recorder(log, "dags")], check=True)
    assert rc == 0
    assert _events(log) == "FfD"


class Afterwards(FakeComponent):
    def __init__(self, log, error=None):
        super().__init__("airflow", "airflow-x")
        self.log, self.error = log, error

    def afterwards(self, run, hosts):
        self.log.append(("afterwards", "start", len(hosts)))
        time.sleep(0.3)
        self.log.append(("afterwards", "end"))
        if self.error:
            raise self.error


def _deploy_with_finish(log, component):
    inv = load_inventory(SPEC / "hosts.yaml")
    HOSTS.clear()
    HOSTS.update({n: FakeHost(n, log) for n in inv.hosts})

    def finish(run):
        log.append(("finish", "start"))
        time.sleep(0.1)
        log.append(("finish", "end"))
    return execute(inv, list(inv.hosts.values()), [component], Options(), finish=finish, source=FakeHosts(DEBIAN))


def test_afterwards_runs_beside_the_finish_and_ends_before_the_recap(log):
    assert _deploy_with_finish(log, Afterwards(log)) == 0
    order = [e[:2] for e in log if e[0] in ("afterwards", "finish")]
    assert order == [("afterwards", "start"), ("finish", "start"), ("finish", "end"), ("afterwards", "end")]
    assert ("afterwards", "start", 3) in log, "every alive host it applies to"


def test_an_error_in_afterwards_is_raised_after_the_finish(log):
    with pytest.raises(RuntimeError, match="admin broke"):
        _deploy_with_finish(log, Afterwards(log, error=RuntimeError("admin broke")))
    assert ("finish", "end") in log
