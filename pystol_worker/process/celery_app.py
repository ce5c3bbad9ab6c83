"""The Celery application: configuration only, shared by producers and workers.

Producers (the API, the watcher, beat) build it to send tasks by name; only
`pystol worker` imports `pystol_worker.process.tasks`, which registers the task code.
`CeleryJobQueue` is the `JobQueue` the submission service sends jobs through.
The settings are the ones a job that must not be lost, nor run twice by
accident, needs: late acknowledgement, requeue when a worker dies mid-task, one
task prefetched at a time, and a visibility timeout longer than the longest job.
The broker's URL, Sentinel master and TLS checks come from `redis_connection`, like every
other Redis connection of Pystol.
"""

from __future__ import annotations

from celery import Celery

from pystol_worker.core.settings import Settings
from pystol_worker.store.redis_connection import celery_broker_options

RUN_JOB_TASK = "pystol.run_job"
#: Moves an experiment run on (`experiments/engine.py`). Routed to the jobs queue on
#: purpose: every worker already consumes it, so no deployment needs a new `-Q`, and an
#: advance is a few Redis round trips and submissions, never a held fault, so it takes a
#: slot for milliseconds. (A queue of its own would still share the same prefork slots.)
ADVANCE_EXPERIMENT_TASK = "pystol.advance_experiment"
#: Runs a server-side rehearsal (`rehearsal/service.py`): snapshot the namespaces the
#: experiment touches, rehearse on a private simulator, store the report. Jobs queue too
#: (no new `-Q` anywhere); the service's Redis slots bound how many run at once, so a
#: burst of rehearsals waits for a slot instead of starting a simulator per worker slot.
REHEARSE_TASK = "pystol.rehearse"


def make_celery(settings: Settings) -> Celery:
    broker = celery_broker_options(settings)
    app = Celery("pystol", broker=broker.pop("broker_url"), set_as_current=False)
    transport = broker.pop("broker_transport_options")
    app.conf.update(
        **broker,  # broker_use_ssl, for rediss://
        task_default_queue=settings.queue,
        task_routes={RUN_JOB_TASK: {"queue": settings.queue},
                     ADVANCE_EXPERIMENT_TASK: {"queue": settings.queue},
                     REHEARSE_TASK: {"queue": settings.queue}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.max_job_seconds * 2,
            "socket_keepalive": True,
            **transport,  # master_name, for Sentinel
        },
        broker_pool_limit=10,
        # No `task-sent` event per publish (a PUBLISH on every submission): monitoring
        # reads the job store, not Celery events.
        task_send_sent_event=False,
        worker_send_task_events=False,
    )
    return app


def send_job(app: Celery, settings: Settings, job_id: str) -> None:
    """Queue a stored job for a worker, by task name (producers never import task code)."""
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=settings.queue)


class CeleryJobQueue:
    """The submission service's `JobQueue` on the Celery broker at `settings.redis_url`.

    `app`: the Celery app to send with; a worker passes its own (fire_schedule runs in
    one), the API and the watcher let it build a producer app, which connects on the
    first send. Sending by task name keeps every producer free of task code.

    Each send takes a producer from the app's pool and gives it back. Keeping one per
    thread was measured (issue 16) at ~5 % of a send, and it is unsafe: the pool holds
    `broker_pool_limit` producers while the API runs more threads than that, so the next
    thread would wait for a producer forever, with its job already stored."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self._settings = settings
        self._celery = app if app is not None else make_celery(settings)

    def send(self, job_id: str) -> None:
        send_job(self._celery, self._settings, job_id)


class CeleryAdvances:
    """How an experiment run's next advance reaches a worker: `send(run_id)` now,
    `send_later(run_id, seconds)` after a delay (a wait step, a hold to look at again).
    The experiment service's `send_advance` and `send_advance_later`."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self._settings = settings
        self._celery = app if app is not None else make_celery(settings)

    def send(self, run_id: str) -> None:
        self._celery.send_task(ADVANCE_EXPERIMENT_TASK, args=[run_id],
                               queue=self._settings.queue)

    def send_later(self, run_id: str, seconds: float) -> None:
        self._celery.send_task(ADVANCE_EXPERIMENT_TASK, args=[run_id],
                               queue=self._settings.queue, countdown=max(seconds, 0.0))


class CeleryRehearsals:
    """How a rehearsal asked of the API reaches a worker: `send(run_id)` queues
    `pystol.rehearse` (the rehearsal service's `send`)."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self._settings = settings
        self._celery = app if app is not None else make_celery(settings)

    def send(self, run_id: str, countdown: float = 0.0) -> None:
        self._celery.send_task(REHEARSE_TASK, args=[run_id], queue=self._settings.queue,
                               countdown=max(countdown, 0.0) or None)
