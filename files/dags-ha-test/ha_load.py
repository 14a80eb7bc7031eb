"""Load for failover drills: 15 short independent tasks (2-5 s each); `ha_load` without retries,
`ha_load_retry` with 2 retries. (30 until the suite met a 2-core machine about half as fast: each task is
a process start, and a run's 30 starting at once stalled every api-server past the probes' timeouts.)

Trigger it, then kill a worker / scheduler / api-server / Redis master mid-run and look at the task
states: with ``retries=0`` every task lost to the failure shows up as failed instead of being hidden
by a retry, and the hostname in each log tells which worker ran it.
"""

from __future__ import annotations

import random
import socket
import time
from datetime import datetime, timedelta

from airflow.sdk import dag, task

N_TASKS = 15


def make(dag_id: str, retries: int):
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_tasks=N_TASKS,
        tags=["airflow-ha", "load"],
        default_args={"retries": retries, "retry_delay": timedelta(seconds=5)},
    )
    def load():
        @task
        def work(i: int) -> str:
            seconds = random.uniform(2, 5)
            time.sleep(seconds)
            host = socket.gethostname()
            print(f"load task {i} slept {seconds:.1f}s on {host}")
            return host

        for i in range(1, N_TASKS + 1):
            work.override(task_id=f"load_{i:02d}")(i)

    return load()


# retries=0: a task lost to a fault shows as failed (redis-master, scheduler, api-server drills, rolling restart)
ha_load = make("ha_load", retries=0)
# retries=2: a task whose worker was SIGKILLed or powered off is retried elsewhere (worker and node drills)
ha_load_retry = make("ha_load_retry", retries=2)
