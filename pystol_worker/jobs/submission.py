"""The one way a job is submitted, whoever produces it: the HTTP API, the CR watcher and
schedule firing all call `SubmissionService.submit(spec, source, identity)`.

The steps, in order, each written here once:

1. **validate** with `validate_job` (the same rules for every producer; `JobInvalid`);
2. **authorize**: the identity's scope (`grant_for`: `AccessDenied`, 403 naming the
   namespace or the action) and the admin policy (`policy_problems`: `PolicyRefused`),
   before anything is stored;
3. **halt**: refuse while the global kill switch is engaged (`ChaosHalted`), checked by
   the script that stores the job (step 4), so no halt set before it is missed;
4. **store** the queued record with `JobStore.create` (one Redis round trip with the
   halt check, the submitted counter and the `ok` audit record), carrying the actor and the grant
   sealed with PYSTOL_SIGNING_KEY (the worker checks it before touching anything); an
   idempotency key already used by this submitter for the same spec returns the earlier
   job and queues nothing (created False), for a different spec raises
   `IdempotencyConflict`;
5. **queue** it through the injected `JobQueue` (Celery `send_task` by name in
   production); when the queue refuses, the job is marked failed ("could not be queued")
   and its idempotency key released, so that a retry with the same key submits afresh
   (`QueueUnavailable`). Outside the policy's chaos windows in `wait` mode the job is
   deferred instead, and `release_due` (the worker's reaper pass) queues it when the
   next window opens;
6. **audit**: one record per submission, accepted or refused, with who, what and every
   namespace the job acts or reads in (`job_namespaces`: targets and probes, so that
   the trail's namespace filter finds a job that only probes a namespace). An accepted
   job's `ok` record is stored with the job (step 4) but logged only once the job is
   queued or deferred; a job the queue refused has its `ok` withdrawn and gets one
   `failed` record instead, in the stream and in the log.

Each producer turns these errors into its own answer (HTTP problem documents, a
PystolAction's status, a schedule run's outcome); none repeats a step.

A job that has an idempotency key is marked sent once queued (`JobStore.mark_sent`).
That lets `adopt` queue a job found again by its key whose producer died between
storing and queuing it, without ever sending a job twice: a worker takes a second
delivery of a running job for a lost worker and aborts it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

import redis

from pystol_worker.actions.registry import ActionRegistry
from pystol_worker.core.access import AccessDenied, Identity
from pystol_worker.core.model import EventKind, JobRecord, JobSpec, JobStatus, Source, utcnow
from pystol_worker.core.policy import OutsideWindows, Policy, load_policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import (
    PolicyRefused,
    grant_for,
    job_namespaces,
    policy_problems,
    sealed,
)
from pystol_worker.jobs.validation import FieldProblem, JobInvalid, validate_job
from pystol_worker.store.audit_log import AuditLog, AuditRecord, Outcome, StreamEntry
from pystol_worker.store.halt import ChaosHalted, HaltSwitch
from pystol_worker.store.job_store import (
    IdempotencyConflict,
    JobNotFound,
    JobStore,
    TransitionRefused,
)
from pystol_worker.store.submit_script import HaltedAtSubmit

__all__ = [
    "AccessDenied",
    "ChaosHalted",
    "IdempotencyConflict",
    "JobInvalid",
    "JobQueue",
    "PolicyRefused",
    "QueueUnavailable",
    "SubmissionService",
]

log = logging.getLogger("pystol.submission")
QUEUE_FAILED_REASON = "could not be queued"
RELEASE_RETRY_SECONDS = 30.0


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
                 settings: Settings, halt: HaltSwitch, *, policy: Policy | None = None,
                 audit: AuditLog | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.queue = queue
        self.registry = registry
        self.settings = settings
        self.halt = halt
        self.policy = policy if policy is not None else Policy()
        self.audit = audit
        self.clock = clock

    def submit(self, spec: JobSpec, source: Source, identity: Identity, *,
               schedule_id: str | None = None) -> tuple[JobRecord, bool]:
        """Submit a job for `identity`; returns (record, created). created is False when the
        spec's idempotency key was used by this submitter in the last 24 h for the same
        spec: the record is that earlier job and nothing was queued.

        Raises JobInvalid (every problem, with field paths), AccessDenied (outside the
        identity's scope), PolicyRefused (the admin policy says no), ChaosHalted,
        IdempotencyConflict (the key was used for a different spec; `job_id` is the
        earlier job) or QueueUnavailable (stored, then refused by the queue: the job is
        failed and the key released). Redis errors propagate as they are."""
        now = self.clock()
        try:
            if spec.experiment is not None and source != Source.EXPERIMENT:
                raise JobInvalid([FieldProblem("experiment", "set by the experiment engine "
                                               "on the jobs of an experiment's steps; run "
                                               "the experiment instead")])
            action, params = validate_job(spec, self.registry, self.settings)
            grant = grant_for(spec, action, params, identity, self.policy)
            problems = policy_problems(spec, action, params, self.policy, now,
                                       settings=self.settings)
            if problems:
                raise PolicyRefused(problems)
        except JobInvalid as error:
            self._audit(identity, spec, "invalid", str(error), schedule_id=schedule_id)
            raise
        except (AccessDenied, PolicyRefused) as error:
            self._audit(identity, spec, "refused", str(error), schedule_id=schedule_id)
            raise
        key = self.settings.signing_key_bytes
        not_before = None
        if self.policy.outside_windows == OutsideWindows.WAIT and \
                self.policy.window_problem(now) is not None:
            not_before = self.policy.next_opening(now)
        audit_ok = (_OkRecord(self, identity, spec, schedule_id)
                    if self.audit is not None else None)
        try:
            # The halt check is the store's script's first step (one round trip; a halt
            # set before it can never be followed by a stored job).
            record, created = self.store.create(
                spec, source, identity.actor.submitter, schedule_id=schedule_id,
                actor=identity.actor, grant=lambda job_id: sealed(grant, job_id, spec, key),
                not_before=not_before, refuse_when_halted=True,
                audit=audit_ok)
        except HaltedAtSubmit as halted_at:
            halted = ChaosHalted(HaltSwitch.state_of(halted_at.raw))
            self._audit(identity, spec, "refused", str(halted), schedule_id=schedule_id)
            raise halted from None
        withdrawn = False
        try:
            if created:
                if not_before is not None:
                    self.store.defer(record.id, not_before)
                    self.store.append_event(record.id, EventKind.DEFERRED,
                                            f"outside the admin policy's chaos windows; "
                                            f"queued when the next one opens, "
                                            f"{not_before.isoformat()}")
                else:
                    try:
                        self._send(record)
                    except QueueUnavailable as error:
                        # One record per submission: `failed` replaces the stored `ok`, and
                        # only `failed` reaches the log, so the log and the stream tell one
                        # story.
                        if self.audit is not None and audit_ok is not None:
                            self.audit.withdraw(audit_ok.entry_id)
                            withdrawn = True
                        self._audit(identity, spec, "failed", str(error), job_id=record.id,
                                    schedule_id=schedule_id)
                        raise
        finally:
            # The `ok` the submit script stored stays in the stream whatever else fails
            # after it (a Redis error deferring the job): the log line must follow it.
            if not withdrawn and audit_ok is not None and audit_ok.record is not None:
                AuditLog.log(audit_ok.record)
        return record, created

    @classmethod
    def from_settings(cls, settings: Settings, redis_client: redis.Redis, queue: JobQueue,
                      registry: ActionRegistry, store: JobStore | None = None
                      ) -> SubmissionService:
        """The service as every process builds it: the policy from PYSTOL_POLICY_FILE and
        the audit trail on the same Redis (raises PolicyError for a bad policy file)."""
        if store is None:
            store = JobStore(redis_client, retention_seconds=settings.job_retention_seconds)
        return cls(store, queue, registry,
                   settings, HaltSwitch(redis_client), policy=load_policy(settings.policy_file),
                   audit=AuditLog(redis_client, max_records=settings.audit_max_records,
                                  retention_seconds=settings.audit_retention_seconds))

    def release_due(self) -> list[str]:
        """Queue the deferred jobs whose chaos window has opened; their ids. A job
        cancelled meanwhile (or by a halt) is not queued."""
        released = []
        now = self.clock()
        for job_id in self.store.claim_due(now.timestamp()):
            try:
                record = self.store.get(job_id, with_timeline=False)
                # Not when `adopt` already sent it (once its window had opened).
                if record.status == JobStatus.QUEUED and not self.store.was_sent(record.id):
                    self.queue.send(record.id)
                    if record.spec.idempotency_key:
                        self.store.mark_sent(record.id)
                    released.append(job_id)
            except JobNotFound:
                continue
            except Exception:
                # Claimed but not sent: put it back, so the next pass tries again.
                log.exception("could not queue deferred job %s; retrying later", job_id)
                self.store.defer(job_id, now + timedelta(seconds=RELEASE_RETRY_SECONDS))
        return released

    def _audit(self, identity: Identity, spec: JobSpec, outcome: Outcome,
               detail: str | None, *, job_id: str | None = None,
               schedule_id: str | None = None) -> None:
        if self.audit is None:
            return
        self.audit.record(identity.actor, "job.submit", outcome=outcome,
                          targets=self._audit_targets(spec),
                          namespaces=job_namespaces(spec),
                          detail=f"{spec.action}: {detail}" if detail else spec.action,
                          job_id=job_id, schedule_id=schedule_id)

    def _audit_record(self, identity: Identity, spec: JobSpec, outcome: Outcome,
                      detail: str | None, *, job_id: str | None = None,
                      schedule_id: str | None = None) -> AuditRecord:
        """The record `_audit` would store, built now and stored by someone else."""
        assert self.audit is not None
        return self.audit.build(identity.actor, "job.submit", self.audit.now(),
                                outcome=outcome, targets=self._audit_targets(spec),
                                namespaces=job_namespaces(spec),
                                detail=f"{spec.action}: {detail}" if detail else spec.action,
                                job_id=job_id, schedule_id=schedule_id)

    @staticmethod
    def _audit_targets(spec: JobSpec) -> list[str]:
        return list(spec.target.namespaces) or list(spec.target.names) or \
            ([spec.target.label_selector] if spec.target.label_selector else [])

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
        if record.not_before is not None and record.not_before > self.clock():
            return False  # deferred to a chaos window: `release_due` queues it then
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


class _OkRecord:
    """The `ok` audit record of one submission, for the store's submit script
    (`SubmitAudit`): built when the job id is drawn, appended with the job, its stream id
    kept so that a queue refusal can replace it with `failed`."""

    def __init__(self, service: SubmissionService, identity: Identity, spec: JobSpec,
                 schedule_id: str | None) -> None:
        self._service = service
        self._identity = identity
        self._spec = spec
        self._schedule_id = schedule_id
        self.record: AuditRecord | None = None
        self.entry_id = ""

    def entry(self, job_id: str) -> StreamEntry:
        assert self._service.audit is not None
        self.record = self._service._audit_record(self._identity, self._spec, "ok", None,
                                                  job_id=job_id,
                                                  schedule_id=self._schedule_id)
        return self._service.audit.entry(self.record)

    def stored(self, entry_id: str) -> None:
        self.entry_id = entry_id
