"""Smoke test for the HA Celery cluster (Airflow 3 port of the tutorial's test DAG).

Eight independent tasks fan out over the Celery workers; each returns the name of the host it ran
on, so the XComs / logs show the spread. ``system_info`` asks Redis Sentinel (not ``CLUSTER NODES``:
the broker is replication + Sentinel, not Redis Cluster) which node is the broker master, and
``summary`` collects everything into one log line.

Trigger with ``airflow dags trigger test_ha_celery_workers`` (schedule=None).
"""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timedelta
from urllib.parse import unquote, urlsplit

from airflow.sdk import conf, dag, task

N_PARALLEL = 8


def _sentinel_settings() -> tuple[list[tuple[str, int]], str | None, dict, str]:
    """Sentinel addresses, Redis password, sentinel kwargs and master name from the Airflow config.

    The values come from /etc/airflow/airflow.env (inherited by the task from the worker), read
    through Airflow's config so airflow.cfg and AIRFLOW__* variables both work.
    """
    broker_url = conf.get("celery", "broker_url")
    sentinels: list[tuple[str, int]] = []
    password = None
    for part in filter(None, (p.strip() for p in broker_url.split(";"))):
        u = urlsplit(part)
        if u.scheme != "sentinel":
            raise ValueError(f"broker_url is not a sentinel:// URL list (scheme {u.scheme!r})")
        sentinels.append((u.hostname, u.port or 26379))
        if u.password:
            password = unquote(u.password)
    raw_kwargs = conf.get("celery_broker_transport_options", "sentinel_kwargs", fallback="") or "{}"
    sentinel_kwargs = json.loads(raw_kwargs)
    master_name = conf.get("celery_broker_transport_options", "master_name", fallback="airflow")
    return sentinels, password, sentinel_kwargs, master_name


@dag(
    dag_id="test_ha_celery_workers",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-ha", "test"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
)
def test_ha_celery_workers():
    @task
    def where_am_i(i: int) -> dict:
        host = socket.gethostname()
        time.sleep(2)  # long enough that the 8 tasks overlap and spread over workers
        print(f"task {i} ran on {host}")
        return {"task": i, "host": host}

    @task
    def system_info() -> dict:
        import redis
        from redis.sentinel import Sentinel

        sentinels, password, sentinel_kwargs, master_name = _sentinel_settings()
        sentinel_kwargs = {"socket_timeout": 3, **sentinel_kwargs}
        s = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, socket_timeout=3, password=password)
        master = s.discover_master(master_name)
        replicas = s.discover_slaves(master_name)
        views = {}
        for host, port in sentinels:  # each Sentinel's own opinion, to spot a split view
            try:
                info = redis.Redis(host=host, port=port, **sentinel_kwargs).sentinel_master(master_name)
                views[f"{host}:{port}"] = {
                    "master": f"{info['ip']}:{info['port']}",
                    "flags": info.get("flags"),
                    "num_other_sentinels": info.get("num-other-sentinels"),
                    "quorum": info.get("quorum"),
                }
            except Exception as exc:  # a Sentinel down is exactly what this DAG should show
                views[f"{host}:{port}"] = {"error": f"{type(exc).__name__}: {exc}"}
        role = s.master_for(master_name, socket_timeout=3).info("replication")
        result = {
            "worker": socket.gethostname(),
            "master_name": master_name,
            "master": f"{master[0]}:{master[1]}",
            "replicas": [f"{h}:{p}" for h, p in replicas],
            "master_role": role.get("role"),
            "connected_replicas": role.get("connected_slaves"),
            "sentinels": views,
        }
        print(json.dumps(result, indent=2))
        return result

    @task
    def summary(hosts: list[dict], info: dict) -> dict:
        spread: dict[str, int] = {}
        for h in hosts:
            spread[h["host"]] = spread.get(h["host"], 0) + 1
        print(f"tasks per worker host: {spread}; broker master: {info['master']}")
        return {"spread": spread, "broker_master": info["master"]}

    hosts = [where_am_i.override(task_id=f"where_am_i_{i}")(i) for i in range(1, N_PARALLEL + 1)]
    summary(hosts, system_info())


test_ha_celery_workers()
