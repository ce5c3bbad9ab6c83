"""The revert journal: no fault outlives its job.

Before a worker changes anything in the cluster it writes here what it is about
to change and how to undo it; the entry is removed only after the undo
succeeded. A running job keeps a heartbeat key alive. When the heartbeat stops
(the worker was SIGKILLed, its machine vanished) the entries of that job are
orphans, and the reaper — run by every worker when it starts and then
periodically — undoes them. Undo functions are idempotent: running one twice,
or on a change that never reached the cluster, is harmless. With Redis on an
append-only file, the journal survives a Redis restart too.

Which function undoes an entry is looked up by the entry's `undo` name in an
`UndoRegistry` the caller passes in (built from the action classes' `undo`
declarations); the names are stored in Redis, so they never change.

Layout (prefix `pystol:`):
- `journal`                 hash: entry id -> entry JSON
- `journal:job:{job_id}`    set of the job's entry ids
- `heartbeat:{job_id}`      expiring key, refreshed while the job runs
- `reaper-lock`             one reaper at a time across all workers
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel, Field

from pystol_worker.core.model import TargetRef, utcnow
from pystol_worker.kube.cluster import Cluster
from pystol_worker.safety.target_locks import journal_key, target_lock_keys
from pystol_worker.store.metrics import record_orphan_reverts

PREFIX = "pystol:"
log = logging.getLogger("pystol.journal")


class JournalEntry(BaseModel):
    id: str = Field(default_factory=lambda: "r-" + secrets.token_hex(6))
    job_id: str
    action: str
    undo: str = Field(description="Name of the undo function, as declared in the `undo` "
                                  "of the action class that journaled it.")
    target: TargetRef
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)

    def describe(self) -> str:
        where = f"{self.target.namespace}/" if self.target.namespace else ""
        return f"{self.undo} on {self.target.kind} {where}{self.target.name}"


UndoFunction = Callable[[Cluster, JournalEntry], None]
"""Reverts one journaled change from the entry alone (it may run in another process)."""


class UndoRegistry:
    """Undo functions by the name journal entries carry (`JournalEntry.undo`).

    There is no global one: `ActionRegistry.undo_registry()` builds it from the `undo`
    declared on every registered action class (plug-ins included), and the runner and
    the reaper are handed it. So whatever can be run can be reverted by the same process,
    and nothing depends on which modules happened to be imported.
    """

    def __init__(self, functions: Mapping[str, UndoFunction] | None = None) -> None:
        self._functions: dict[str, UndoFunction] = dict(functions or {})

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def names(self) -> list[str]:
        return sorted(self._functions)

    def get(self, name: str) -> UndoFunction:
        if name not in self._functions:
            known = ", ".join(sorted(self._functions))
            raise KeyError(f"no undo function {name!r} (known: {known})")
        return self._functions[name]


# How a failure to revert starts when no undo function of that name is installed.
MISSING_UNDO = "undo function missing"

_UNLOCK_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RevertJournal:
    def __init__(self, client: redis.Redis, heartbeat_seconds: float = 15.0) -> None:
        self.redis = client
        self.heartbeat_seconds = heartbeat_seconds
        self._unlock = client.register_script(_UNLOCK_IF_OURS)

    # -- entries --------------------------------------------------------------------------------

    def record(self, entry: JournalEntry) -> JournalEntry:
        with self.redis.pipeline() as pipe:
            pipe.hset(PREFIX + "journal", entry.id, entry.model_dump_json())
            pipe.sadd(f"{PREFIX}journal:job:{entry.job_id}", entry.id)
            for key in target_lock_keys([entry.target]):
                pipe.sadd(journal_key(key), f"{entry.job_id}|{entry.id}")
            pipe.execute()
        return entry

    def resolve(self, entry: JournalEntry) -> None:
        with self.redis.pipeline() as pipe:
            pipe.hdel(PREFIX + "journal", entry.id)
            pipe.srem(f"{PREFIX}journal:job:{entry.job_id}", entry.id)
            for key in target_lock_keys([entry.target]):
                pipe.srem(journal_key(key), f"{entry.job_id}|{entry.id}")
            pipe.execute()

    def entries(self, job_id: str | None = None) -> list[JournalEntry]:
        if job_id is None:
            raw = self.redis.hvals(PREFIX + "journal")
        else:
            ids = list(self.redis.smembers(f"{PREFIX}journal:job:{job_id}"))
            raw = [item for item in self.redis.hmget(PREFIX + "journal", ids) if item] \
                if ids else []
        entries = [JournalEntry.model_validate_json(item) for item in raw]
        return sorted(entries, key=lambda entry: entry.created_at, reverse=True)

    def count(self) -> int:
        return int(self.redis.hlen(PREFIX + "journal"))

    # -- heartbeats -------------------------------------------------------------------------------

    def beat(self, job_id: str) -> None:
        self.redis.set(f"{PREFIX}heartbeat:{job_id}", "1",
                       px=int(self.heartbeat_seconds * 1000))

    def stop_beating(self, job_id: str) -> None:
        self.redis.delete(f"{PREFIX}heartbeat:{job_id}")

    def alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"{PREFIX}heartbeat:{job_id}"))

    def heartbeat(self, job_id: str, on_beat: Callable[[], None] | None = None) -> Heartbeat:
        return Heartbeat(self, job_id, on_beat)

    # -- undo -------------------------------------------------------------------------------------

    def undo(self, cluster: Cluster, entry: JournalEntry,
             registry: UndoRegistry) -> None:
        """Undo one change and drop its entry; raises (keeping the entry) when the undo fails."""
        registry.get(entry.undo)(cluster, entry)
        self.resolve(entry)

    def undo_all(self, cluster: Cluster, entries: list[JournalEntry],
                 registry: UndoRegistry
                 ) -> tuple[list[JournalEntry], list[tuple[JournalEntry, str]]]:
        """Undo each entry, newest first; (undone, failed). Failed ones stay journaled."""
        undone: list[JournalEntry] = []
        failed: list[tuple[JournalEntry, str]] = []
        for entry in entries:
            if entry.undo not in registry:
                # Retrying cannot help until someone installs the action that wrote it (a
                # plug-in removed, or not yet updated to this version's contract): say so
                # loudly, since its fault stays in the cluster and its targets stay locked.
                problem = (f"{MISSING_UNDO}: no installed action declares undo "
                           f"{entry.undo!r} (journaled by action {entry.action!r}); install "
                           "or update that action plug-in, or revert by hand")
                log.error("cannot revert %s: %s", entry.describe(), problem)
                failed.append((entry, problem))
                continue
            try:
                self.undo(cluster, entry, registry)
                undone.append(entry)
            except Exception as error:
                log.warning("undo of %s failed, will retry: %s", entry.describe(), error)
                failed.append((entry, str(error)))
        record_orphan_reverts(self.redis, undone, [entry for entry, _ in failed])
        return undone, failed

    def lock_reaper(self, seconds: int = 300) -> str | None:
        """One reaper at a time across all workers; returns the lock's token when taken."""
        token = secrets.token_hex(8)
        if self.redis.set(PREFIX + "reaper-lock", token, nx=True, ex=seconds):
            return token
        return None

    def unlock_reaper(self, token: str) -> None:
        """Release the reaper lock, only if it is still ours (it may have expired)."""
        self._unlock(keys=[PREFIX + "reaper-lock"], args=[token])


class Heartbeat:
    """Keeps a job's heartbeat key alive from a daemon thread while the job runs."""

    def __init__(self, journal: RevertJournal, job_id: str,
                 on_beat: Callable[[], None] | None = None) -> None:
        self.journal = journal
        self.job_id = job_id
        self.on_beat = on_beat
        self.every = max(0.2, journal.heartbeat_seconds / 5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self.journal.beat(self.job_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.journal.stop_beating(self.job_id)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.journal.beat(self.job_id)
                if self.on_beat is not None:
                    self.on_beat()
            except redis.RedisError as error:
                log.warning("heartbeat for %s failed: %s", self.job_id, error)
