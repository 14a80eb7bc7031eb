"""Celery queue routing: `heavy` tasks run only on workers that serve the `heavy` queue (inventory
`worker_queues`), the others on the `default` queue. Each task returns the host it ran on."""

from __future__ import annotations

import socket
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="ha_queues", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["airflow-ha", "test"])
def ha_queues():
    @task(queue="heavy")
    def heavy(i: int) -> str:
        return socket.gethostname()

    @task
    def light(i: int) -> str:
        return socket.gethostname()

    heavy.expand(i=list(range(6)))
    light.expand(i=list(range(3)))


ha_queues()
