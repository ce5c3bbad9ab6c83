"""The Celery task that runs a job; imported only by `pystol worker`.

Each worker process builds its own runner (Redis connection, cluster client)
on its first task, after the fork, so no socket is ever shared between
processes.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init

from pystol_worker.actions.registry import default_registry
from pystol_worker.core.model import JobRecord
from pystol_worker.core.policy import load_policy
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.service import ExperimentService
from pystol_worker.jobs.reaper import reap_once
from pystol_worker.jobs.runner import JobRunner
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.kube.cluster_access import (
    ClusterAccess,
    RetryPolicy,
    TokenBucket,
    load_api_client,
)
from pystol_worker.process.celery_app import (
    ADVANCE_EXPERIMENT_TASK,
    REHEARSE_TASK,
    RUN_JOB_TASK,
    CeleryAdvances,
    CeleryJobQueue,
)
from pystol_worker.process.time_limits import (
    JobTimeLimits,
    soft_limit_aborts_job,
    soft_limit_of,
    time_limited_request,
)
from pystol_worker.rehearsal.service import RehearsalService, RehearsalStatus
from pystol_worker.schedules.firing import ScheduleFirer
from pystol_worker.schedules.store import FIRE_TASK, FIRED_AT_HEADER, ScheduleStore
from pystol_worker.store.job_store import JobStore
from pystol_worker.store.redis_connection import redis_client

log = logging.getLogger("pystol.worker")
REAPER_BUDGET_SECONDS = 5.0


def advance_hook(advances: CeleryAdvances) -> Callable[[JobRecord], None]:
    """What the runner and the reaper call when a job ends: a step of an experiment run
    sends the run's next advance (jobs cannot import experiments; this is where the two
    meet)."""
    def job_ended(record: JobRecord) -> None:
        run_id = record.experiment_run_id or (record.spec.experiment.run_id
                                              if record.spec.experiment else None)
        if run_id:
            advances.send(run_id)
    return job_ended


class RunnerPerProcess:
    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app
        self._pid: int | None = None
        self._runner: JobRunner | None = None

    def get(self) -> JobRunner:
        if self._runner is None or self._pid != os.getpid():
            store = JobStore(redis_client(self.settings),
                             retention_seconds=self.settings.job_retention_seconds)
            hook = advance_hook(CeleryAdvances(self.settings, self.app)) \
                if self.app is not None else None
            self._runner = JobRunner(self.settings, store, default_registry(),
                                     lambda: ClusterAccess.from_settings(self.settings),
                                     policy=load_policy(self.settings.policy_file),
                                     on_finished=hook)
            self._pid = os.getpid()
        return self._runner


class ExperimentsPerProcess:
    """One experiment service per worker process, built after the fork (own Redis
    connection), sending jobs and advances with the worker's own Celery app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._service: ExperimentService | None = None

    def get(self, app: Celery, store: JobStore | None = None) -> ExperimentService:
        if self._service is None or self._pid != os.getpid():
            client = store.redis if store is not None else redis_client(self.settings)
            submissions = SubmissionService.from_settings(
                self.settings, client, CeleryJobQueue(self.settings, app), default_registry(),
                store=store)
            advances = CeleryAdvances(self.settings, app)
            self._service = ExperimentService(
                client, self.settings, submissions.policy, submissions, advances.send,
                audit=submissions.audit, send_advance_later=advances.send_later)
            self._pid = os.getpid()
        return self._service


def reaper_step(settings: Settings) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that reaps at start and then on the worker's own timer."""

    class ReaperStep(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            super().__init__(worker, **kwargs)
            self.runner = RunnerPerProcess(settings, worker.app)
            self.experiments = ExperimentsPerProcess(settings)
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
                          runner.registry.undo_registry(), budget_seconds=REAPER_BUDGET_SECONDS,
                          on_aborted=advance_hook(CeleryAdvances(settings, self.app)))
            except Exception:
                log.exception("reaper pass failed; the next one retries")
            # Experiment runs a lost message left behind: due timers, steps that ended
            # unnoticed, runs past their deadline (bounded per pass).
            try:
                experiments = self.experiments.get(self.app, runner.store)
                experiments.sweep()
                experiments.store.prune_expired()
            except Exception:
                log.exception("experiment sweep failed; the next pass retries")
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
    runners = RunnerPerProcess(settings, app)

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
    register_advance_task(app, settings)  # pystol.advance_experiment
    register_rehearse_task(app, settings)  # pystol.rehearse


def register_advance_task(app: Celery, settings: Settings) -> None:
    """`pystol.advance_experiment(run_id)`: move an experiment run on (short: a few Redis
    round trips and step submissions; the run's lock makes duplicates harmless)."""
    experiments = ExperimentsPerProcess(settings)

    @app.task(name=ADVANCE_EXPERIMENT_TASK, bind=True)
    def advance_experiment(task: Any, run_id: str) -> None:
        experiments.get(task.app).advance(str(run_id)[:100])


#: A rehearsal that found every slot busy is sent again after this long, this many times
#: at most (about an hour of waiting; its record keeps saying it is waiting, and why).
REHEARSAL_RETRY_SECONDS = 30
REHEARSAL_MAX_RETRIES = 120


def rehearsal_slots(settings: Settings) -> int:
    """PYSTOL_MAX_REHEARSALS: how many rehearsals (each a private simulator) may run at
    once across the workers of this cluster (default 1, so rehearsals never crowd out
    chaos)."""
    return settings.max_rehearsals


def register_rehearse_task(app: Celery, settings: Settings) -> None:
    """`pystol.rehearse(run_id)`: the body of a rehearsal asked of the API (`POST
    /api/v1/experiments/{name}/rehearse`). The service checks the stored seal, takes a slot
    (or leaves the run queued), snapshots read-only, rehearses, stores the report."""
    experiments = ExperimentsPerProcess(settings)

    @app.task(name=REHEARSE_TASK, bind=True, soft_time_limit=settings.max_experiment_seconds)
    def rehearse(task: Any, run_id: str) -> str:
        rehearsals = RehearsalService(
            redis_client(settings), settings, check=experiments.get(task.app).check_steps,
            send=lambda rid: task.app.send_task(REHEARSE_TASK, args=[rid],
                                                queue=settings.queue),
            slots=rehearsal_slots(settings))
        run = rehearsals.execute(str(run_id)[:100], ClusterAccess.from_settings(settings),
                                 load_policy(settings.policy_file))
        if run.status == RehearsalStatus.QUEUED:  # every slot busy: try again later
            raise task.retry(countdown=REHEARSAL_RETRY_SECONDS,
                             max_retries=REHEARSAL_MAX_RETRIES)
        return run.status.value


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
            advances = CeleryAdvances(self.settings, app)
            experiments = ExperimentService(
                client, self.settings, submissions.policy, submissions, advances.send,
                audit=submissions.audit, send_advance_later=advances.send_later)
            self._firer = ScheduleFirer(store, submissions, experiments)
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
