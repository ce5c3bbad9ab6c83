"""Job records in Redis: the one place where the API, workers and watchers meet.

Layout (prefix `pystol:`):
- `job:{id}`            the record as JSON, without its timeline
- `job:{id}:timeline`   a list of timeline events, appended without rewriting the record
- `job:{id}:cancel`     set when someone asked to cancel a running job
- `job:{id}:release`    an experiment released the job's held fault (`run_signals`); read,
                        with the cancel flag, the halt and its run's `xrun:{run}:stop`, in
                        the one MGET of `stop_signals`
- `job:{id}:sent`       set once a job with an idempotency key was handed to the queue
- `jobs`                sorted set of every job id, scored by a submission sequence number
- `jobs:status:{s}`, `jobs:action:{a}`, `jobs:ns:{n}`   the same, per filter value
- `job-seq`             the sequence (so ties never happen and cursors stay stable)
- `idem:{submitter}:{key}`   idempotency key -> job id, expiring after 24 h
- `jobs:ended`          ended jobs scored by when they ended; each member names the job
                        and the index keys it is in (see Retention)

Listing is newest first by sequence number; a cursor is the last number seen, so
jobs added while someone pages never shift or repeat what they see. Status
changes are compare-and-set transactions (WATCH/MULTI), so a queued job that is
cancelled and started at the same instant ends up in exactly one state.

Retention: nothing a job leaves in Redis lives for ever. When a job reaches its terminal
status its record and timeline get an expiry of `retention_seconds` (PYSTOL_JOB_RETENTION_
SECONDS, 30 days by default) from when it ended, and it is entered in `jobs:ended`.
`prune_expired` (every worker's reaper pass) takes the ended jobs past the retention from
there and removes them from every index, so the indexes shrink with the records; an index
left empty is gone (Redis drops empty sorted sets), which is what bounds the per-namespace
and per-action keys too. Events are appended only to a timeline that exists (RPUSHX), so a
late event for an expired job leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from pystol_worker.core.access import Actor, Grant
from pystol_worker.core.model import (
    EventKind,
    JobRecord,
    JobSpec,
    JobStatus,
    Page,
    Source,
    TimelineEvent,
    utcnow,
)
from pystol_worker.store import metrics, run_signals
from pystol_worker.store.submit_script import Stored, SubmitAudit, SubmitKeys, SubmitScript

log = logging.getLogger("pystol.store")
MAX_WRITE_ATTEMPTS = 100  # compare-and-set retries of one record change

PREFIX = "pystol:"
IDEMPOTENCY_SECONDS = 24 * 3600
LEGACY_SENT_PREFIX = "pystol:cr:sent:"  # the watcher's sent mark before 0.2
IDEMPOTENCY_CLAIM_SECONDS = 2.0
TIMELINE_CHANNEL = PREFIX + "timeline"
HALT_KEY = PREFIX + "halt"
ENDED_KEY = PREFIX + "jobs:ended"
DEFAULT_RETENTION_SECONDS = 30 * 86400  # PYSTOL_JOB_RETENTION_SECONDS' default
PRUNE_BATCH = 500  # ended jobs forgotten per prune_expired call, to keep each pass short


Command = tuple[str | bytes | int | float, ...]
"""A Redis command (name, then its arguments) written together with a record change."""
Commands = list[Command]  # (inside JobStore, `list` is its listing method)

# The compare-and-set every record change goes through, in one round trip: the record is
# replaced only while it is still exactly what the caller read (ARGV[1]); otherwise the
# reply carries the current record, so the caller retries without reading it again.
# KEYS[1]: the record. ARGV[2]: the new record; ARGV[3]: its expiry in seconds ('' none);
# then commands written with it, each as its argument count followed by its arguments.
# `ZMOVE all from to member` moves a job between status indexes with its score in `all`.
# The other commands run with pcall: a metric that cannot be counted never undoes a
# status change (their failures are counted in the reply).
_WRITE_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1])
if not current then return {-1} end
if current ~= ARGV[1] then return {0, current} end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
local unpack = unpack or table.unpack
local failed = 0
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local args = {}
  for j = 1, n do args[j] = ARGV[i + j] end
  if args[1] == 'ZMOVE' then
    local seq = redis.call('ZSCORE', args[2], args[5]) or 0
    redis.call('ZREM', args[3], args[5])
    redis.call('ZADD', args[4], seq, args[5])
  else
    local reply = redis.pcall(unpack(args))
    if type(reply) == 'table' and reply.err then failed = failed + 1 end
  end
  i = i + n + 1
end
return {1, failed}
"""


class JobNotFound(KeyError):
    pass


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different job spec."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class JobStoreBusy(RuntimeError):
    """A compare-and-set write lost `MAX_WRITE_ATTEMPTS` times in a row."""


class TransitionRefused(Exception):
    """The job is not in a state that allows the change; the message says why."""


@dataclass(frozen=True)
class Written:
    """A record as written, and its JSON exactly as stored: what the next compare-and-set
    of the same writer expects (`JobStore.write(held=...)`), so it need not read it again."""

    record: JobRecord
    raw: str | bytes


def new_job_id() -> str:
    return "j-" + utcnow().strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)


def _spec_fingerprint(spec: JobSpec) -> str:
    data = spec.model_dump(mode="json", exclude={"idempotency_key"})
    return json.dumps(data, sort_keys=True)


class JobStore:
    def __init__(self, client: redis.Redis,
                 retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.redis = client
        self.retention_seconds = retention_seconds
        self._write_if_unchanged = client.register_script(_WRITE_IF_UNCHANGED)
        self._submit = SubmitScript(client)

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def _idempotency_key(submitter: str, key: str) -> str:
        return f"{PREFIX}idem:{submitter}:{key}"

    @staticmethod
    def _index_keys(record: JobRecord) -> list[str]:
        keys = [f"{PREFIX}jobs:action:{record.spec.action}"]
        keys += [f"{PREFIX}jobs:ns:{ns}" for ns in record.spec.target.namespaces]
        return keys

    # -- create and read -------------------------------------------------------------------------

    def create(self, spec: JobSpec, source: Source, submitter: str,
               schedule_id: str | None = None, *, actor: Actor | None = None,
               grant: Callable[[str], Grant] | None = None,
               not_before: datetime | None = None, refuse_when_halted: bool = False,
               audit: SubmitAudit | None = None) -> tuple[JobRecord, bool]:
        """Store a new queued job; returns (record, created). With an idempotency key already
        used in the last 24 h by this submitter, returns the earlier job and False.

        `grant(job_id)` gives the sealed grant the record carries (it covers the id, so it
        is made once the id is drawn); `not_before` marks a job that waits for a window.
        With `refuse_when_halted`, raises HaltedAtSubmit (and stores nothing) while the
        global halt is engaged, checked in the same script that stores the job;
        `audit.entry(job_id)` is an audit record that script appends once the job is stored
        (`audit.stored(entry_id)` is told its id).
        One round trip (`store/submit_script.py`), more only when the idempotency key is
        already taken."""
        job_id = new_job_id()
        idem_key = idem_value = None
        if spec.idempotency_key:
            idem_key = self._idempotency_key(submitter, spec.idempotency_key)
            idem_value = json.dumps({"id": job_id, "spec": _spec_fingerprint(spec)})
        while True:
            now = utcnow()
            record = JobRecord(id=job_id, spec=spec, source=source, submitter=submitter,
                               created_at=now, schedule_id=schedule_id, actor=actor,
                               grant=grant(job_id) if grant is not None else None,
                               not_before=not_before)
            event = TimelineEvent(at=now, kind=EventKind.QUEUED,
                                  message=f"submitted by {submitter} via {source.value}")
            key = self._key(job_id)
            outcome = self._submit.run(
                SubmitKeys(halt=HALT_KEY, seq=f"{PREFIX}job-seq", record=key,
                           timeline=key + ":timeline", jobs=f"{PREFIX}jobs",
                           status_index=f"{PREFIX}jobs:status:{record.status.value}",
                           counters=metrics.COUNTERS_KEY, idempotency=idem_key,
                           indexes=self._index_keys(record)),
                record=record.model_dump_json(exclude={"timeline"}),
                event=event.model_dump_json(), job_id=job_id,
                counter_field=metrics.submitted_field(record),
                idempotency_value=idem_value, idempotency_seconds=IDEMPOTENCY_SECONDS,
                audit=audit.entry(job_id) if audit is not None else None,
                refuse_when_halted=refuse_when_halted)
            if isinstance(outcome, Stored):
                record.timeline = [event]
                if audit is not None:
                    if not outcome.audit_id:  # the stream refused it; the job is stored
                        log.error("audit record of job %s not stored: the audit stream "
                                  "refused it", job_id)
                    audit.stored(outcome.audit_id)
                return record, True
            assert idem_key is not None and idem_value is not None
            earlier_raw = outcome.value
            earlier = json.loads(earlier_raw)
            if earlier.get("spec") != _spec_fingerprint(spec):
                raise IdempotencyConflict(earlier.get("id", ""))
            # The first submission may be between taking the key and storing its
            # record: give it a moment before deciding it died.
            deadline = time.monotonic() + IDEMPOTENCY_CLAIM_SECONDS
            while True:
                try:
                    return self.get(earlier["id"]), False
                except JobNotFound:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
            if not self._replace_if_unchanged(idem_key, earlier_raw, idem_value):
                return self.create(spec, source, submitter, schedule_id, actor=actor,
                                   grant=grant, not_before=not_before,
                                   refuse_when_halted=refuse_when_halted, audit=audit)
            idem_value = None  # the key is this job's now: store it without taking it again

    DEFERRED = PREFIX + "jobs:deferred"

    def defer(self, job_id: str, until: datetime) -> None:
        """Keep a stored job out of the queue until `until` (a chaos window opens)."""
        self.redis.zadd(self.DEFERRED, {job_id: until.timestamp()})

    def claim_due(self, now: float) -> list[str]:
        """Deferred jobs whose time has come, each returned to exactly one caller (the
        ZREM that removes it is the claim), so that two workers never queue one twice."""
        due = [raw.decode() if isinstance(raw, bytes) else str(raw)
               for raw in self.redis.zrangebyscore(self.DEFERRED, "-inf", now, start=0,
                                                   num=100)]
        return [job_id for job_id in due if self.redis.zrem(self.DEFERRED, job_id)]

    def _replace_if_unchanged(self, key: str, expected: bytes | str, value: str) -> bool:
        """Take over an idempotency key whose job never got stored, unless someone else
        already did (compare-and-set)."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                current = pipe.get(key)
                if current is not None and current != expected:
                    return False
                pipe.multi()
                pipe.set(key, value, ex=IDEMPOTENCY_SECONDS)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def release_idempotency_key(self, record: JobRecord) -> None:
        """Forget the record's idempotency key (its job could not be queued), so that a retry
        with the same key submits afresh instead of returning the failed job."""
        if not record.spec.idempotency_key:
            return
        key = self._idempotency_key(record.submitter, record.spec.idempotency_key)
        stored = self.redis.get(key)
        if stored is not None and json.loads(stored).get("id") == record.id:
            self.redis.delete(key)

    def find_by_idempotency_key(self, submitter: str, key: str) -> JobRecord | None:
        """The job this submitter stored under `key` in the last 24 h, without its timeline;
        None when there is none (or its record is gone). For a producer that must find its
        earlier job before it can even build the spec again (the CR watcher after a restart).
        """
        raw = self.redis.get(self._idempotency_key(submitter, key))
        if raw is None:
            return None
        job_id = json.loads(raw).get("id")
        if not job_id:
            return None
        try:
            return self.get(job_id, with_timeline=False)
        except JobNotFound:
            return None

    def mark_sent(self, job_id: str) -> None:
        """Remember that the job was handed to the queue (for as long as its idempotency key
        lives), so that whoever finds it again by that key does not send it a second time."""
        self.redis.set(self._key(job_id) + ":sent", "1", ex=IDEMPOTENCY_SECONDS)

    def was_sent(self, job_id: str) -> bool:
        # `pystol:cr:sent:<id>` is where watchers before the submission service kept the
        # mark (24 h, like the idempotency key): read both so an upgrade never sends twice.
        return bool(self.redis.exists(self._key(job_id) + ":sent", LEGACY_SENT_PREFIX + job_id))

    def get(self, job_id: str, with_timeline: bool = True) -> JobRecord:
        raw = self.redis.get(self._key(job_id))
        if raw is None:
            raise JobNotFound(job_id)
        record = JobRecord.model_validate_json(raw)
        if with_timeline:
            record.timeline = self.timeline(job_id)
        return record

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id)))

    def timeline(self, job_id: str, start: int = 0) -> list[TimelineEvent]:
        raw = self.redis.lrange(self._key(job_id) + ":timeline", start, -1)
        return [TimelineEvent.model_validate_json(item) for item in raw]

    def ids_with_status(self, status: JobStatus) -> list[str]:
        """The ids in a status's index, oldest first, in one round trip and without reading
        a record (the index may lag a record that just moved on: callers re-check)."""
        members = self.redis.zrange(f"{PREFIX}jobs:status:{status.value}", 0, -1)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def list(self, status: JobStatus | None = None, action: str | None = None,
             namespace: str | None = None, cursor: str | None = None, limit: int = 50) -> Page:
        """Newest first; `cursor` is the `next_cursor` of the previous page."""
        filters = [(f"{PREFIX}jobs:status:{status.value}" if status else None),
                   (f"{PREFIX}jobs:action:{action}" if action else None),
                   (f"{PREFIX}jobs:ns:{namespace}" if namespace else None)]
        chosen = [key for key in filters if key]
        index = chosen[0] if chosen else f"{PREFIX}jobs"
        upper = f"({int(cursor)}" if cursor else "+inf"
        items: list[JobRecord] = []
        last_score: float | None = None
        batch = max(limit, 50)
        while len(items) < limit:
            rows = cast(list[tuple[bytes | str, float]],
                        self.redis.zrevrangebyscore(index, upper, "-inf", start=0, num=batch,
                                                    withscores=True))
            if not rows:
                last_score = None
                break
            for member, score in rows:
                last_score = score
                job_id = member.decode() if isinstance(member, bytes) else member
                try:
                    record = self.get(job_id, with_timeline=False)
                except JobNotFound:
                    continue
                except ValueError as error:
                    # A record something other than Pystol wrote (Redis is not trusted):
                    # one unreadable record must not fail every listing, the reaper's
                    # search for lost jobs or the halt switch.
                    log.warning("job %s: unreadable record skipped: %s", job_id,
                                str(error)[:200])
                    continue
                if status and record.status != status:
                    continue
                if action and record.spec.action != action:
                    continue
                if namespace and namespace not in record.spec.target.namespaces:
                    continue
                items.append(record)
                if len(items) == limit:
                    break
            upper = f"({int(last_score)}" if last_score is not None else upper
            if len(rows) < batch and len(items) < limit:
                last_score = None
                break
        next_cursor = None
        if last_score is not None and len(items) == limit:
            more = self.redis.zrevrangebyscore(index, f"({int(last_score)}", "-inf", start=0,
                                               num=1)
            if more:
                next_cursor = str(int(last_score))
        return Page(items=items, next_cursor=next_cursor)

    # -- changes ----------------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: EventKind | str, message: str,
                     data: dict[str, Any] | None = None) -> TimelineEvent:
        """Add an event to the job's timeline. Pystol's own code passes an `EventKind`; a
        kind outside it (an action plug-in's) is stored as it is, with a warning, rather
        than failing a job that may be holding a fault over a timeline label."""
        event = TimelineEvent(at=utcnow(), kind=kind, message=message, data=data or {})
        if not isinstance(event.kind, EventKind):
            log.warning("job %s: timeline event kind %r is not one of Pystol's (EventKind)",
                        job_id, kind)
        payload = event.model_dump_json()
        with self.redis.pipeline() as pipe:
            # RPUSHX: `create` makes the timeline with the record, so it exists exactly while
            # the job does; an event for a job whose record expired must not recreate it.
            pipe.rpushx(self._key(job_id) + ":timeline", payload)
            pipe.publish(TIMELINE_CHANNEL + ":" + job_id, payload)
            pipe.execute()
        return event

    @staticmethod
    def _event_commands(job_id: str, event: TimelineEvent) -> Commands:
        """`append_event` as commands, for a write that adds its event in the same round
        trip. RPUSHX as there: a timeline is never recreated for an expired job."""
        payload = event.model_dump_json()
        return [("RPUSHX", JobStore._key(job_id) + ":timeline", payload),
                ("PUBLISH", TIMELINE_CHANNEL + ":" + job_id, payload)]

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply `change` to the stored record atomically (retrying on concurrent writes)."""
        return self.write(job_id, change).record

    def write(self, job_id: str, change: Callable[[JobRecord], None], *,
              held: str | bytes | None = None, event: TimelineEvent | None = None,
              also: Callable[[JobRecord], Sequence[Command]] | None = None) -> Written:
        """Apply `change` to the record and store it with `event` and the commands
        `also(changed record)` gives, all or none, as a compare-and-set: the write happens
        only while the record is still what `change` saw, and is retried on the current
        record otherwise, so that no concurrent change (a cancel request) is ever lost.

        `held`: the record as this caller last stored it (`Written.raw`); the write then
        costs one round trip, not two (a stale one only costs a retry). `change` may run
        more than once and may raise to refuse (TransitionRefused): nothing is written."""
        key = self._key(job_id)
        raw = held if held is not None else self.redis.get(key)
        for _ in range(MAX_WRITE_ATTEMPTS):
            if raw is None:
                raise JobNotFound(job_id)
            record = JobRecord.model_validate_json(raw)
            before = record.status
            change(record)
            new = record.model_dump_json(exclude={"timeline"})
            ttl: int | str = ""
            commands: Commands = []
            if record.status.terminal:
                # Every write of an ended job sets the expiry again (a plain SET would
                # drop it), counted from when it ended, not from this write.
                ttl = self._seconds_left(record)
                commands.append(("EXPIRE", key + ":timeline", ttl))
                commands.append(("ZADD", ENDED_KEY, repr(self._ended_at(record)),
                                 self._ended_member(record)))
            if record.status != before:
                commands.append(("ZMOVE", f"{PREFIX}jobs", f"{PREFIX}jobs:status:{before.value}",
                                 f"{PREFIX}jobs:status:{record.status.value}", job_id))
            if event is not None:
                commands += self._event_commands(job_id, event)
            if also is not None:
                commands += also(record)
            args: list[Any] = [raw, new, ttl]
            for command in commands:
                args.append(len(command))
                args.extend(command)
            reply = self._write_if_unchanged(keys=[key], args=args)
            outcome = int(reply[0])
            if outcome == 1:
                if int(reply[1]):
                    log.warning("job %s: %s command(s) written with the record failed",
                                job_id, int(reply[1]))
                return Written(record, new)
            if outcome == -1:
                raise JobNotFound(job_id)
            raw = reply[1]
        # Only a writer changing the record without pause gets here (a hand-written loop
        # on Redis): the thread must not spin with it forever.
        raise JobStoreBusy(f"job {job_id}: the record changed under {MAX_WRITE_ATTEMPTS} "
                           "writes in a row")

    # -- retention --------------------------------------------------------------------------------

    @staticmethod
    def _ended_at(record: JobRecord) -> float:
        return (record.ended_at or utcnow()).timestamp()

    def _seconds_left(self, record: JobRecord) -> int:
        """Whole seconds until an ended job's retention is over (at least 1: Redis refuses
        an expiry of 0, and a job past its retention goes at once)."""
        return max(1, math.ceil(self._ended_at(record) + self.retention_seconds - time.time()))

    @staticmethod
    def _ended_member(record: JobRecord) -> str:
        """The `jobs:ended` member of an ended job: its id and every index it is in, so
        that pruning finds them after the record itself has expired."""
        keys = [f"{PREFIX}jobs", f"{PREFIX}jobs:status:{record.status.value}",
                *JobStore._index_keys(record)]
        return json.dumps({"id": record.id, "keys": keys}, separators=(",", ":"))

    def prune_expired(self, now: float | None = None) -> int:
        """Forget up to PRUNE_BATCH jobs that ended more than `retention_seconds` ago: their
        index entries, and their record and per-job keys should their expiry not have
        removed them yet. Returns how many; a caller that gets PRUNE_BATCH may call again.

        Cheap enough for every reaper pass: one range read of the oldest ended jobs (none
        to do: that read is all) and one pipeline of removals."""
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        members = cast(list[bytes], self.redis.zrangebyscore(ENDED_KEY, "-inf", cutoff,
                                                             start=0, num=PRUNE_BATCH))
        if not members:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.zrem(ENDED_KEY, member)
                try:
                    entry = json.loads(member)
                    job_id, keys = str(entry["id"]), list(entry["keys"])
                except (ValueError, KeyError, TypeError):
                    log.warning("dropping an unreadable %s member: %r", ENDED_KEY, member)
                    continue
                for index in keys:
                    if isinstance(index, str) and index.startswith(f"{PREFIX}jobs"):
                        pipe.zrem(index, job_id)
                job_key = self._key(job_id)
                pipe.delete(job_key, job_key + ":timeline", job_key + ":cancel",
                            job_key + ":sent")
            pipe.execute()
        log.info("forgot %d job(s) that ended more than %gs ago", len(members),
                 self.retention_seconds)
        return len(members)

    def claim(self, job_id: str, worker: str, *, also: Sequence[Command] = ()) -> JobRecord:
        """queued -> running for this worker; TransitionRefused when it is not queued."""
        return self.claim_stored(job_id, worker, also=also).record

    def claim_stored(self, job_id: str, worker: str, *,
                     also: Sequence[Command] = ()) -> Written:
        """`claim`, keeping the record as stored (for the runner's later writes). The
        status change, its indexes, the `started` event, the dispatch metric and `also`
        (the runner's heartbeat: a running job is never without one) are one
        compare-and-set of two round trips; a redelivered task gets TransitionRefused."""
        now = utcnow()

        def change(record: JobRecord) -> None:
            if record.status != JobStatus.QUEUED:
                raise TransitionRefused(f"job is {record.status.value}, not queued")
            record.status = JobStatus.RUNNING
            record.started_at = now
            record.worker = worker
        event = TimelineEvent(at=now, kind=EventKind.STARTED, message=f"running on {worker}")
        return self.write(job_id, change, event=event,
                          also=lambda record: [*metrics.started_commands(record), *also])

    def finish(self, job_id: str, status: JobStatus, reason: str, error: str | None = None,
               change: Callable[[JobRecord], None] | None = None, *,
               held: str | bytes | None = None, also: Sequence[Command] = ()) -> JobRecord:
        """Move a job to its one terminal state; a job already terminal stays as it is.

        The record, its indexes and expiry, the terminal event, the cancel flag's removal,
        the job's metrics and `also` (the runner's heartbeat removal) are one
        compare-and-set: one round trip with `held` (the record as the runner last stored
        it), two without (plus one to admit metric namespaces when it changed something)."""
        if not status.terminal:
            raise ValueError(f"{status} is not terminal")
        now = utcnow()

        def apply(record: JobRecord) -> None:
            if record.status.terminal:
                raise TransitionRefused(f"job already ended {record.status.value}")
            if change is not None:
                change(record)
            record.status = status
            record.reason = reason
            record.error = error
            record.ended_at = now

        def commands(record: JobRecord) -> Commands:
            return [("DEL", self._key(job_id) + ":cancel"),
                    *metrics.finished_commands(self.redis, record), *also]
        event = TimelineEvent(at=now, kind=EventKind(status.value), message=reason)
        return self.write(job_id, apply, held=held, event=event, also=commands).record

    def request_cancel(self, job_id: str, by: str) -> JobRecord:
        """Cancel a queued job at once; ask a running one to abort (it reverts first)."""
        outcome: dict[str, str] = {}

        def apply(record: JobRecord) -> None:
            if record.status.terminal:
                raise TransitionRefused(f"job already ended {record.status.value}")
            if record.status == JobStatus.QUEUED:
                record.status = JobStatus.CANCELLED
                record.reason = f"cancelled by {by} before it started"
                record.ended_at = utcnow()
                outcome["kind"] = "cancelled"
            else:
                record.cancel_requested = True
                outcome["kind"] = "abort"
        record = self.update(job_id, apply)
        if outcome["kind"] == "cancelled":
            self.append_event(job_id, EventKind.CANCELLED, record.reason or "cancelled")
            metrics.record_finished(self.redis, record)
        else:
            self.redis.set(self._key(job_id) + ":cancel", by, ex=IDEMPOTENCY_SECONDS)
            self.append_event(job_id, EventKind.CANCEL_REQUESTED, f"abort requested by {by}")
        return record

    def cancel_requested_by(self, job_id: str) -> str | None:
        value = self.redis.get(self._key(job_id) + ":cancel")
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def stop_signals(self, job_id: str, run_id: str | None = None) -> StopSignals:
        """What a running job must know now, in one round trip: whether it must stop
        (cancelled, the global halt, or — for a step of an experiment run — the run's stop
        key) and why, and whether its held fault was released (`run_signals`)."""
        keys = [self._key(job_id) + ":cancel", HALT_KEY, run_signals.release_key(job_id)]
        if run_id is not None:
            keys.append(run_signals.run_stop_key(run_id))
        cancel, halt, release, *rest = self.redis.mget(keys)
        released = release is not None
        if halt is not None:
            by = json.loads(halt).get("by") or "someone"
            return StopSignals(f"aborted: chaos halted by {by}", "halt", released)
        if cancel is not None:
            by = cancel.decode() if isinstance(cancel, bytes) else str(cancel)
            return StopSignals(f"aborted: cancelled by {by}", "cancel", released)
        run_stop = run_signals.RunStop.parse(rest[0]) if rest else None
        if run_stop is not None:
            return StopSignals(f"aborted: experiment run {run_id} stopped: {run_stop.reason}",
                               run_stop.cause, released)
        return StopSignals(None, None, released)

    def stop_reason(self, job_id: str, run_id: str | None = None) -> str | None:
        """Why a running job must stop now (cancelled, the global halt, its run stopped)."""
        return self.stop_signals(job_id, run_id).reason


@dataclass(frozen=True)
class StopSignals:
    """`reason`: why the job must stop (None: it need not); `cause`: halt, cancel, or the
    run stop's cause (`probe` when a probe of the run stopped it); `released`: the run
    released the job's held fault (not a stop)."""

    reason: str | None
    cause: str | None
    released: bool
