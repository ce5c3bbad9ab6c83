"""`pystol watch`: the custom-resource watcher, a kopf operator feeding the job queue.

Who a custom resource is (`pystol_api.watcher.kinds`): a `PystolAction` or
`PystolSchedule` is an operator of **its own namespace** and nothing else, so that whoever
may create one in `team-a` cannot make Pystol act in `payments` (a confused deputy); a
spec naming another namespace, or node-level and cluster-wide chaos, ends `Failed` with
a `Forbidden` condition and nothing is stored. Node-level and cluster-wide chaos by custom
resource is the cluster-scoped `PystolClusterAction` / `PystolClusterSchedule`, which only
cluster admins can create (RBAC), with the admin's authority; the admin policy and the
protected namespaces still apply to them (`PolicyRefused`, `InvalidSpec`). Every job
and schedule carries the object as its actor (uid, kind, last manager). The cluster-scoped
kinds are served by a cluster-wide watcher only (not with `--namespace`).

A `PystolAction` (or `PystolClusterAction`) becomes exactly one job, submitted through the
same submission service as the HTTP API's (`SubmissionService.submit`: validate,
authorize, halt check, store, queue; source `cr`, submitter `<namespace>/<name>`, or
`<name>` for a cluster-scoped object):

- **create** (kopf `on.create`, and `on.resume` for objects found at start): map the
  spec (camelCase, or the original Pystol's role/extra_vars) and submit it with the
  idempotency key `pystolaction:<uid>:<generation>` (`pystolclusteraction:...`). A
  watcher restarted in the middle, or a second one acting by mistake, finds the job by
  that key (`JobStore.find_by_idempotency_key`) and adopts it (`SubmissionService.adopt`:
  queued only if nobody sent it) instead of queuing another. A spec that cannot run
  (invalid, forbidden, refused by the policy, halted) gets `phase: Failed` and the reason
  in `status` and a Warning event; it is not retried until its spec changes (a new
  generation). Redis or the queue being down is a `kopf.TemporaryError`: retried with
  backoff.
- **follow** (`StatusMirror`, one for the whole watcher, not a kopf daemon per object):
  one Redis pattern subscription to the job timeline channels marks the job that
  changed, and the mirror re-reads that job and patches the `status` of the object that
  queued it (phase, times, message, compact result, conditions), posting an Event when
  the job ends. A reconnection re-reads every followed job and a slow poll covers the
  rest. The status copies the job's phase, times, Pystol's own `reason` and counts,
  never an `error` text or anything an action read.

Events are posted for what a user must notice (a refusal, a foreign job id, a job that
ended, an abort), not for every job queued: the `Accepted` condition (reason
`JobQueued`) and `status.jobId` already say that, and a POST per object was a fifth of
the watcher's CPU in a burst.
- **delete** (kopf `on.delete`, behind the finalizer `pystol.org/abort-job`): abort the
  job (`request_cancel`: a queued job is cancelled, a running one reverts), wait until
  it is terminal, and only then let kopf remove the finalizer, so the fault is gone
  before the object is.

The watcher does not trust a status it did not write: whoever may edit an object's
status subresource may write any `status.jobId` into it. Wherever the watcher reads it
(resume, follow, abort on delete) the job must be the object's own (`owns_job`: its
record's actor has the object's uid); otherwise it is ignored (not followed, copied or
aborted: the object's own jobs are found by their idempotency keys instead) and reported
with a warning log, an Event `ForeignJobId` and the condition `JobIdTrusted=False`.
`status.scheduleId` is never read: a schedule's id follows from the object.

A spec edited after its job was queued is not run again (a PystolAction runs once,
like a Job); the watcher says so in an Event.

A `PystolSchedule` is stored in the schedule store as `cr.<namespace>.<name>` (a
`PystolClusterSchedule` as `cr-cluster.<name>`), created or replaced on every spec
change as the object's identity (so its runs act with the object's scope; deleted with
the object, while the jobs it started run to their end). A kopf timer refreshes its status
(next run, recent runs) and puts the store back in line when someone changed or deleted
the entry behind the watcher's back: the object is the source of truth. An invalid or
refused spec stops the schedule and says why.

kopf brings list+watch with resume, retries with backoff, finalizers, status patches,
Events, the liveness endpoint and peering: with `--peering NAME` (the default) several
watchers share a (Cluster)KopfPeering object and only the one with the highest
priority acts; `--standalone` turns peering off. The watcher logs in to the API server
with `PYSTOL_KUBECONFIG` (or in-cluster config, then ~/.kube/config), as every other
Pystol client does, not with kopf's own guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from pystol_api.crds import crd_dir
from pystol_api.watcher import experiment_handlers
from pystol_api.watcher.cr_mapping import (
    GROUP,
    LEGACY_ROLES,
    TERMINAL_PHASES,
    VERSION,
    CrInvalid,
    action_job_spec,
    action_status,
    denied_message,
    foreign_job_condition,
    policy_message,
    problems_message,
    refused_status,
    rfc3339,
    schedule_cr_path,
    schedule_invalid,
    schedule_refused_status,
    schedule_spec_from_cr,
    schedule_status,
)
from pystol_api.watcher.kinds import (
    ACTION_KINDS,
    EXPERIMENT_KINDS,
    PYSTOL_ACTION,
    PYSTOL_SCHEDULE,
    SCHEDULE_KINDS,
    CrKind,
    cr_identity,
    in_own_namespace,
    owns_job,
    submitter_of,
)
from pystol_worker.actions.registry import ActionRegistry, default_registry
from pystol_worker.core.access import AccessDenied, Actor, Identity
from pystol_worker.core.model import EventKind, JobRecord, JobStatus, Source
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.service import ExperimentService
from pystol_worker.jobs.submission import (
    ChaosHalted,
    IdempotencyConflict,
    JobInvalid,
    PolicyRefused,
    QueueUnavailable,
    SubmissionService,
)
from pystol_worker.process.celery_app import CeleryJobQueue
from pystol_worker.schedules import ScheduleNotFound, ScheduleStore
from pystol_worker.store.job_store import (
    TIMELINE_CHANNEL,
    JobNotFound,
    JobStore,
    TransitionRefused,
)
from pystol_worker.store.redis_connection import async_client_for, parse_redis_url, redis_client

if TYPE_CHECKING:
    import kopf
    from kubernetes.client import ApiClient

log = logging.getLogger("pystol.watcher")

FINALIZER = "pystol.org/abort-job"
ANNOTATIONS_PREFIX = "pystol.org"
FOLLOW_POLL_SECONDS = 30.0      # the mirror re-reads every followed job this often
MAX_RECENT = 10_000            # jobs remembered as changed before being followed, at most
RECENT_SECONDS = 60.0           # how long a change to a job not (yet) followed is remembered
DELETE_WAIT_SECONDS = 30.0      # one attempt of the delete handler waits this long
SCHEDULE_STATUS_SECONDS = 10.0  # PystolSchedule status refresh and drift repair
PEERING_KINDS = {True: ("clusterkopfpeerings", "ClusterKopfPeering"),
                 False: ("kopfpeerings", "KopfPeering")}


def idempotency_key(uid: str, generation: int | None, kind: CrKind = PYSTOL_ACTION) -> str:
    return f"{kind.key_prefix}:{uid}:{generation or 1}"


# -- the job store side ---------------------------------------------------------------------------


class JobFollower:
    """One Redis pattern subscription to every job timeline, waking whoever waits for a job.

    Handlers register an asyncio.Event per job; a message on `pystol:timeline:<id>` sets
    the events of that job and is passed to every listener (the `StatusMirror`) as
    (job id, payload). On a lost connection every waiter is woken and every listener
    told (job id None): they re-read.
    """

    def __init__(self, redis_url: str, sentinel_master: str = "") -> None:
        self.redis_url = redis_url
        self.sentinel_master = sentinel_master
        self.listeners: list[Callable[[str | None, Any], None]] = []
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def waiter(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        return event

    def release(self, job_id: str, event: asyncio.Event) -> None:
        waiting = self._waiters.get(job_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._waiters[job_id]

    def _wake(self, job_id: str | None = None, payload: Any = None) -> None:
        groups = [self._waiters.get(job_id, set())] if job_id else list(self._waiters.values())
        for group in groups:
            for event in group:
                event.set()
        for listener in self.listeners:
            listener(job_id, payload)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="pystol job follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pump(self) -> None:
        delay = 0.5
        while True:
            client = async_client_for(parse_redis_url(self.redis_url, self.sentinel_master))
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(TIMELINE_CHANNEL + ":*")
                delay = 0.5
                self._wake()  # anything may have happened while not subscribed
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None or message.get("type") != "pmessage":
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    self._wake(channel.rsplit(":", 1)[-1], message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # redis down: waiters fall back to polling
                log.warning("job timeline subscription lost (%s); retrying in %.1fs", error,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()


# Timeline events that change nothing a PystolAction's status shows: the job being stored
# queued (the handler writes that status itself) and the watcher's own note on it.
QUIET_KINDS = frozenset({EventKind.QUEUED.value, EventKind.CUSTOM_RESOURCE.value})


def _quiet(payload: Any) -> bool:
    """Whether a timeline message cannot change a followed status (unreadable: it can)."""
    if payload is None:
        return False
    try:
        kind = json.loads(payload).get("kind")
    except (ValueError, TypeError, AttributeError):
        return False
    return kind in QUIET_KINDS


@dataclass
class _Followed:
    """A PystolAction (or PystolClusterAction) whose job has not ended, as the mirror
    knows it: where to patch, the status it last wrote, and the context of the handler
    that queued the job (kopf's event queue lives in a context variable there)."""

    kind: CrKind
    namespace: str | None
    name: str
    reference: dict[str, Any]
    status: dict[str, Any]
    context: contextvars.Context


class StatusMirror:
    """One job-status follower for the whole watcher, instead of a kopf daemon per object.

    A daemon per object cost a kopf task, a Redis read and a subscription waiter for every
    PystolAction (~2 ms of watcher CPU each in a burst). Here the handler that queued a job
    registers (job id -> object) with `follow`; the `JobFollower`'s single pattern
    subscription tells the mirror which job changed (`changed`), and one task re-reads
    only those jobs and patches the status of their objects, at most `concurrency` at a
    time. Messages that change nothing a status shows (`QUIET_KINDS`) cost no read.

    Nothing is missed between queueing and `follow`: a change to a job not followed yet
    is remembered for `RECENT_SECONDS` and marks it at once when it is followed. A lost
    subscription marks every followed job (the follower says so on reconnecting), and
    every `poll_seconds` all are re-read anyway.

    The mirror never reads `status.jobId`: it follows the job ids the handlers found to
    be the object's own (queued by it, or `owns_job`), and writes that job's id back.

    With peering, a watcher that pauses keeps mirroring the jobs it queued (it writes
    only what their records say, as the active one would); the active watcher follows
    the others from its own `on.resume` of each object.
    """

    def __init__(self, poll_seconds: float = FOLLOW_POLL_SECONDS, concurrency: int = 8
                 ) -> None:
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self._followed: dict[str, _Followed] = {}
        self._dirty: set[str] = set()
        # Jobs changed while nobody followed them, oldest first; bounded (a pod that can
        # PUBLISH on the timeline channels can invent job ids at any rate).
        self._recent: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- registration (handler threads) and messages (the event loop) --------------------------

    def follow(self, kind: CrKind, body: Any, job_id: str, status: Mapping[str, Any],
               check: bool = False) -> None:
        """Keep the object's status in line with `job_id` until the job ends. `status` is
        what the object shows now; check: re-read the job at once (it may have moved while
        nobody followed it, e.g. across a watcher restart)."""
        meta = body.get("metadata") or {}
        namespace, name = _names(kind, body)
        reference = {"apiVersion": body.get("apiVersion") or f"{GROUP}/{VERSION}",
                     "kind": kind.kind,
                     "metadata": {"name": name, "namespace": namespace, "uid": meta.get("uid")}}
        entry = _Followed(kind, namespace, str(name), reference, _plain(status),
                          contextvars.copy_context())
        with self._lock:
            self._followed[job_id] = entry
            changed_meanwhile = self._recent.pop(job_id, None) is not None
            if check or changed_meanwhile:
                self._dirty.add(job_id)
        if check or changed_meanwhile:
            self._poke()

    def unfollow(self, job_id: str) -> None:
        with self._lock:
            self._followed.pop(job_id, None)
            self._dirty.discard(job_id)

    def following(self) -> set[str]:
        with self._lock:
            return set(self._followed)

    def changed(self, job_id: str | None, payload: Any = None) -> None:
        """A timeline message for `job_id` (None: the subscription was re-established and
        anything may have changed)."""
        if job_id is not None and _quiet(payload):
            return
        now = time.monotonic()
        with self._lock:
            if job_id is None:
                self._dirty.update(self._followed)
            elif job_id in self._followed:
                self._dirty.add(job_id)
            else:
                self._recent[job_id] = now
                self._recent.move_to_end(job_id)
                while self._recent and (len(self._recent) > MAX_RECENT
                                        or now - next(iter(self._recent.values()))
                                        >= RECENT_SECONDS):
                    self._recent.popitem(last=False)
                return
        self._poke()

    def _poke(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return  # not running (tests drive `refresh_dirty`)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wakeup.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: watcher exiting
                loop.call_soon_threadsafe(wakeup.set)

    def take_dirty(self) -> list[str]:
        with self._lock:
            dirty, self._dirty = list(self._dirty), set()
        return dirty

    # -- refreshing --------------------------------------------------------------------------------

    def refresh(self, ctx: WatcherContext, job_id: str) -> None:
        """Bring one followed object's status in line with its job (in a worker thread);
        stop following when the job has ended or the object is gone."""
        with self._lock:
            entry = self._followed.get(job_id)
        if entry is None:
            return
        where = entry.kind.where(entry.namespace, entry.name)
        try:
            try:
                record = ctx.store.get(job_id, with_timeline=False)
            except JobNotFound:
                message = f"job {job_id} is not in the job store any more"
                if ctx.patch_status(entry.kind.plural, entry.namespace, entry.name,
                                    {"phase": "Failed", "message": message}):
                    entry.context.run(_event, entry.reference, "JobLost", message, True)
                self.unfollow(job_id)
                return
            new = action_status(record, entry.status.get("observedGeneration"),
                                entry.status.get("conditions"))
            if _status_changed(entry.status, new):
                if not ctx.patch_status(entry.kind.plural, entry.namespace, entry.name, new):
                    self.unfollow(job_id)  # the object is gone
                    return
                entry.status = new
        except Exception as error:  # Redis or the API server: the next message or poll retries
            log.warning("%s: cannot mirror job %s into its status: %s", where, job_id, error)
            return
        if record.status.terminal:
            log.info("job %s of %s ended %s", job_id, where, record.status.value)
            entry.context.run(_event, entry.reference, f"Job{new['phase']}", new["message"],
                              record.status in (JobStatus.FAILED, JobStatus.ABORTED))
            self.unfollow(job_id)

    def refresh_dirty(self, ctx: WatcherContext) -> None:
        """Refresh every marked job, one after the other (what the task does, for tests)."""
        for job_id in self.take_dirty():
            self.refresh(ctx, job_id)

    async def start(self, ctx: WatcherContext) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(ctx), name="pystol status mirror")
        self._wakeup.set()  # whatever was followed before the loop ran

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._loop = self._wakeup = None

    async def _run(self, ctx: WatcherContext) -> None:
        assert self._loop is not None and self._wakeup is not None
        loop, wakeup = self._loop, self._wakeup
        limit = asyncio.Semaphore(self.concurrency)

        async def one(job_id: str) -> None:
            async with limit:
                await asyncio.to_thread(self.refresh, ctx, job_id)

        next_poll = loop.time() + self.poll_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), max(0.0, next_poll - loop.time()))
            wakeup.clear()
            if loop.time() >= next_poll:
                next_poll = loop.time() + self.poll_seconds
                with self._lock:
                    self._dirty.update(self._followed)
            batch = self.take_dirty()
            for outcome in await asyncio.gather(*(one(job_id) for job_id in batch),
                                                return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.warning("status mirror: %s", outcome)


@dataclass
class WatcherContext:
    """Everything the handlers share; built once per `pystol watch` process."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    submissions: SubmissionService
    registry: ActionRegistry
    follower: JobFollower
    api_client_factory: Callable[[], ApiClient]
    queued: int = 0
    mirror: StatusMirror = field(default_factory=StatusMirror)
    http_sessions: list[Any] = field(default_factory=list)
    _api_client: ApiClient | None = field(default=None, repr=False)
    _schedules: ScheduleStore | None = field(default=None, repr=False)
    _experiments: ExperimentService | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.follower.listeners.append(self.mirror.changed)

    @classmethod
    def create(cls, settings: Settings) -> WatcherContext:
        from pystol_worker.kube.cluster_access import load_api_client

        client = redis_client(settings)
        store = JobStore(client, retention_seconds=settings.job_retention_seconds)
        registry = default_registry()
        submissions = SubmissionService.from_settings(settings, client, CeleryJobQueue(settings),
                                                      registry, store=store)
        return cls(settings=settings, redis=client, store=store, submissions=submissions,
                   registry=registry,
                   follower=JobFollower(settings.redis_url, settings.redis_sentinel_master),
                   api_client_factory=lambda: load_api_client(settings.kubeconfig))

    def audit(self, actor: Actor, operation: str, **fields: Any) -> None:
        """One audit record for a change the watcher makes on a custom resource's behalf
        (jobs it submits are recorded by the submission service)."""
        if self.submissions.audit is not None:
            self.submissions.audit.record(actor, operation, **fields)

    def schedule_store(self) -> ScheduleStore:
        """The schedule store, under the same admin policy as the submission service."""
        with self._lock:
            if self._schedules is None:
                self._schedules = ScheduleStore(self.redis, self.settings,
                                                registry=self.registry,
                                                policy=self.submissions.policy)
            return self._schedules

    def experiments(self) -> ExperimentService:
        """The experiment service (PystolExperiments), built on first use."""
        from pystol_api.watcher.experiment_handlers import build_service

        with self._lock:
            if self._experiments is None:
                self._experiments = build_service(self)
            return self._experiments

    # -- Kubernetes, for what kopf does not do for us ---------------------------------------------

    def api_client(self) -> ApiClient:
        with self._lock:
            if self._api_client is None:
                self._api_client = self.api_client_factory()
            return self._api_client

    def patch_status(self, plural: str, namespace: str | None, name: str,
                     status: Mapping[str, Any]) -> bool:
        """Merge-patch an object's status subresource (namespace None: a cluster-scoped
        object); False when the object is gone."""
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.rest import ApiException

        api = CustomObjectsApi(self.api_client())
        body = {"status": dict(status)}
        try:
            if namespace is None:
                api.patch_cluster_custom_object_status(
                    GROUP, VERSION, plural, name, body,
                    _content_type="application/merge-patch+json")
            else:
                api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, body,
                    _content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def first_node_address(self) -> str | None:
        """The first node's InternalIP: what the original pingtest pinged."""
        from kubernetes.client import CoreV1Api

        try:
            nodes = CoreV1Api(self.api_client()).list_node(limit=50).items or []
        except Exception as error:  # e.g. no RBAC to list nodes: the spec must give a URL
            log.warning("cannot list nodes for a pingtest's default URL: %s", error)
            return None
        for node in nodes:
            for address in (node.status.addresses if node.status else None) or ():
                if address.type == "InternalIP" and address.address:
                    return str(address.address)
        return None


# -- PystolAction and PystolClusterAction handlers ------------------------------------------------


def _plain(value: Any) -> Any:
    """A deep copy of a kopf body view as plain dicts and lists.

    Iterative, not recursive: a custom resource may nest its spec hundreds of levels deep
    (anyone who may create one chooses), and a RecursionError here would crash the handler
    and have kopf retry it forever instead of the spec ending `Failed`."""
    def fresh(item: Any) -> Any:
        if isinstance(item, Mapping):
            return {}
        if isinstance(item, list):
            return []
        return item

    root = fresh(value)
    pending: list[tuple[Any, Any]] = [(value, root)]
    while pending:
        source, copy = pending.pop()
        if isinstance(source, Mapping):
            for key, item in source.items():
                copy[key] = fresh(item)
                if isinstance(item, (Mapping, list)):
                    pending.append((item, copy[key]))
        elif isinstance(source, list):
            for item in source:
                copy.append(fresh(item))
                if isinstance(item, (Mapping, list)):
                    pending.append((item, copy[-1]))
    return root


def _event(body: Any, reason: str, message: str, warning: bool = False) -> None:
    import kopf

    kopf.event(body, type="Warning" if warning else "Normal", reason=reason,
               message=message[:1024])


def _names(kind: CrKind, body: Any) -> tuple[str | None, str | None]:
    """(namespace, name) of the object; namespace None for a cluster-scoped kind."""
    meta = body.get("metadata") or {}
    return (meta.get("namespace") if kind.namespaced else None), meta.get("name")


def _with_condition(status: Any, condition: Mapping[str, Any] | None) -> None:
    """Add (or replace) one condition in a status being written."""
    if condition is None:
        return
    kept = [c for c in status.get("conditions") or () if c.get("type") != condition["type"]]
    status["conditions"] = [*kept, dict(condition)]


def _report_foreign(kind: CrKind, body: Any, job_id: str, doing: str) -> dict[str, Any]:
    """Say that `status.jobId` names a job this object did not create; the condition."""
    meta = body.get("metadata") or {}
    where = kind.where(*_names(kind, body))
    log.warning("%s: status.jobId names job %s, which it did not create (ForeignJobId): "
                "ignoring it, %s", where, job_id, doing)
    _event(body, "ForeignJobId", f"status.jobId names job {job_id}, which this object did "
           f"not create: ignored ({doing})", warning=True)
    return foreign_job_condition(job_id, where, meta.get("generation"))


def _status_job(ctx: WatcherContext, kind: CrKind, body: Any, doing: str
                ) -> tuple[str | None, dict[str, Any] | None]:
    """The job `status.jobId` names, when the object created it: (job id, None). When it
    names another's job: (None, the condition to show) after reporting it. A job no longer
    in the store cannot be checked, or harmed: its id is returned as it is."""
    job_id = (body.get("status") or {}).get("jobId")
    if not job_id:
        return None, None
    job_id = str(job_id)
    try:
        record = ctx.store.get(job_id, with_timeline=False)
    except JobNotFound:
        return job_id, None
    if owns_job(kind, body.get("metadata") or {}, record):
        return job_id, None
    return None, _report_foreign(kind, body, job_id, doing)


def _own_jobs(ctx: WatcherContext, kind: CrKind, body: Any) -> list[str]:
    """The jobs this object queued, found by the idempotency keys of its generations
    (oldest first): what the job store says, whatever its status says."""
    meta = body.get("metadata") or {}
    submitter = submitter_of(*_names(kind, body))
    found = []
    for generation in range(1, int(meta.get("generation") or 1) + 1):
        key = idempotency_key(str(meta.get("uid")), generation, kind)
        record = ctx.store.find_by_idempotency_key(submitter, key)
        if record is not None:
            found.append(record.id)
    return found


def reconcile_action(ctx: WatcherContext, body: Any, patch: Any, cause: str,
                     kind: CrKind = PYSTOL_ACTION) -> None:
    """Queue the object's job once per generation, or say in its status why not."""
    import kopf

    meta, status = body.get("metadata") or {}, body.get("status") or {}
    namespace, name = _names(kind, body)
    uid, generation = meta.get("uid"), meta.get("generation")
    where = kind.where(namespace, name)
    try:
        job_id, foreign = _status_job(ctx, kind, body, f"on {cause}")
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the job store (PYSTOL_REDIS_URL) is unavailable: {error}",
                                  delay=5) from error
    if job_id:  # a job was queued for it: a PystolAction runs once, like a Job
        if status.get("observedGeneration") != generation:
            message = (f"spec changed (generation {generation}) after job {job_id} "
                       "was queued; a PystolAction runs once: create a new one to run again")
            log.info("%s: %s", where, message)
            _event(body, "SpecChangeIgnored", message, warning=True)
            patch.status["observedGeneration"] = generation
        if status.get("phase") not in TERMINAL_PHASES:  # e.g. resumed: follow it again
            ctx.mirror.follow(kind, body, job_id, {**_plain(status), **_plain(patch.status)},
                              check=True)
        return
    if foreign is not None:
        status = {}  # written by someone else: nothing in it is the watcher's
    elif status.get("observedGeneration") == generation and status.get("phase"):
        return  # this generation was handled: queued (the mirror follows it) or refused
    identity = cr_identity(kind, meta)
    key = idempotency_key(str(uid), generation, kind)
    outcome = _StatusDraft()
    try:
        _queue(ctx, kind, body, outcome, status, generation, identity, key)
    except BaseException:
        _with_condition(outcome.status, foreign)
        patch.status.update(outcome.status)
        raise
    _with_condition(outcome.status, foreign)
    job_id = outcome.status.get("jobId")
    if not job_id or outcome.status.get("phase") in TERMINAL_PHASES:
        patch.status.update(outcome.status)  # refused, or ended already: kopf writes it
        return
    # A job to follow: its first status is written here, before the mirror may write its
    # next one, not by kopf's PATCH after this handler returns, which could land after
    # the mirror's (a fast job's Succeeded) and put Pending back for good.
    if ctx.patch_status(kind.plural, namespace, str(name), outcome.status):
        ctx.mirror.follow(kind, body, str(job_id), outcome.status)


@dataclass
class _StatusDraft:
    """Where `_queue` puts the status it decided on (it writes `.status` like a kopf
    Patch), so that `reconcile_action` chooses who writes it."""

    status: dict[str, Any] = field(default_factory=dict)


def _queue(ctx: WatcherContext, kind: CrKind, body: Any, patch: Any,
           status: Mapping[str, Any], generation: int | None, identity: Identity,
           key: str) -> None:
    import kopf

    namespace, name = _names(kind, body)
    where = kind.where(namespace, name)
    try:
        record = ctx.store.find_by_idempotency_key(identity.actor.submitter, key)
        created = False
        if record is None:
            submitted = _submit(ctx, kind, body, patch, status, generation, identity, key)
            if submitted is None:
                return
            record, created = submitted
        # Created: the service queued it. Found again: queue it only if nobody sent it.
        sent = created or ctx.submissions.adopt(record)
        if created:
            ctx.store.append_event(record.id, EventKind.CUSTOM_RESOURCE, f"from {where}",
                                   {"kind": kind.kind, "namespace": namespace, "name": name,
                                    "uid": identity.actor.uid, "generation": generation})
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the job store (PYSTOL_REDIS_URL) is unavailable: {error}",
                                  delay=5) from error
    except QueueUnavailable as refused:  # the job was marked failed and its key released
        failure = refused.cause
        raise kopf.TemporaryError(f"could not queue the job: {type(failure).__name__}: "
                                  f"{failure}", delay=5) from refused
    except Exception as error:
        raise kopf.TemporaryError(f"could not queue the job: {type(error).__name__}: {error}",
                                  delay=5) from error
    if sent:
        ctx.queued += 1
        # No Event: status (jobId, the Accepted condition) says it; see the module docstring.
        log.info("queued job %s for %s (%s%s)", record.id, where, record.spec.action,
                 "" if created else ", found stored by an earlier watcher")
    else:
        log.info("%s: job %s already queued (%s)", where, record.id, record.status.value)
    patch.status.update(action_status(record, generation, status.get("conditions")))


def _scope_hint(kind: CrKind, namespace: str | None) -> str | None:
    if not kind.namespaced:
        return None
    return (f"a {kind.kind} acts only in its own namespace, {namespace}; node-level and "
            "cluster-wide chaos is for PystolClusterActions, which only cluster admins can "
            "create")


def _submit(ctx: WatcherContext, kind: CrKind, body: Any, patch: Any,
            status: Mapping[str, Any], generation: int | None, identity: Identity, key: str
            ) -> tuple[JobRecord, bool] | None:
    """Map the object's spec and submit it as the object; (record, created), or None after
    refusing it in its status (a spec that cannot be mapped or validated, outside the
    object's scope, refused by the admin policy, or chaos halted)."""
    namespace, _ = _names(kind, body)
    spec = _plain(body.get("spec") or {})
    try:
        mapped = action_job_spec(spec, node_address=ctx.first_node_address)
    except CrInvalid as invalid:
        action = spec.get("action") if isinstance(spec, Mapping) else None
        if action is None and isinstance(spec, Mapping):
            role = spec.get("role")
            action = LEGACY_ROLES.get(role) if isinstance(role, str) else None
        _refuse(kind, body, patch, status, generation, "InvalidSpec",
                problems_message(invalid), action)
        return None
    job_spec = mapped.spec.model_copy(update={"idempotency_key": key})
    if namespace is not None:
        job_spec = in_own_namespace(job_spec, namespace, ctx.registry)
    action_name = mapped.spec.action
    try:
        return ctx.submissions.submit(job_spec, Source.CR, identity)
    except JobInvalid as invalid:  # field paths as the object spells them
        _refuse(kind, body, patch, status, generation, "InvalidSpec",
                problems_message(mapped.invalid(invalid)), action_name)
    except AccessDenied as denied:
        _refuse(kind, body, patch, status, generation, "Forbidden",
                denied_message(denied, mapped.cr_path, _scope_hint(kind, namespace)),
                action_name)
    except PolicyRefused as refused:
        _refuse(kind, body, patch, status, generation, "PolicyRefused",
                policy_message(refused, mapped.cr_path), action_name)
    except ChaosHalted as halted:
        _refuse(kind, body, patch, status, generation, "ChaosHalted", f"refused: {halted}",
                action_name)
    except IdempotencyConflict as conflict:  # stored meanwhile with another mapping
        return ctx.store.get(conflict.job_id, with_timeline=False), False
    return None


def _refuse(kind: CrKind, body: Any, patch: Any, status: Mapping[str, Any],
            generation: int | None, reason: str, message: str, action: Any) -> None:
    log.warning("%s: %s", kind.where(*_names(kind, body)), message)
    _event(body, reason, message, warning=True)
    patch.status.update(refused_status(reason, message, generation,
                                       action if isinstance(action, str) else None,
                                       status.get("conditions")))


async def _wait_for_change(ctx: WatcherContext, job_id: str, timeout: float) -> None:
    event = ctx.follower.waiter(job_id)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
    finally:
        ctx.follower.release(job_id, event)


def _status_changed(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(current.get(key) != new.get(key)
               for key in ("phase", "message", "startedAt", "finishedAt", "result", "jobId"))


def _jobs_of(ctx: WatcherContext, kind: CrKind, body: Any
             ) -> tuple[list[str], dict[str, Any] | None]:
    """The job ids this object queued: its status, when the job there is its own, or
    (when the status patch was lost, or names another's job) the idempotency keys of its
    generations; and the condition reporting a foreign id, if any."""
    job_id, foreign = _status_job(ctx, kind, body, "not aborting it")
    if job_id:
        return [job_id], None
    return _own_jobs(ctx, kind, body), foreign


async def abort_action(ctx: WatcherContext, body: Any, patch: Any,
                       kind: CrKind = PYSTOL_ACTION) -> None:
    """Before the object goes: abort its job and wait until the job has ended (reverted)."""
    import kopf

    meta, status = body.get("metadata") or {}, body.get("status") or {}
    where = kind.where(*_names(kind, body))
    try:
        job_ids, foreign = await asyncio.to_thread(_jobs_of, ctx, kind, body)
        if foreign is not None:
            status = {"observedGeneration": meta.get("generation")}
        for job_id in job_ids:
            try:
                record = await asyncio.to_thread(ctx.store.get, job_id, False)
            except JobNotFound:
                log.warning("%s: job %s is gone from the job store; nothing to abort", where,
                            job_id)
                continue
            if not record.status.terminal and not record.cancel_requested:
                with contextlib.suppress(TransitionRefused):
                    record = await asyncio.to_thread(ctx.store.request_cancel, job_id,
                                                     f"deletion of {where}")
                    await asyncio.to_thread(ctx.audit, cr_identity(kind, meta).actor,
                                            "job.cancel", targets=[job_id], job_id=job_id,
                                            namespaces=record.spec.target.namespaces,
                                            detail=f"deletion of {where}")
                log.info("%s is being deleted: %s job %s", where,
                         "cancelled" if record.status.terminal else "aborting", job_id)
                how = "cancelled" if record.status.terminal else "aborting"
                _event(body, "Aborting", f"deleted: {how} job {job_id}; the object goes "
                       "once the job has ended")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DELETE_WAIT_SECONDS
            while not record.status.terminal and loop.time() < deadline:
                await _wait_for_change(ctx, job_id, min(2.0, deadline - loop.time()))
                record = await asyncio.to_thread(ctx.store.get, job_id, False)
            if not record.status.terminal:
                raise kopf.TemporaryError(f"job {job_id} is still {record.status.value}: "
                                          "waiting for it to revert and end", delay=1)
            log.info("%s: job %s ended %s; releasing the finalizer", where, job_id,
                     record.status.value)
            patch.status.update(action_status(record, status.get("observedGeneration"),
                                              status.get("conditions")))
        _with_condition(patch.status, foreign)
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the job store is unavailable: {error}", delay=5) from error


# -- PystolSchedule and PystolClusterSchedule handlers --------------------------------------------


def schedule_id_of(kind: CrKind, namespace: str | None, name: str | None,
                   uid: str | None) -> str:
    """`cr.<namespace>.<name>` (namespaces have no dots), `cr-cluster.<name>` for a
    cluster-scoped object, or `cr.<uid>` when too long."""
    readable = f"cr.{namespace}.{name}" if kind.namespaced else f"cr-cluster.{name}"
    return readable if len(readable) <= 150 else f"cr.{uid}"


def _schedule_id(kind: CrKind, body: Any) -> str:
    """The object's schedule id, from its metadata: never its status, which others may
    write (a `status.scheduleId` naming another's schedule must not make the watcher
    delete or show that one)."""
    namespace, name = _names(kind, body)
    return schedule_id_of(kind, namespace, name, (body.get("metadata") or {}).get("uid"))


def _schedule_refused(kind: CrKind, body: Any, patch: Any, reason: str, message: str) -> None:
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    log.warning("%s: %s", kind.where(*_names(kind, body)), message)
    _event(body, reason, message, warning=True)
    patch.status.update(schedule_refused_status(message, meta.get("generation"),
                                                status.get("conditions"), reason=reason))


def sync_schedule(ctx: WatcherContext, body: Any, patch: Any, cause: str,
                  kind: CrKind = PYSTOL_SCHEDULE) -> None:
    """Create or replace the schedule-store entry that mirrors the object, as the object
    (its runs then act with the object's scope)."""
    import kopf

    meta, status = body.get("metadata") or {}, body.get("status") or {}
    namespace, name = _names(kind, body)
    identity = cr_identity(kind, meta)
    schedule_id = _schedule_id(kind, body)
    store = ctx.schedule_store()
    try:
        refusal: tuple[str, str] | None = None
        # Read before anything can fail: a refused change of an existing schedule is an
        # update in the audit trail, not a create.
        existed = store.exists(schedule_id)
        try:
            spec = schedule_spec_from_cr(_plain(body.get("spec") or {}))
            if namespace is not None and spec.template is not None:
                spec = spec.model_copy(update={"template": in_own_namespace(
                    spec.template, namespace, ctx.registry)})
            if cause == "timer":  # reconcile: the store may have drifted (API edits, deletes)
                with contextlib.suppress(ScheduleNotFound):
                    stored = store.get(schedule_id)
                    changer = stored.changed_by
                    if stored.spec == spec and changer is not None \
                            and changer.uid == identity.actor.uid:
                        return
            record = store.create(spec, Source.CR, identity, schedule_id=schedule_id)
            ctx.audit(identity.actor, "schedule.update" if existed else "schedule.create",
                      targets=[schedule_id], schedule_id=schedule_id,
                      namespaces=record.namespaces)
        except (CrInvalid, JobInvalid) as error:
            invalid = error if isinstance(error, CrInvalid) else schedule_invalid(error)
            refusal = ("InvalidSpec", problems_message(invalid))
        except AccessDenied as denied:
            refusal = ("Forbidden", denied_message(denied, schedule_cr_path,
                                                   _scope_hint(kind, namespace)))
        except PolicyRefused as refused:
            refusal = ("PolicyRefused", policy_message(refused, schedule_cr_path))
        if refusal is not None:
            ctx.audit(identity.actor, "schedule.update" if existed else "schedule.create",
                      outcome="refused" if refusal[0] != "InvalidSpec" else "invalid",
                      targets=[schedule_id], schedule_id=schedule_id, detail=refusal[1])
            # Stop firing the previous spec: the object now asks for something it may not.
            # That removal is a change of its own, audited as one.
            with contextlib.suppress(ScheduleNotFound, AccessDenied):
                store.delete(schedule_id, identity)
                ctx.audit(identity.actor, "schedule.delete", targets=[schedule_id],
                          schedule_id=schedule_id, detail=f"its new spec was refused: "
                          f"{refusal[1]}")
            _schedule_refused(kind, body, patch, *refusal)
            return
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the schedule store (PYSTOL_REDIS_URL) is unavailable: "
                                  f"{error}", delay=5) from error
    log.info("%s schedule %s for %s: %s", "re-synced" if cause == "timer" else "stored",
             record.id, kind.where(namespace, name), record.spec.describe())
    _event(body, "Scheduled", f"schedule {record.id}: {record.spec.describe()}"
           + (f"; next run {rfc3339(record.next_run_at)}" if record.next_run_at else ""))
    patch.status.update(schedule_status(record, meta.get("generation"),
                                        status.get("conditions")))


def delete_schedule(ctx: WatcherContext, body: Any, kind: CrKind = PYSTOL_SCHEDULE) -> None:
    """The object is going: stop firing it. Jobs it started run to their end (revert)."""
    import kopf

    meta = body.get("metadata") or {}
    where = kind.where(*_names(kind, body))
    schedule_id = _schedule_id(kind, body)
    written = (body.get("status") or {}).get("scheduleId")
    if written and written != schedule_id:
        log.warning("%s: status.scheduleId names schedule %s, which is not its own (%s): "
                    "ignoring it", where, written, schedule_id)
        _event(body, "ForeignScheduleId", f"status.scheduleId names schedule {written}, "
               f"which is not this object's ({schedule_id}): ignored", warning=True)
    try:
        identity = cr_identity(kind, meta)
        ctx.schedule_store().delete(schedule_id, identity)
        ctx.audit(identity.actor, "schedule.delete", targets=[schedule_id],
                  schedule_id=schedule_id)
        log.info("deleted schedule %s of %s", schedule_id, where)
    except ScheduleNotFound:
        pass
    except AccessDenied as denied:  # changed behind the object's back to act elsewhere
        log.warning("%s: schedule %s is not deleted: %s", where, schedule_id, denied.detail)
        _event(body, "ScheduleKept", f"schedule {schedule_id} was not deleted: "
               f"{denied.detail}", warning=True)
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the schedule store is unavailable: {error}",
                                  delay=5) from error


def _without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in status.items() if k != "conditions"}
    data["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                          for c in status.get("conditions") or ()]
    return data


def refresh_schedule(ctx: WatcherContext, body: Any, patch: Any,
                     kind: CrKind = PYSTOL_SCHEDULE) -> None:
    """The timer: put the next run and recent runs in status; repair a drifted store."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    if status.get("phase") == "Failed" \
            or status.get("observedGeneration") != meta.get("generation"):
        return  # refused, or the create/update handler has not run for this generation
    sync_schedule(ctx, body, patch, "timer", kind)
    if patch.status:
        return
    try:
        record = ctx.schedule_store().get(_schedule_id(kind, body))
    except ScheduleNotFound:
        return
    new = schedule_status(record, status.get("observedGeneration"), status.get("conditions"))
    if _without_times(new) != _without_times(_plain(status)):
        patch.status.update(new)


# -- the operator ---------------------------------------------------------------------------------


def build_registry(ctx: WatcherContext, clusterwide: bool = True) -> kopf.OperatorRegistry:
    """The watcher's handlers. The cluster-scoped kinds are served only cluster-wide: a
    watcher confined to a namespace (`--namespace`) has neither their RBAC nor their
    peering."""
    import kopf

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.AiohttpSession:
        info = await asyncio.to_thread(lambda: connection_info(ctx.api_client()))
        return await http_session(ctx, info)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        await ctx.follower.start()
        await ctx.mirror.start(ctx)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await ctx.mirror.stop()
        await ctx.follower.stop()
        for session in ctx.http_sessions:
            await session.close()

    @kopf.on.probe(registry=registry, id="jobsQueued")
    def jobs_queued(**_: Any) -> int:
        return ctx.queued

    kinds = [kind for kind in (*ACTION_KINDS, *SCHEDULE_KINDS, *EXPERIMENT_KINDS)
             if clusterwide or kind.namespaced]
    for kind in kinds:
        if kind in ACTION_KINDS:
            _action_handlers(registry, ctx, kind)
        elif kind in EXPERIMENT_KINDS:
            experiment_handlers.register(registry, ctx, kind)
        else:
            _schedule_handlers(registry, ctx, kind)
    return registry


def _action_handlers(registry: kopf.OperatorRegistry, ctx: WatcherContext,
                     kind: CrKind) -> None:
    """A PystolAction's or PystolClusterAction's handlers: the same code for both."""
    import kopf

    plural = kind.plural

    @kopf.on.create(GROUP, VERSION, plural, registry=registry, id="queue", backoff=2)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        reconcile_action(ctx, body, patch, "create", kind)

    @kopf.on.resume(GROUP, VERSION, plural, registry=registry, id="resume", backoff=2)
    def resumed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        reconcile_action(ctx, body, patch, "resume", kind)

    @kopf.on.update(GROUP, VERSION, plural, registry=registry, id="requeue", field="spec",
                    backoff=2)
    def updated(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        reconcile_action(ctx, body, patch, "update", kind)

    # No daemon per object: the handlers hand the job to the shared `StatusMirror`.

    @kopf.on.delete(GROUP, VERSION, plural, registry=registry, id="abort", backoff=1)
    async def deleted(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await abort_action(ctx, body, patch, kind)


def _schedule_handlers(registry: kopf.OperatorRegistry, ctx: WatcherContext,
                       kind: CrKind) -> None:
    """A PystolSchedule's or PystolClusterSchedule's handlers: the same code for both."""
    import kopf

    plural = kind.plural

    @kopf.on.create(GROUP, VERSION, plural, registry=registry, id="schedule", backoff=5)
    @kopf.on.update(GROUP, VERSION, plural, registry=registry, id="reschedule",
                    field="spec", backoff=5)
    def changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        sync_schedule(ctx, body, patch, "change", kind)

    @kopf.on.delete(GROUP, VERSION, plural, registry=registry, id="unschedule", backoff=5)
    def deleted(body: kopf.Body, **_: Any) -> None:
        delete_schedule(ctx, body, kind)

    @kopf.timer(GROUP, VERSION, plural, registry=registry, id="refresh",
                interval=SCHEDULE_STATUS_SECONDS, initial_delay=SCHEDULE_STATUS_SECONDS / 3)
    def refresh(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        refresh_schedule(ctx, body, patch, kind)


def connection_info(api_client: ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials from a configured `kubernetes` client (as kopf's own
    login_via_client does, but from PYSTOL_KUBECONFIG instead of the client's defaults)."""
    import kopf

    config = api_client.configuration
    header = (config.get_api_key_with_prefix("BearerToken")
              or config.get_api_key_with_prefix("authorization"))
    parts = header.split(" ", 1) if header else []
    scheme, token = ((None, None) if not parts else (None, parts[0]) if len(parts) == 1
                     else (parts[0], parts[1]))
    return kopf.ConnectionInfo(
        server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
        username=config.username or None, password=config.password or None,
        scheme=scheme, token=token, certificate_path=config.cert_file,
        private_key_path=config.key_file)


async def http_session(ctx: WatcherContext, info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
    """kopf's HTTP session, with at most PYSTOL_KUBE_BURST connections to the API server.

    kopf's own session opens connections without limit: a burst of 1,000 new objects
    becomes hundreds of concurrent PATCHes on as many new TLS connections. Like every
    other Pystol client, the watcher bounds what it asks of the API server at once."""
    import aiohttp
    import kopf

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=ctx.settings.kube_burst,
                                       ssl=info.as_ssl_context()),
        headers=info.as_http_headers())
    ctx.http_sessions.append(session)
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                               aiohttp_session=session)


def operator_settings() -> kopf.OperatorSettings:
    """kopf's settings, each chosen for what it costs per object in a burst.

    What one new PystolAction costs with these (kopf 1.45): 3 watch events (ADDED, the
    finalizer, the status) and 3 PATCHes: the finalizer (kopf adds it and runs no
    handler in that cycle, so it is on the object before any job is queued: deletion
    must cancel the job), the handler's status (written by the handler itself, see
    `reconcile_action`), and kopf's diff-base annotation after the handler.

    - persistence: annotations, not status. A handler that succeeds at once leaves no
      progress record (kopf stores and purges it in the same patch), so progress costs
      nothing; the diff-base (the spec as last handled, for `on.update`) needs one
      metadata PATCH. Keeping both in `status.kopf` would drop that PATCH but needs
      `kopf` declared in every CRD's status schema (an API server prunes unknown status
      fields, and kopf would then see every object as new), and would let whoever may
      write the status subresource rewrite kopf's bookkeeping.
    - posting.level WARNING: only our Events (refusals, foreign job ids, a job's end) and
      kopf's warnings, not one "Handler succeeded" POST per object.
    - queueing: kopf 1.45 removed the time-based batching (`batch_window`), so an event is
      handled as soon as it arrives; one worker task per object, ended after
      `idle_timeout` (5 s) without events. No `worker_limit`: the API server is protected
      by the HTTP session's connection limit (`http_session`) and Redis by max_workers.
    - execution.max_workers 8: the sync handlers' threads. They wait on Redis round trips
      more than they compute; more threads only add GIL contention on a small machine.
    - persistence.consistency_timeout (default 5 s) only delays a handler when the
      object's own PATCH does not come back through the watch; it always does.
    - watching: long server-side watches (300 s) so that a quiet cluster costs no
      re-listing; nothing here is per event.
    """
    import kopf

    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATIONS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "pystol-watcher"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.execution.max_workers = 8
    return settings


def ensure_peering(ctx: WatcherContext, name: str, namespace: str | None) -> None:
    """Create the (Cluster)KopfPeering object kopf keeps its keep-alives in, if missing:
    without it a watcher with mandatory peering would stay paused forever."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.rest import ApiException

    plural, kind = PEERING_KINDS[namespace is None]
    body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
    api = CustomObjectsApi(ctx.api_client())
    try:
        if namespace is None:
            api.create_cluster_custom_object("kopf.dev", "v1", plural, body)
        else:
            api.create_namespaced_custom_object("kopf.dev", "v1", namespace, plural, body)
        log.info("created %s %r for peering", kind, name)
    except ApiException as error:
        if error.status == 409:
            return
        if error.status == 404:
            raise SystemExit(f"kopf's peering CRDs are not installed: `kubectl apply -f "
                             f"{crd_dir()}` (or run with --standalone)") from None
        log.warning("cannot create %s %r (%s %s); assuming it exists", kind, name,
                    error.status, error.reason)


def run_watcher(settings: Settings, namespace: str | None = None,
                peering: str | None = "pystol",
                liveness: str | None = "http://0.0.0.0:8081/healthz",
                priority: int | None = None) -> None:
    """Run the CR watcher until SIGTERM/SIGINT (`pystol watch`).

    namespace: watch one namespace (None: all, cluster-wide peering). peering: the
    peering object's name, None for standalone. priority: among peers the highest acts;
    by default a random one, so that two replicas never tie (a tie pauses both).
    """
    import kopf

    if not logging.getLogger().handlers:  # else `pystol watch` set up Pystol's JSON logs
        kopf.configure(verbose=False, log_prefix=True)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    ctx = WatcherContext.create(settings)
    if peering:
        ensure_peering(ctx, peering, namespace)
    if priority is None:
        priority = random.SystemRandom().randint(1, 2**31 - 1)
    log.info("pystol watch: %s, %s, liveness %s", f"namespace {namespace}" if namespace
             else "all namespaces", f"peering {peering!r} priority {priority}" if peering
             else "standalone", liveness or "off")
    kopf_settings = operator_settings()
    if namespace:
        # One exact namespace: kopf need not (and under the namespaced chart's RBAC may
        # not) list and watch Namespaces cluster-wide to find it. With scanning on it
        # retries that 403 for about a minute before it falls back to the name it was
        # given, and serves nothing meanwhile.
        kopf_settings.scanning.disabled = True
    kopf.run(registry=build_registry(ctx, clusterwide=namespace is None),
             settings=kopf_settings,
             standalone=peering is None, peering_name=peering or None,
             priority=priority if peering else None, liveness_endpoint=liveness or None,
             clusterwide=namespace is None, namespaces=[namespace] if namespace else ())
