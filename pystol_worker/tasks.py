"""The Celery task that runs a job; imported only by `pystol worker`.

Each worker process builds its own runner (Redis connection, cluster client)
on its first task, after the fork, so no socket is ever shared between
processes.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init

from pystol_worker.actions.registry import default_registry
from pystol_worker.celery_app import RUN_JOB_TASK
from pystol_worker.job_store import JobStore
from pystol_worker.kube_access import ClusterAccess
from pystol_worker.runner import JobRunner
from pystol_worker.settings import Settings


class RunnerPerProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._runner: JobRunner | None = None

    def get(self) -> JobRunner:
        if self._runner is None or self._pid != os.getpid():
            store = JobStore(redis.Redis.from_url(self.settings.redis_url))
            self._runner = JobRunner(self.settings, store, default_registry(),
                                     lambda: ClusterAccess.from_settings(self.settings))
            self._pid = os.getpid()
        return self._runner


def register_tasks(app: Celery, settings: Settings) -> None:
    runners = RunnerPerProcess(settings)

    @worker_process_init.connect(weak=False)
    def _warm_up(**_: Any) -> None:
        # Connect to Redis and the cluster before the first job, not during it.
        runners.get().cluster  # noqa: B018

    @app.task(name=RUN_JOB_TASK, bind=True)
    def run_job(task: Any, job_id: str) -> str | None:
        status = runners.get().run(job_id, worker=task.request.hostname or "worker")
        return status.value if status else None
