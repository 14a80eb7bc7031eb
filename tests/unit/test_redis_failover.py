"""Unit: the planned Redis failover (rolling restart of the master, patch, decommission) loses no write.

Offline: a fake run records the shell sent to each host. The master's writes are paused before SENTINEL
FAILOVER, and once the Sentinels agree on the new master the old one is demoted (REPLICAOF) before its
clients resume; a failover that never happens still resumes them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fabfile import redis
from fabfile.components import load_inventory

INV = load_inventory(Path(__file__).resolve().parents[1] / "spec" / "hosts.yaml")
ADDR = {"node1": "10.0.0.1", "node2": "10.0.0.2", "node3": "10.0.0.3"}


def fake_run(answer: str):
    sent = []

    def remote(host):
        def sh(script, timeout):
            sent.append((host, script))
            return SimpleNamespace(out=answer if "SENTINEL FAILOVER" in script else "")
        return SimpleNamespace(sh=sh)
    run = SimpleNamespace(inv=INV, addresses=ADDR, failed=set(), remote=remote, say=lambda *a: None,
                          data={"redis_master": "10.0.0.1"},
                          secrets={"redis_password": "rpw", "sentinel_password": "spw"})
    return run, sent


def test_writes_paused_before_the_failover_and_old_master_demoted_before_resuming(monkeypatch):
    run, sent = fake_run("OK")
    monkeypatch.setattr(redis, "sentinel_views", lambda run: {"node1": "10.0.0.2", "node2": "10.0.0.2"})
    assert redis.failover(run) is None
    assert run.data["redis_master"] == "10.0.0.2"
    first = sent[0][1]
    assert first.index("-h 10.0.0.1 -p 6379 CLIENT PAUSE") < first.index("SENTINEL FAILOVER")
    host, last = sent[-1]
    assert host == "node1" and last.index("REPLICAOF 10.0.0.2 6379") < last.index("CLIENT UNPAUSE")
    lines = [line for _, s in sent for line in s.splitlines() if "rpw" in line or "spw" in line]
    assert lines and all(line.startswith("export REDISCLI_AUTH=") for line in lines)   # never in argv


def test_a_failover_that_never_happens_still_resumes_the_clients(monkeypatch):
    run, sent = fake_run("NOGOODSLAVE No suitable replica to promote")
    monkeypatch.setattr(redis.time, "sleep", lambda s: None)
    why = redis.failover(run, timeout=0)
    assert why and "NOGOODSLAVE" in why
    assert "CLIENT UNPAUSE" in sent[-1][1] and "REPLICAOF" not in sent[-1][1]
