"""`pystol worker`: a Celery worker consuming Pystol's job queue."""

from __future__ import annotations

import os
from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer

from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import preload_client_modules
from pystol_worker.process.celery_app import make_celery
from pystol_worker.process.health_file import HealthFile, health_file_path
from pystol_worker.process.tasks import register_tasks


def health_step(health: HealthFile, interval: float) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that touches the health file at start, then on the worker's timer.

    With the Redis broker the timer runs on the worker's event loop, the loop that takes
    messages off the queue and hands them to the pool: when that loop stops (wedged on a
    call, deadlocked, SIGSTOPped) the file ages and the liveness probe restarts the worker.
    With `--pool solo` a job runs on that loop and holds it for the job's whole duration,
    so a probe there needs a `--max-age` longer than the longest job.
    """

    class HealthStep(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            super().__init__(worker, **kwargs)
            self.tref: Any = None

        def start(self, worker: Any) -> None:
            health.touch()  # fresh from the start: a file left by the last run says nothing
            self.tref = worker.timer.call_repeatedly(interval, health.touch)

        def stop(self, worker: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()

    return HealthStep


def health_consumer(health: HealthFile) -> type[Consumer]:
    """Celery's consumer, touching the health file while it waits for the broker.

    While Redis is unreachable the event loop does not run: the consumer sits in kombu's
    reconnect loop, so the timer of `health_step` stops too. A worker waiting for Redis is
    healthy, and restarting it would not bring Redis back, so the file must stay fresh
    then. kombu's `ensure_connection` calls its `callback` for every second it waits between
    attempts (Celery passes its shutdown check there); this consumer touches the file
    before that check.
    """

    class HealthConsumer(Consumer):
        def ensure_connected(self, conn: Any) -> Any:
            ensure_connection = conn.ensure_connection

            def ensure_connection_touching(*args: Any, callback: Any = None,
                                           **kwargs: Any) -> Any:
                def touch_then_callback() -> None:
                    health.touch()
                    if callback is not None:
                        callback()

                return ensure_connection(*args, callback=touch_then_callback, **kwargs)

            conn.ensure_connection = ensure_connection_touching
            return super().ensure_connected(conn)

    return HealthConsumer


def run_worker(settings: Settings, concurrency: int | None = None, pool: str = "prefork",
               loglevel: str = "INFO") -> None:
    preload_client_modules()
    app = make_celery(settings)
    register_tasks(app, settings)
    health_path = health_file_path(settings.health_dir, "worker")
    if health_path is not None:
        health = HealthFile(health_path)
        app.conf.worker_consumer = health_consumer(health)
        app.steps["worker"].add(health_step(health, settings.health_interval_seconds))
    app.worker_main([
        "worker", f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--pool={pool}", "-Q", settings.queue, f"--loglevel={loglevel}",
        "--without-gossip", "--without-mingle", "-n", f"pystol-{os.getpid()}@%h",
    ])
