"""The audit trail: who changed what, when, from where, and how it ended.

Every mutating operation (a job submitted or cancelled, a halt engaged or lifted, a
schedule created, changed, paused, resumed or deleted, a token created or revoked, a job
started by a custom resource or a schedule) is recorded twice:

1. as one JSON log line on logger `pystol.audit` (the record under the key `audit`),
   first, so that it reaches the logs even when Redis does not answer;
2. in the Redis stream `pystol:audit`, capped at `PYSTOL_AUDIT_MAX_RECORDS` entries and
   trimmed of entries older than `PYSTOL_AUDIT_RETENTION_SECONDS`, for
   `GET /api/v1/audit` and `pystol audit`.

A Redis failure is logged and never fails the operation being audited (the log line is
already out). Stream ids are `<milliseconds>-<seq>` from the recording process's clock,
so time filters are stream ranges; trimming is approximate (`~`), as Redis does it
cheaply, so a few more entries than the cap, or slightly older ones, may remain until
the next record: reading never returns records older than the retention.

Reading is newest first and does bounded work per call: it scans at most `SCAN_LIMIT`
entries and then answers with what it found and a cursor, even if the page is not full
(filters that match rarely must not make one request walk the whole stream).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import redis
from pydantic import BaseModel, Field, ValidationError

from pystol_worker.core.access import Actor

log = logging.getLogger("pystol.audit")
store_log = logging.getLogger("pystol.store")

STREAM_KEY = "pystol:audit"
#: The operations recorded (others may be added; the field is free text).
OPERATIONS = ("job.submit", "job.cancel", "halt.engage", "halt.lift", "schedule.create",
              "schedule.update", "schedule.pause", "schedule.resume", "schedule.delete",
              "token.create", "token.revoke")
Outcome = Literal["ok", "refused", "invalid", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "refused", "invalid", "failed")
#: At most this many stream entries are read by one `read` call.
SCAN_LIMIT = 2000
BATCH = 200
MAX_LIMIT = 500
MAX_TARGETS = 200
MAX_NAMESPACES = 1000
MAX_DETAIL = 2000
CURSOR_PATTERN = r"^[0-9]{1,19}-[0-9]{1,19}$"
MAX_SEQUENCE = 2**64 - 1


@dataclass(frozen=True)
class StreamEntry:
    """One audit record ready for the stream: `XADD key MAXLEN <trim> max_records first_id
    r document` (`*` as the id when `first_id` is refused), then `XTRIM key MINID <trim>
    minid`."""

    key: str
    document: str
    first_id: str
    max_records: int
    minid: str
    trim: str


class AuditRecord(BaseModel):
    """One audited operation."""

    id: str = Field("", description="The stream entry id (`<ms>-<seq>`); also the cursor.")
    at: datetime
    actor: Actor
    operation: str = Field(examples=["job.submit"], description="One of "
                           + ", ".join(OPERATIONS) + ".")
    outcome: Outcome = "ok"
    targets: list[str] = Field(default_factory=list, description="What it acted on: "
                               "namespaces, node names, a schedule id, a token name…")
    namespaces: list[str] = Field(default_factory=list, description="The namespaces it "
                                  "touched (what the namespace filter matches).")
    detail: str | None = None
    job_id: str | None = None
    schedule_id: str | None = None


def _ms(when: datetime) -> int:
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0, math.floor(aware.timestamp() * 1000))


def _bounded(values: Iterable[str], most: int) -> list[str]:
    items = [str(value) for value in values]
    if len(items) > most:
        items = [*items[:most], f"…and {len(items) - most} more"]
    return items


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class AuditLog:
    """The audit trail in the Redis stream `pystol:audit` and on logger `pystol.audit`."""

    def __init__(self, redis_client: redis.Redis, *, max_records: int,
                 retention_seconds: float, clock: Callable[[], float] = time.time,
                 approximate: bool = True) -> None:
        """`approximate` trimming is what production wants (Redis drops whole stream
        nodes); exact trimming is for tests against stores that ignore `~`."""
        if max_records < 1 or not retention_seconds > 0:
            raise ValueError("max_records and retention_seconds must be positive")
        self.redis = redis_client
        self.max_records = max_records
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._approximate = approximate

    # -- writing ---------------------------------------------------------------------------

    def record(self, actor: Actor, operation: str, *, outcome: Outcome = "ok",
               targets: Iterable[str] = (), namespaces: Iterable[str] = (),
               detail: str | None = None, job_id: str | None = None,
               schedule_id: str | None = None) -> AuditRecord:
        """Log and store one record; returns it with its stream id ("" if Redis failed)."""
        now = self._clock()
        record = self.build(actor, operation, now, outcome=outcome, targets=targets,
                            namespaces=namespaces, detail=detail, job_id=job_id,
                            schedule_id=schedule_id)
        self.log(record)
        try:
            record.id = self._append(record.model_dump_json(exclude={"id"}), now)
        except redis.RedisError as error:
            store_log.warning("the audit record %s by %s was logged but not stored in "
                              "Redis: %s", operation, actor.submitter, error)
        return record

    @staticmethod
    def build(actor: Actor, operation: str, now: float, *, outcome: Outcome = "ok",
              targets: Iterable[str] = (), namespaces: Iterable[str] = (),
              detail: str | None = None, job_id: str | None = None,
              schedule_id: str | None = None) -> AuditRecord:
        """The record `record` stores, bounded, without writing it anywhere."""
        return AuditRecord(
            at=datetime.fromtimestamp(now, UTC), actor=actor, operation=operation,
            outcome=outcome, targets=_bounded(targets, MAX_TARGETS),
            namespaces=sorted(set(_bounded(namespaces, MAX_NAMESPACES))),
            detail=detail[:MAX_DETAIL] if detail is not None else None,
            job_id=job_id, schedule_id=schedule_id)

    @staticmethod
    def log(record: AuditRecord) -> None:
        """The record's line on logger `pystol.audit`."""
        log.info("%s %s by %s%s%s", record.operation, record.outcome,
                 record.actor.submitter,
                 f" on {', '.join(record.targets)}" if record.targets else "",
                 f" (job {record.job_id})" if record.job_id else "",
                 extra={"audit": record.model_dump(mode="json", exclude={"id"})})

    def withdraw(self, entry_id: str) -> None:
        """Remove one entry from the stream: the submit script's `ok` record of a job the
        queue then refused, which `failed` replaces (one record per submission). A Redis
        failure is logged, like a record that could not be stored."""
        if not entry_id:
            return
        try:
            self.redis.xdel(STREAM_KEY, entry_id)
        except redis.RedisError as error:
            store_log.warning("could not withdraw audit record %s: %s", entry_id, error)

    def now(self) -> float:
        """The audit trail's clock (injected in tests)."""
        return self._clock()

    def entry(self, record: AuditRecord) -> StreamEntry:
        """What a Lua script needs to append `record` to the stream itself, with the same
        id, cap and trimming as `_append` (the submit script stores a job and its `ok`
        record in one round trip: `pystol_worker/store/submit_script.py`)."""
        now = record.at.timestamp()
        return StreamEntry(
            key=STREAM_KEY, document=record.model_dump_json(exclude={"id"}),
            first_id=f"{max(0, math.floor(now * 1000))}-*", max_records=self.max_records,
            minid=f"{max(0, math.floor((now - self.retention_seconds) * 1000))}-0",
            trim="~" if self._approximate else "=")

    def _append(self, document: str, now: float) -> str:
        fields = {"r": document}
        minid = f"{max(0, math.floor((now - self.retention_seconds) * 1000))}-0"
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(STREAM_KEY, cast(Any, fields), id=f"{max(0, math.floor(now * 1000))}-*",
                  maxlen=self.max_records, approximate=self._approximate)
        pipe.xtrim(STREAM_KEY, minid=minid, approximate=self._approximate)
        added, _ = pipe.execute(raise_on_error=False)
        if isinstance(added, redis.ResponseError):
            # This clock is behind the newest entry (another process's clock, or this one
            # stepped back), or a Redis before 7 (no `<ms>-*` ids): let Redis number it.
            added = self.redis.xadd(STREAM_KEY, cast(Any, fields), id="*",
                                    maxlen=self.max_records, approximate=self._approximate)
        if isinstance(added, Exception):
            raise added
        return _text(cast(bytes | str, added))

    # -- reading ---------------------------------------------------------------------------

    def read(self, *, actor: str | None = None, operation: str | None = None,
             namespace: str | None = None, outcome: str | None = None,
             since: datetime | None = None, until: datetime | None = None, limit: int = 100,
             cursor: str | None = None) -> tuple[list[AuditRecord], str | None]:
        """Records newest first that match every filter given, and the cursor of the next
        page (None: nothing older is left). `actor` matches the actor's name or submitter
        name (`token:ci`), and who a schedule fired on behalf of; `operation` an operation
        or its family (`schedule`); `cursor` is the `next_cursor` of the page before."""
        limit = max(1, min(limit, MAX_LIMIT))
        oldest = self._clock() - self.retention_seconds
        low = max(math.floor(oldest * 1000), _ms(since) if since else 0)
        minimum = f"{max(0, low)}-0"
        maximum = "+"
        if until is not None:
            maximum = str(_ms(until))  # an incomplete id: every sequence of that ms
        if cursor is not None:
            if not re.fullmatch(CURSOR_PATTERN, cursor):
                raise ValueError("the cursor is not one this API handed out")
            if until is None or _id_key(cursor) <= (_ms(until), MAX_SEQUENCE):
                maximum = f"({cursor}"
        found: list[AuditRecord] = []
        scanned = 0
        last_seen: str | None = None
        while scanned < SCAN_LIMIT:
            count = min(BATCH, SCAN_LIMIT - scanned)
            entries = cast(list[tuple[Any, dict[Any, Any]]], self.redis.xrevrange(
                STREAM_KEY, max=maximum, min=minimum, count=count))
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                scanned += 1
                last_seen = entry_id
                record = _parse(entry_id, fields)
                if record is None or not _matches(record, actor, operation, namespace,
                                                  outcome):
                    continue
                found.append(record)
                if len(found) == limit:
                    return found, entry_id
            if len(entries) < count:
                return found, None  # the oldest matching entry was read
            maximum = f"({last_seen}"
        return found, last_seen


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _parse(entry_id: str, fields: dict[Any, Any]) -> AuditRecord | None:
    raw = fields.get(b"r", fields.get("r"))
    if raw is None:
        return None
    try:
        record = AuditRecord.model_validate_json(raw)
    except ValidationError:
        store_log.warning("audit entry %s is not an audit record; skipped", entry_id)
        return None
    record.id = entry_id
    return record


def _matches(record: AuditRecord, actor: str | None, operation: str | None,
             namespace: str | None, outcome: str | None) -> bool:
    if actor is not None and actor not in (record.actor.name, record.actor.submitter,
                                           record.actor.on_behalf_of):
        return False
    if operation is not None and not (record.operation == operation
                                      or record.operation.startswith(operation + ".")):
        return False
    if namespace is not None and namespace not in record.namespaces:
        return False
    return outcome is None or record.outcome == outcome
