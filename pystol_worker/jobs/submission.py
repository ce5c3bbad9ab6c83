"""The one way a job is submitted, whoever produces it: the HTTP API, the CR watcher and
schedule firing all call `SubmissionService.submit(spec, source, submitter)`.

The steps, in order, each written here once:

1. **validate** with `validate_job` (the same rules for every producer; `JobInvalid`);
2. **halt**: refuse while the global kill switch is engaged (`ChaosHalted`);
3. **store** the queued record with `JobStore.create`; an idempotency key already used by
   this submitter for the same spec returns the earlier job and queues nothing (created
   False), for a different spec raises `IdempotencyConflict`;
4. **queue** it through the injected `JobQueue` (Celery `send_task` by name in
   production); when the queue refuses, the job is marked failed ("could not be queued")
   and its idempotency key released, so that a retry with the same key submits afresh
   (`QueueUnavailable`).

Each producer turns these errors into its own answer (HTTP problem documents, a
PystolAction's status, a schedule run's outcome); none repeats a step. The next step
to come here, once for every producer, is authorization and policy.

A job that has an idempotency key is marked sent once queued (`JobStore.mark_sent`).
That lets `adopt` queue a job found again by its key whose producer died between
storing and queuing it, without ever sending a job twice: a worker takes a second
delivery of a running job for a lost worker and aborts it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from pystol_worker.actions.registry import ActionRegistry
from pystol_worker.core.model import JobRecord, JobSpec, JobStatus, Source
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.validation import JobInvalid, validate_job
from pystol_worker.store.halt import ChaosHalted, HaltSwitch
from pystol_worker.store.job_store import (
    IdempotencyConflict,
    JobNotFound,
    JobStore,
    TransitionRefused,
)

__all__ = [
    "ChaosHalted",
    "IdempotencyConflict",
    "JobInvalid",
    "JobQueue",
    "QueueUnavailable",
    "SubmissionService",
]

log = logging.getLogger("pystol.submission")
QUEUE_FAILED_REASON = "could not be queued"


class JobQueue(Protocol):
    """How a stored job reaches the workers. A protocol so that tests inject a recording
    or a failing queue instead of patching Celery; the Celery form is
    `pystol_worker.process.celery_app.CeleryJobQueue`."""

    def send(self, job_id: str) -> None:
        """Queue a job already stored in the job store; raise when it cannot be queued."""


class QueueUnavailable(Exception):
    """The job was stored but the queue refused it. By the time this is raised the job
    is marked failed and its idempotency key released; `cause` is what the queue raised."""

    def __init__(self, job_id: str, cause: Exception) -> None:
        super().__init__(f"job {job_id} {QUEUE_FAILED_REASON}: "
                         f"{type(cause).__name__}: {cause}")
        self.job_id = job_id
        self.cause = cause


class SubmissionService:
    """Validate, check the halt switch, store and queue a job: see the module docstring.

    Everything it talks to is injected (built once per process by whoever runs it), so
    the API, the watcher, the worker and the tests each pass their own."""

    def __init__(self, store: JobStore, queue: JobQueue, registry: ActionRegistry,
                 settings: Settings, halt: HaltSwitch) -> None:
        self.store = store
        self.queue = queue
        self.registry = registry
        self.settings = settings
        self.halt = halt

    def submit(self, spec: JobSpec, source: Source, submitter: str, *,
               schedule_id: str | None = None) -> tuple[JobRecord, bool]:
        """Submit a job; returns (record, created). created is False when the spec's
        idempotency key was used by this submitter in the last 24 h for the same spec:
        the record is that earlier job and nothing was queued.

        Raises JobInvalid (every problem, with field paths), ChaosHalted,
        IdempotencyConflict (the key was used for a different spec; `job_id` is the
        earlier job) or QueueUnavailable (stored, then refused by the queue: the job is
        failed and the key released). Redis errors propagate as they are."""
        validate_job(spec, self.registry, self.settings)
        self.refuse_if_halted()
        record, created = self.store.create(spec, source, submitter, schedule_id=schedule_id)
        if created:
            self._send(record)
        return record, created

    def refuse_if_halted(self) -> None:
        """ChaosHalted while the kill switch is engaged. `submit` checks it itself; it is
        public for a producer that must also know before doing anything with side effects
        of its own (schedule firing, before its concurrency policy cancels earlier runs)."""
        self.halt.refuse_if_halted()

    def adopt(self, record: JobRecord) -> bool:
        """Queue a job found again by its idempotency key when its producer stored it but
        never queued it (it died in between); True when this call queued it.

        Nothing is sent for a job that was already sent or is no longer queued (it started,
        ended, or was cancelled, e.g. by a halt). Raises QueueUnavailable like `submit`."""
        if record.status != JobStatus.QUEUED or self.store.was_sent(record.id):
            return False
        self._send(record)
        return True

    def _send(self, record: JobRecord) -> None:
        """Queue a stored job; on failure, fail the job and release its idempotency key."""
        try:
            self.queue.send(record.id)
        except Exception as error:
            log.exception("could not queue job %s", record.id)
            # The job may have been cancelled meanwhile (a halt): it has ended either way.
            with contextlib.suppress(TransitionRefused, JobNotFound):
                self.store.finish(record.id, JobStatus.FAILED, QUEUE_FAILED_REASON,
                                  error=f"{type(error).__name__}: {error}")
            self.store.release_idempotency_key(record)
            raise QueueUnavailable(record.id, error) from error
        if record.spec.idempotency_key:
            # Only a job with a key can be found again (and adopted); others skip the write.
            self.store.mark_sent(record.id)
