"""Experiment documents and runs in Redis.

Layout (prefix `pystol:`):
- `experiment:{name}`        a stored document (`StoredExperiment` JSON)
- `experiments`              sorted set of document names (score 0: ordered by name)
- `experiments:ns:{ns}`      the same, per namespace the document touches
- `xrun:{id}`                a run (`ExperimentRun` JSON); `version` is its CAS counter
- `xrun:{id}:timeline`       the run's events (a capped list)
- `xrun:{id}:advance`        the advance lock (SET NX PX, token-checked unlock)
- `xrun:{id}:again`          "advance once more": set by an advance that found the lock taken
- `xrun:{id}:resume:{path}`  a person resumed that suspend step
- `xrun:{id}:stop`           the stop signal (`store/run_signals.py`)
- `xruns`                    sorted set of run ids by creation sequence (newest last)
- `xrun-seq`                 that sequence
- `xruns:exp:{name}`         the same per experiment (the trend of its verdicts and scores)
- `xruns:ns:{ns}`            the same per namespace of the run's grant, and
  `xruns:by:{submitter}`     per submitter, so that a namespaced caller's listing reads
                             only the runs it may see
- `experiments:known-namespaces`  set: namespaces documents or runs touched, asked one by
                             one for callers whose namespaces are not a list (Kubernetes)
- `xruns:summary`            hash: run id -> {namespaces, submitter} (small), checked before
                             a full record is read
- `xruns:running`            set of runs not ended (the halt stops each: `store/halt.py`)
- `xruns:due`                sorted set: run id -> when it must be advanced (timers, deadline)
- `xruns:ended`              ended runs by end time; members name the run and its indexes
                             (and its score: the metrics' latest score per experiment)
- `xidem:{submitter}:{key}`  a start's idempotency key -> run id

Only `advance` (under the lock) rewrites a run, and every write is a compare-and-set on
`version` (WATCH/MULTI): a second advance that got in anyway (its lock expired) loses the
write and starts again from the stored run, so a run's history is never written twice.
Ended runs expire after the job retention (PYSTOL_JOB_RETENTION_SECONDS) and leave the
indexes in `prune_expired`, exactly like jobs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import cast

import redis

from pystol_worker.core.experiment_model import ExperimentRun, is_run_id
from pystol_worker.core.model import EventKind, TimelineEvent, utcnow
from pystol_worker.store.halt import RUNNING_RUNS_KEY

PREFIX = "pystol:"
RUNS_KEY = PREFIX + "xruns"
DUE_KEY = PREFIX + "xruns:due"
ENDED_KEY = PREFIX + "xruns:ended"
RUNNING_KEY = RUNNING_RUNS_KEY
DOCUMENTS_KEY = PREFIX + "experiments"
SUMMARY_KEY = PREFIX + "xruns:summary"
KNOWN_NAMESPACES_KEY = PREFIX + "experiments:known-namespaces"
MAX_TIMELINE = 2000  # events kept per run
PRUNE_BATCH = 500
IDEMPOTENCY_SECONDS = 24 * 3600
#: The most a run record may take in Redis. Every advance reads the record and writes it
#: back, and every API read parses it: a record that only grows would make each of those
#: slower until it could not be written at all (Redis strings stop at 512 MB), with the run
#: never ending. The engine keeps a bounded sample of each step's probe outcomes and drops
#: them when the record would pass this size (`RunTooLarge`).
MAX_RUN_BYTES = 4 * 1024 * 1024

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Take the advance lock, or, in the same step, ask its holder for one more round. As two
# commands (SET NX, then SET again) the holder could release between them and the ask be
# left for no one.
_LOCK_OR_ASK_AGAIN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 0
"""

# The holder's release: if another advance asked for a round since, keep the lock (renewed)
# and take the ask (1); else release it (0). Checking and releasing in one step is what
# makes an ask arriving between "no ask" and "unlock" impossible. A lock that lapsed during
# a long round and that nobody took since is taken back for an ask left waiting; one that
# another advance holds now is left to it, with the ask.
_RELEASE_UNLESS_ASKED = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  if redis.call('DEL', KEYS[2]) == 1 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
  end
  return 0
end
if holder ~= ARGV[1] then return 0 end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""


#: How long an advance holds its run's lock before another may take it (a worker that died
#: mid-advance must not block the run for longer).
ADVANCE_LOCK_MILLIS = 30_000


class RunConflict(Exception):
    """The run changed since it was read (another advance wrote it)."""


class StoredRunNotFound(KeyError):
    pass


class RunTooLarge(ValueError):
    """The run record would pass MAX_RUN_BYTES; nothing was written."""


def new_run_id(now: datetime) -> str:
    return f"x-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


def runs_namespace_key(namespace: str) -> str:
    return f"{PREFIX}xruns:ns:{namespace}"


def runs_submitter_key(submitter: str) -> str:
    return f"{PREFIX}xruns:by:{submitter}"


def run_scope(run: ExperimentRun) -> tuple[list[str], str]:
    """Where a run is listed: the namespaces of its grant (of its spec without one) and
    who started it."""
    namespaces = list(run.grant.namespaces) if run.grant else run.spec.namespaces()
    submitter = run.grant.submitter if run.grant else run.submitter
    return sorted(set(namespaces)), str(submitter)


def run_key(run_id: str) -> str:
    return f"{PREFIX}xrun:{run_id}"


def document_key(name: str) -> str:
    return f"{PREFIX}experiment:{name}"


class ExperimentStore:
    def __init__(self, client: redis.Redis, retention_seconds: float = 30 * 86400,
                 clock: Callable[[], datetime] = utcnow,
                 max_run_bytes: int = MAX_RUN_BYTES) -> None:
        self.redis = client
        self.max_run_bytes = max_run_bytes
        self.retention_seconds = retention_seconds
        self.clock = clock

    # -- documents ---------------------------------------------------------------------

    def get_document(self, name: str) -> bytes | None:
        raw = self.redis.get(document_key(name))
        return raw if isinstance(raw, bytes | None) else str(raw).encode()

    def put_document(self, name: str, value: str, namespaces: list[str],
                     old_namespaces: list[str], expected_raw: bytes | None,
                     check: bool) -> bool:
        """Write a document; when `check`, only if it is still `expected_raw` (None: absent).
        False when it changed meanwhile."""
        key = document_key(name)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if check and pipe.get(key) != expected_raw:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.set(key, value)
                pipe.zadd(DOCUMENTS_KEY, {name: 0})
                for namespace in old_namespaces:
                    if namespace not in namespaces:
                        pipe.zrem(f"{PREFIX}experiments:ns:{namespace}", name)
                for namespace in namespaces:
                    pipe.zadd(f"{PREFIX}experiments:ns:{namespace}", {name: 0})
                if namespaces:
                    pipe.sadd(KNOWN_NAMESPACES_KEY, *namespaces)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def delete_document(self, name: str, namespaces: list[str]) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(document_key(name))
            pipe.zrem(DOCUMENTS_KEY, name)
            for namespace in namespaces:
                pipe.zrem(f"{PREFIX}experiments:ns:{namespace}", name)
            pipe.execute()

    def document_names(self, namespace: str | None, after: str | None,
                       count: int) -> list[str]:
        """Names in order after `after` (exclusive), at most `count`."""
        index = f"{PREFIX}experiments:ns:{namespace}" if namespace else DOCUMENTS_KEY
        low = f"({after}" if after else "-"
        names = self.redis.zrangebylex(index, low, "+", start=0, num=count)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    # -- runs --------------------------------------------------------------------------

    def create_run(self, run: ExperimentRun, idempotency: tuple[str, str] | None = None
                   ) -> tuple[ExperimentRun, bool]:
        """Store a new run; with an idempotency (submitter, key) already used, the earlier
        run and False instead."""
        if idempotency is not None:
            idem_key = f"{PREFIX}xidem:{idempotency[0]}:{idempotency[1]}"
            if not self.redis.set(idem_key, run.id, nx=True, ex=IDEMPOTENCY_SECONDS):
                earlier = self.redis.get(idem_key)
                if earlier is not None:
                    earlier_id = earlier.decode() if isinstance(earlier, bytes) else str(earlier)
                    try:
                        return self.get_run(earlier_id), False
                    except StoredRunNotFound:
                        self.redis.set(idem_key, run.id, ex=IDEMPOTENCY_SECONDS)
        seq = int(self.redis.incr(f"{PREFIX}xrun-seq"))
        namespaces, submitter = run_scope(run)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(run_key(run.id), run.model_dump_json())
            pipe.zadd(RUNS_KEY, {run.id: seq})
            pipe.zadd(f"{PREFIX}xruns:exp:{run.experiment}", {run.id: seq})
            for namespace in namespaces:
                pipe.zadd(runs_namespace_key(namespace), {run.id: seq})
            if namespaces:
                pipe.sadd(KNOWN_NAMESPACES_KEY, *namespaces)
            pipe.zadd(runs_submitter_key(submitter), {run.id: seq})
            pipe.hset(SUMMARY_KEY, run.id, json.dumps({"namespaces": namespaces,
                                                       "submitter": submitter}))
            pipe.sadd(RUNNING_KEY, run.id)
            pipe.execute()
        self.append_event(run.id, EventKind.QUEUED, f"run of experiment {run.experiment} "
                          f"queued by {run.submitter}")
        return run, True

    def idempotent_run_id(self, submitter: str, key: str) -> str | None:
        raw = self.redis.get(f"{PREFIX}xidem:{submitter}:{key}")
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def get_run(self, run_id: str) -> ExperimentRun:
        if not is_run_id(run_id):
            raise StoredRunNotFound(run_id)
        raw = self.redis.get(run_key(run_id))
        if raw is None:
            raise StoredRunNotFound(run_id)
        return ExperimentRun.model_validate_json(raw)

    def write_run(self, run: ExperimentRun, expected_version: int) -> ExperimentRun:
        """Compare-and-set: store `run` (its version becomes expected + 1) only if the stored
        run is still at `expected_version`; RunConflict otherwise. Keeps the indexes: an
        ended run leaves `xruns:running` and `xruns:due`, enters `xruns:ended` and expires
        after the retention."""
        key = run_key(run.id)
        written = run.model_copy(update={"version": expected_version + 1})
        value = written.model_dump_json()
        if len(value) > self.max_run_bytes:
            raise RunTooLarge(f"run {run.id} would take {len(value)} bytes; at most "
                              f"{self.max_run_bytes}")
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    raise StoredRunNotFound(run.id)
                stored_version = json.loads(raw).get("version", 0)
                if stored_version != expected_version:
                    raise RunConflict(f"run {run.id} is at version {stored_version}, not "
                                      f"{expected_version}")
                pipe.multi()
                if written.status.terminal:
                    ended = (written.ended_at or self.clock()).timestamp()
                    seconds = max(1, int(ended + self.retention_seconds
                                         - self.clock().timestamp()))
                    pipe.set(key, value, ex=seconds)
                    pipe.expire(key + ":timeline", seconds)
                    pipe.srem(RUNNING_KEY, run.id)
                    pipe.zrem(DUE_KEY, run.id)
                    # [id, experiment, namespaces, submitter, score]: enough for the
                    # indexes to be pruned and for the metrics scrape to show each
                    # experiment's latest score without reading a run record.
                    member = json.dumps([run.id, run.experiment, *run_scope(run),
                                         written.score])
                    pipe.zadd(ENDED_KEY, {member: ended})
                else:
                    pipe.set(key, value)
                pipe.execute()
            except redis.WatchError as error:
                raise RunConflict(f"run {run.id} changed while it was written") from error
        return written

    def experiment_runs_key(self, experiment: str) -> str:
        """The index of one experiment's runs (for `run_ids_in`)."""
        return f"{PREFIX}xruns:exp:{experiment}"

    def run_ids(self, experiment: str | None, before: int | None, count: int
                ) -> list[tuple[str, int]]:
        """(id, seq) newest first, with seq < `before` when given."""
        index = f"{PREFIX}xruns:exp:{experiment}" if experiment else RUNS_KEY
        high = f"({before}" if before is not None else "+inf"
        found = cast(list[tuple[bytes | str, float]],
                     self.redis.zrevrangebyscore(index, high, "-inf", start=0, num=count,
                                                 withscores=True))
        return [(m.decode() if isinstance(m, bytes) else str(m), int(score))
                for m, score in found]

    def run_ids_in(self, indexes: list[str], before: int | None, count: int
                   ) -> list[tuple[str, int]]:
        """(id, seq) newest first across several run indexes (`runs_namespace_key`,
        `runs_submitter_key`, ...), at most `count`, with seq < `before` when given: one
        bounded range read per index, whatever the installation holds."""
        high = f"({before}" if before is not None else "+inf"
        merged: dict[str, int] = {}
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zrevrangebyscore(index, high, "-inf", start=0, num=count,
                                      withscores=True)
            answers = pipe.execute()
        for found in answers:
            for member, score in cast(list[tuple[bytes | str, float]], found):
                merged[member.decode() if isinstance(member, bytes) else str(member)] = \
                    int(score)
        return sorted(merged.items(), key=lambda item: -item[1])[:count]

    def run_summaries(self, run_ids: list[str]) -> dict[str, tuple[list[str], str]]:
        """Each run's (namespaces, submitter) from the small summary hash, without
        reading its record (runs stored before the summary existed are absent)."""
        if not run_ids:
            return {}
        found: dict[str, tuple[list[str], str]] = {}
        for run_id, raw in zip(run_ids, self.redis.hmget(SUMMARY_KEY, run_ids), strict=True):
            if raw is None:
                continue
            try:
                summary = json.loads(raw)
                found[run_id] = ([str(ns) for ns in summary["namespaces"]],
                                 str(summary["submitter"]))
            except (ValueError, TypeError, KeyError):
                continue
        return found

    def known_namespaces(self, limit: int) -> list[str]:
        """Namespaces documents or runs touched (at most `limit`), for callers whose
        namespaces are asked one by one (Kubernetes RBAC)."""
        found: list[str] = []
        for member in self.redis.sscan_iter(KNOWN_NAMESPACES_KEY, count=200):
            found.append(member.decode() if isinstance(member, bytes) else str(member))
            if len(found) >= limit:
                break
        return sorted(found)

    def running_ids(self, limit: int = 1000) -> list[str]:
        ids: list[str] = []
        for member in self.redis.sscan_iter(RUNNING_KEY, count=200):
            ids.append(member.decode() if isinstance(member, bytes) else str(member))
            if len(ids) >= limit:
                break
        return ids

    def forget_running(self, run_id: str) -> None:
        """A `xruns:running` member with no run record behind it (expired, deleted)."""
        self.redis.srem(RUNNING_KEY, run_id)
        self.redis.zrem(DUE_KEY, run_id)

    # -- timers, locks and signals -------------------------------------------------------

    def set_due(self, run_id: str, at: datetime) -> None:
        """Advance the run at `at` at the latest (keeps an earlier time already set)."""
        self.redis.zadd(DUE_KEY, {run_id: at.timestamp()}, lt=True)

    def clear_due(self, run_id: str) -> None:
        self.redis.zrem(DUE_KEY, run_id)

    def claim_due(self, now: datetime, limit: int) -> list[str]:
        """Take up to `limit` runs due by `now` off the timer set (ZREM decides who took
        each, so two reapers never both send it)."""
        members = cast(list[bytes | str],
                       self.redis.zrangebyscore(DUE_KEY, "-inf", now.timestamp(), start=0,
                                                num=limit))
        claimed = []
        for member in members:
            if self.redis.zrem(DUE_KEY, member):
                claimed.append(member.decode() if isinstance(member, bytes) else str(member))
        return claimed

    def lock_advance(self, run_id: str, millis: int = ADVANCE_LOCK_MILLIS) -> str | None:
        """The advance lock's token; or None, and then the holder has been asked (in the
        same Redis step) to go round once more before it releases."""
        token = secrets.token_hex(8)
        key = run_key(run_id)
        if self.redis.eval(_LOCK_OR_ASK_AGAIN, 2, f"{key}:advance", f"{key}:again",
                           token, millis, 60_000):
            return token
        return None

    def release_advance(self, run_id: str, token: str,
                        millis: int = ADVANCE_LOCK_MILLIS) -> bool:
        """Release the lock, unless another advance asked for a round since the holder
        last looked: then keep it, renewed, and answer True (go round again)."""
        key = run_key(run_id)
        return bool(self.redis.eval(_RELEASE_UNLESS_ASKED, 2, f"{key}:advance",
                                    f"{key}:again", token, millis))

    def unlock_advance(self, run_id: str, token: str) -> None:
        self.redis.eval(_UNLOCK, 1, f"{run_key(run_id)}:advance", token)

    def advance_locked(self, run_id: str) -> bool:
        return bool(self.redis.exists(f"{run_key(run_id)}:advance"))

    def resume(self, run_id: str, path: str) -> None:
        self.redis.set(f"{run_key(run_id)}:resume:{path}", "1", ex=7 * 86400)

    def resumed(self, run_id: str, paths: list[str]) -> set[str]:
        if not paths:
            return set()
        values = self.redis.mget([f"{run_key(run_id)}:resume:{path}" for path in paths])
        return {path for path, value in zip(paths, values, strict=True) if value is not None}

    # -- timeline ----------------------------------------------------------------------

    def append_event(self, run_id: str, kind: EventKind, message: str,
                     **data: object) -> None:
        """One event on the run's timeline (callers pass an EventKind member)."""
        event = TimelineEvent(at=self.clock(), kind=kind, message=message[:2000],
                              data=dict(data))
        key = f"{run_key(run_id)}:timeline"
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, event.model_dump_json())
            pipe.ltrim(key, -MAX_TIMELINE, -1)
            pipe.execute()

    def timeline(self, run_id: str, start: int = 0) -> list[TimelineEvent]:
        raw = self.redis.lrange(f"{run_key(run_id)}:timeline", start, -1)
        return [TimelineEvent.model_validate_json(item) for item in raw]

    # -- retention ---------------------------------------------------------------------

    def prune_expired(self, now: float | None = None) -> int:
        """Forget up to PRUNE_BATCH runs that ended more than the retention ago (their
        records expire on their own; this takes them out of the indexes)."""
        cutoff = (now if now is not None else self.clock().timestamp()) \
            - self.retention_seconds
        members = cast(list[bytes | str],
                       self.redis.zrangebyscore(ENDED_KEY, "-inf", cutoff, start=0,
                                                num=PRUNE_BATCH))
        if not members:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                try:
                    run_id, experiment, *scope = json.loads(member)
                except (ValueError, TypeError):
                    pipe.zrem(ENDED_KEY, member)
                    continue
                pipe.zrem(RUNS_KEY, str(run_id))
                pipe.zrem(f"{PREFIX}xruns:exp:{experiment}", str(run_id))
                if len(scope) >= 2 and isinstance(scope[0], list):
                    for namespace in scope[0]:
                        pipe.zrem(runs_namespace_key(str(namespace)), str(run_id))
                    pipe.zrem(runs_submitter_key(str(scope[1])), str(run_id))
                pipe.hdel(SUMMARY_KEY, str(run_id))
                pipe.delete(run_key(str(run_id)), f"{run_key(str(run_id))}:timeline")
                pipe.zrem(ENDED_KEY, member)
            pipe.execute()
        return len(members)

    def iter_runs(self, run_ids: list[str]) -> Iterator[ExperimentRun]:
        """The runs that still exist, in the given order (one MGET)."""
        if not run_ids:
            return
        for raw in self.redis.mget([run_key(run_id) for run_id in run_ids]):
            if raw is not None:
                try:
                    yield ExperimentRun.model_validate_json(raw)
                except ValueError:
                    continue
