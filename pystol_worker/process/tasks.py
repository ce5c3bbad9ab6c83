"""The Celery task that runs a job; imported only by `pystol worker`.

Each worker process builds its own runner (Redis connection, cluster client)
on its first task, after the fork, so no socket is ever shared between
processes.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init

from pystol_worker.actions.registry import default_registry
from pystol_worker.core.policy import load_policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.reaper import reap_once
from pystol_worker.jobs.runner import JobRunner
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.kube.cluster_access import (
    ClusterAccess,
    RetryPolicy,
    TokenBucket,
    load_api_client,
)
from pystol_worker.process.celery_app import RUN_JOB_TASK, CeleryJobQueue
from pystol_worker.process.time_limits import (
    JobTimeLimits,
    soft_limit_aborts_job,
    soft_limit_of,
    time_limited_request,
)
from pystol_worker.schedules.firing import ScheduleFirer
from pystol_worker.schedules.store import FIRE_TASK, FIRED_AT_HEADER, ScheduleStore
from pystol_worker.store.job_store import JobStore
from pystol_worker.store.redis_connection import redis_client

log = logging.getLogger("pystol.worker")
REAPER_BUDGET_SECONDS = 5.0


class RunnerPerProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._runner: JobRunner | None = None

    def get(self) -> JobRunner:
        if self._runner is None or self._pid != os.getpid():
            store = JobStore(redis_client(self.settings),
                             retention_seconds=self.settings.job_retention_seconds)
            self._runner = JobRunner(self.settings, store, default_registry(),
                                     lambda: ClusterAccess.from_settings(self.settings),
                                     policy=load_policy(self.settings.policy_file))
            self._pid = os.getpid()
        return self._runner


def reaper_step(settings: Settings) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that reaps at start and then on the worker's own timer."""

    class ReaperStep(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            super().__init__(worker, **kwargs)
            self.runner = RunnerPerProcess(settings)
            self.cluster: ClusterAccess | None = None
            self.tref: Any = None
            self.app = worker.app
            self.submissions: SubmissionService | None = None

        def start(self, worker: Any) -> None:
            worker.timer.call_after(0.0, self.reap)
            self.tref = worker.timer.call_repeatedly(settings.reaper_interval_seconds, self.reap)

        def stop(self, worker: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()

        def reap(self) -> None:
            # This runs on the worker's event loop: keep each pass short. Undo calls fail
            # fast (two attempts) and a pass stops after its budget; what is left stays in
            # the journal for the next pass.
            runner = self.runner.get()
            if self.cluster is None:
                self.cluster = ClusterAccess(
                    load_api_client(settings.kubeconfig),
                    TokenBucket(settings.kube_qps, settings.kube_burst),
                    RetryPolicy(attempts=2, base_delay=0.2, max_delay=1.0))
            try:
                reap_once(runner.store, runner.journal, self.cluster, settings.heartbeat_seconds,
                          runner.registry.undo_registry(), budget_seconds=REAPER_BUDGET_SECONDS)
            except Exception:
                log.exception("reaper pass failed; the next one retries")
            # Jobs deferred to the admin policy's next chaos window are queued here.
            try:
                if self.submissions is None:
                    self.submissions = SubmissionService.from_settings(
                        settings, runner.store.redis, CeleryJobQueue(settings, self.app),
                        runner.registry, store=runner.store)
                self.submissions.release_due()
            except Exception:
                log.exception("could not queue deferred jobs; the next pass retries")
            # Ended jobs past PYSTOL_JOB_RETENTION_SECONDS leave the indexes (their records
            # expire on their own); one cheap range read when there is nothing to do.
            try:
                runner.store.prune_expired()
            except Exception:
                log.exception("could not forget expired jobs; the next pass retries")

    return ReaperStep


def register_tasks(app: Celery, settings: Settings) -> None:
    runners = RunnerPerProcess(settings)

    @worker_process_init.connect(weak=False)
    def _warm_up(**_: Any) -> None:
        # Connect to Redis and the cluster before the first job, not during it.
        runners.get().cluster  # noqa: B018

    app.steps["worker"].add(reaper_step(settings))

    # The job's own time limits, computed by this worker when it receives the task
    # (process/time_limits.py); past the soft one the job is aborted and reverted.
    limits = JobTimeLimits(settings, runners.get)

    @app.task(name=RUN_JOB_TASK, bind=True, Request=time_limited_request(limits))
    def run_job(task: Any, job_id: str) -> str | None:
        with soft_limit_aborts_job(soft_limit_of(task.request), settings):
            status = runners.get().run(job_id, worker=task.request.hostname or "worker")
        return status.value if status else None

    register_fire_task(app, settings)  # pystol.fire_schedule: what beat sends for a schedule


class FirerPerProcess:
    """One firer per worker process, built after the fork (own Redis connection)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._firer: ScheduleFirer | None = None

    def get(self, app: Celery) -> ScheduleFirer:
        if self._firer is None or self._pid != os.getpid():
            client = redis_client(self.settings)
            registry = default_registry()
            store = ScheduleStore(client, self.settings, registry=registry,
                                  rng=random.Random())
            # The submission service every producer uses, on this process's connection;
            # jobs are sent with the worker's own Celery app.
            submissions = SubmissionService.from_settings(
                self.settings, client, CeleryJobQueue(self.settings, app), registry,
                store=store.jobs)
            self._firer = ScheduleFirer(store, submissions)
            self._pid = os.getpid()
        return self._firer


def register_fire_task(app: Celery, settings: Settings) -> None:
    """Register `pystol.fire_schedule` on a worker's app (called by `register_tasks`)."""
    firers = FirerPerProcess(settings)

    @app.task(name=FIRE_TASK, bind=True)
    def fire_schedule(task: Any, schedule_id: str) -> str:
        stamped = getattr(task.request, FIRED_AT_HEADER, None)
        try:
            fired_at = float(stamped) if stamped is not None else None
        except (TypeError, ValueError):
            fired_at = None
        result = firers.get(task.app).fire(schedule_id, fired_at=fired_at,
                                           task_id=task.request.id)
        return result.outcome
