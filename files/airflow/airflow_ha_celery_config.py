"""Celery settings on top of Airflow's defaults (managed by airflow-ha; [celery] celery_config_options).

Broker failover: when the Redis master dies, publishing a task fails with "connection refused" until the
Sentinels have elected a new master (down-after-milliseconds + election: about 6 s by default). Airflow
retries a publish only when it *timed out* ([celery] operation_timeout, up to task_publish_max_retries
scheduler loops) and fails the task at once on any other error. Letting kombu retry the publish without
a limit turns "connection refused" into that timeout, so the scheduler retries on its next loops, kombu
asks the Sentinels again, and the task reaches the new master instead of failing.

Lost hosts: `worker_disable_prefetch` (Celery >= 5.6, Redis brokers) makes a worker take a message only
when a process is free. With prefetching, a worker that loses its host also takes the messages it had
reserved but not started: they sit unacked in Redis until visibility_timeout (6 h), and Airflow re-sends
their tasks only after [scheduler] task_queued_timeout (10 min). Without it, what a dead worker held
had started, and the scheduler retries it after task_instance_heartbeat_timeout (60 s).
"""

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {
    **DEFAULT_CELERY_CONFIG,
    "task_publish_retry": True,
    "worker_disable_prefetch": True,
    "task_publish_retry_policy": {"max_retries": None, "interval_start": 0.2, "interval_step": 0.3,
                                  "interval_max": 1.0},
}
