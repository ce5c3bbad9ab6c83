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

Redis is not trusted. Any pod that reaches it could write an entry whose undo
"restores" an image of its choosing on a pod in another namespace, and the reaper
would patch it in. So every entry is sealed with an HMAC under PYSTOL_SIGNING_KEY
(which Redis never holds), and reading the journal verifies each one: an unsigned,
altered or unreadable entry is never undone. It is moved out of the journal into
`journal:refused`, logged as an error, counted (`pystol_revert_journal_refused_total`)
and, by the reaper, reported with a Warning Event on the object it named. Two more
checks hold for entries that are genuine: `undo()` refuses an entry whose namespace
is protected, and every undo function changes an object only when it is the object
the entry recorded (its uid) and still carries the mark Pystol's fault left on it
(a label, an annotation or the state Pystol set), so replaying an old, genuine
entry changes nothing.

Layout (prefix `pystol:`):
- `journal`                 hash: entry id -> entry JSON (sealed)
- `journal:refused`         hash: entry id -> what was refused, and why (kept for people)
- `journal:job:{job_id}`    set of the job's entry ids
- `heartbeat:{job_id}`      expiring key, refreshed while the job runs
- `reaper-lock`             one reaper at a time across all workers
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel, Field, ValidationError

from pystol_worker.core.access import is_sealed, seal
from pystol_worker.core.model import TargetRef, utcnow
from pystol_worker.kube.cluster import Cluster
from pystol_worker.safety.target_locks import journal_key, target_lock_keys
from pystol_worker.store.metrics import record_journal_refused, record_orphan_reverts

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
    signature: str = Field("", pattern=r"^([0-9a-f]{64})?$",
                           description="HMAC-SHA256 (hex) of the rest, under "
                                       "PYSTOL_SIGNING_KEY (`payload()`).")

    def describe(self) -> str:
        where = f"{self.target.namespace}/" if self.target.namespace else ""
        return f"{self.undo} on {self.target.kind} {where}{self.target.name}"

    def payload(self) -> bytes:
        """The bytes the signature covers: every field but the signature, tagged so that a
        signature made for something else (a job's grant, a token) never fits."""
        fields = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps({"revert-journal-entry": fields}, sort_keys=True,
                          separators=(",", ":")).encode()

    def namespaces(self) -> set[str]:
        """Every namespace the entry's undo would touch (the target's, and one in its data)."""
        named = {self.target.namespace, self.data.get("namespace")}
        return {value for value in named if isinstance(value, str) and value}


class JournalEntryRefused(Exception):
    """An entry Pystol will not undo: not written by Pystol, or aimed where it may not act.

    Permanent: retrying cannot make a forged entry genuine, so the entry leaves the
    journal (into `journal:refused`) instead of being retried on every reaper pass."""

    def __init__(self, entry_id: str, reason: str, detail: str,
                 entry: JournalEntry | None = None, raw_key: Any = None) -> None:
        super().__init__(f"journal entry {entry_id}: {detail}")
        self.entry_id = entry_id
        self.reason = reason  # a short, bounded word: the metric's label
        self.detail = detail
        self.entry = entry
        self.raw_key = raw_key if raw_key is not None else entry_id  # as Redis holds it


@dataclass
class JournalRead:
    """What reading the journal found: genuine entries, newest first, and refused ones."""

    entries: list[JournalEntry] = field(default_factory=list)
    refused: list[JournalEntryRefused] = field(default_factory=list)


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
    """The journal in Redis. `signing_key` seals entries (a setting Redis never holds);
    `is_protected` says which namespaces no undo may touch (Settings.is_protected)."""

    def __init__(self, client: redis.Redis, signing_key: bytes,
                 heartbeat_seconds: float = 15.0,
                 is_protected: Callable[[str], bool] | None = None) -> None:
        if not signing_key:
            raise ValueError("the revert journal needs a signing key (PYSTOL_SIGNING_KEY)")
        self.redis = client
        self.heartbeat_seconds = heartbeat_seconds
        self._key = signing_key
        self._is_protected = is_protected or (lambda namespace: False)
        self._unlock = client.register_script(_UNLOCK_IF_OURS)

    def is_protected(self, namespace: str) -> bool:
        return self._is_protected(namespace)

    # -- entries --------------------------------------------------------------------------------

    def record(self, entry: JournalEntry) -> JournalEntry:
        entry.signature = seal(self._key, entry.payload())
        with self.redis.pipeline() as pipe:
            pipe.hset(PREFIX + "journal", entry.id, entry.model_dump_json())
            pipe.sadd(f"{PREFIX}journal:job:{entry.job_id}", entry.id)
            for key in target_lock_keys([entry.target]):
                pipe.sadd(journal_key(key), f"{entry.job_id}|{entry.id}")
            pipe.execute()
        return entry

    def resolve(self, entry: JournalEntry) -> None:
        # Not a MULTI: a Redis at maxmemory refuses every command queued in a transaction,
        # deletes included, and a reverted fault's entry must still leave the journal.
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(PREFIX + "journal", entry.id)
            pipe.srem(f"{PREFIX}journal:job:{entry.job_id}", entry.id)
            for key in target_lock_keys([entry.target]):
                pipe.srem(journal_key(key), f"{entry.job_id}|{entry.id}")
            pipe.execute()

    def entries(self, job_id: str | None = None) -> list[JournalEntry]:
        """The genuine entries (of one job, or all), newest first; see `read`."""
        return self.read(job_id).entries

    def read(self, job_id: str | None = None) -> JournalRead:
        """Verify every entry; refused ones are moved to `journal:refused`, logged and
        counted here, so that no caller can undo an entry without it being checked."""
        if job_id is None:
            raw: dict[Any, Any] = self.redis.hgetall(PREFIX + "journal")
        else:
            ids = sorted(self.redis.smembers(f"{PREFIX}journal:job:{job_id}"))
            values = self.redis.hmget(PREFIX + "journal", ids) if ids else []
            raw = {entry_id: value for entry_id, value in zip(ids, values, strict=True)
                   if value}
        found = JournalRead()
        for raw_key, value in raw.items():
            # Whatever a Redis writer put there (bytes that are no UTF-8, a signature of
            # any characters, JSON nested a thousand deep), one entry can only be refused:
            # it must never stop the reaper from undoing the genuine ones.
            try:
                found.entries.append(self._verified(_text(raw_key), value))
            except JournalEntryRefused as refused:
                refused.raw_key = raw_key
                found.refused.append(refused)
            except Exception as error:
                found.refused.append(JournalEntryRefused(
                    _text(raw_key), "unreadable",
                    f"not a journal entry ({error.__class__.__name__})", raw_key=raw_key))
        if found.refused:
            self._quarantine(found.refused, raw)
        found.entries.sort(key=lambda entry: entry.created_at, reverse=True)
        return found

    def _verified(self, entry_id: str, value: Any) -> JournalEntry:
        try:
            entry = JournalEntry.model_validate_json(value)
        except (ValidationError, ValueError) as error:
            raise JournalEntryRefused(entry_id, "unreadable",
                                      f"not a journal entry ({error.__class__.__name__})"
                                      ) from None
        if not entry.signature:
            raise JournalEntryRefused(entry_id, "unsigned", "it carries no signature, so "
                                      "Pystol did not write it", entry)
        if entry.id != entry_id or not is_sealed(self._key, entry.payload(), entry.signature):
            raise JournalEntryRefused(entry_id, "altered", "its signature does not match "
                                      "its content: it was altered or forged", entry)
        return entry

    def _quarantine(self, refused: list[JournalEntryRefused], raw: dict[Any, Any]) -> None:
        """Move refused entries aside. Best effort: when Redis refuses (it is full, say),
        they stay where they are, are refused again next pass, and the genuine entries
        are undone all the same."""
        try:
            self._move_aside(refused, raw)
            record_journal_refused(self.redis, [item.reason for item in refused])
        except redis.RedisError as error:
            log.warning("revert journal: could not move %d refused entr(y/ies) aside: %s",
                        len(refused), error)

    def _move_aside(self, refused: list[JournalEntryRefused], raw: dict[Any, Any]) -> None:
        # Not a MULTI, and every command on its own: a full Redis refuses the copy into
        # journal:refused, but the HDEL out of the journal still goes through.
        with self.redis.pipeline(transaction=False) as pipe:
            for item in refused:
                what = item.entry.describe() if item.entry else "an unreadable entry"
                log.error("revert journal: refused %s (%s): %s; it is NOT undone and was "
                          "moved to %sjournal:refused. Something other than Pystol writes "
                          "to Redis: check who can reach it", item.entry_id, what,
                          item.detail, PREFIX)
                pipe.hset(PREFIX + "journal:refused", item.entry_id, json.dumps(
                    {"reason": item.reason, "detail": item.detail, "refused_at":
                     utcnow().isoformat(), "entry": _text(raw.get(item.raw_key, ""))[:8192]}))
                pipe.hdel(PREFIX + "journal", item.raw_key)
                if item.entry is not None:
                    # Out of the job's set and the target locks' too: a refused entry is no
                    # fault Pystol holds, so it must not keep its target locked either.
                    pipe.srem(f"{PREFIX}journal:job:{item.entry.job_id}", item.entry_id)
                    for key in target_lock_keys([item.entry.target]):
                        pipe.srem(journal_key(key), f"{item.entry.job_id}|{item.entry_id}")
            pipe.execute(raise_on_error=False)

    def count(self) -> int:
        return int(self.redis.hlen(PREFIX + "journal"))

    # -- heartbeats -------------------------------------------------------------------------------

    def beat(self, job_id: str) -> None:
        self.redis.set(f"{PREFIX}heartbeat:{job_id}", "1",
                       px=int(self.heartbeat_seconds * 1000))

    def beat_command(self, job_id: str) -> tuple[str, str, str, str, int]:
        """`beat` as a command, for the job store's claim to write with the status: a job
        is never RUNNING without a heartbeat, not even for the round trip after its claim."""
        return ("SET", f"{PREFIX}heartbeat:{job_id}", "1", "PX",
                int(self.heartbeat_seconds * 1000))

    def stop_beating_command(self, job_id: str) -> tuple[str, str]:
        """`stop_beating` as a command, for the job store's finish to write with the end."""
        return ("DEL", f"{PREFIX}heartbeat:{job_id}")

    def stop_beating(self, job_id: str) -> None:
        self.redis.delete(f"{PREFIX}heartbeat:{job_id}")

    def alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"{PREFIX}heartbeat:{job_id}"))

    def heartbeat(self, job_id: str, on_beat: Callable[[], None] | None = None,
                  beating: bool = False) -> Heartbeat:
        """`beating`: the key is already set (`beat_command` went with the claim)."""
        return Heartbeat(self, job_id, on_beat, beating)

    # -- undo -------------------------------------------------------------------------------------

    def undo(self, cluster: Cluster, entry: JournalEntry,
             registry: UndoRegistry) -> None:
        """Undo one change and drop its entry; raises (keeping the entry) when the undo fails,
        and JournalEntryRefused (the entry quarantined) when it names a protected namespace."""
        protected = sorted(ns for ns in entry.namespaces() if self._is_protected(ns))
        if protected:
            refused = JournalEntryRefused(entry.id, "protected",
                                          f"it would change namespace {protected[0]!r}, "
                                          "which is protected", entry)
            self._quarantine([refused], {entry.id: entry.model_dump_json()})
            self.resolve(entry)
            raise refused
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
            except JournalEntryRefused as refused:
                failed.append((entry, f"refused: {refused.detail}"))
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


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


FAULT_MARK = "chaos.pystol.org/fault-of"
"""Annotation an injected fault leaves on the object it changed (value: the job id), where
the change has no mark of its own; the undo acts only while it is there, and removes it."""


def same_object(obj: Mapping[str, Any], entry: JournalEntry) -> bool:
    """Whether `obj` is the object the entry recorded: same uid. An entry without a uid
    matches nothing, so an undo never guesses by name."""
    uid = (obj.get("metadata") or {}).get("uid")
    return bool(entry.target.uid) and uid == entry.target.uid


class Heartbeat:
    """Keeps a job's heartbeat key alive from a daemon thread while the job runs.

    `beating`: the key was set with the job's claim, so entering sets it no second time.
    The runner ends a job with `stop()` then the store's finish carrying
    `stop_beating_command` and `ended()`: the key (alive for a whole heartbeat period after
    the last beat) goes in the same write as the terminal status, so the reaper can never
    see a running job without one, and leaving costs no round trip of its own."""

    def __init__(self, journal: RevertJournal, job_id: str,
                 on_beat: Callable[[], None] | None = None, beating: bool = False) -> None:
        self.journal = journal
        self.job_id = job_id
        self.on_beat = on_beat
        self._beating = beating
        self._removed = False
        self.every = max(0.2, journal.heartbeat_seconds / 5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        if not self._beating:
            self.journal.beat(self.job_id)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing the key (it stays until its expiry or its removal)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def ended(self) -> None:
        """The key was removed with the job's end (`stop_beating_command`)."""
        self._removed = True

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if not self._removed:
            self.journal.stop_beating(self.job_id)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.journal.beat(self.job_id)
                if self.on_beat is not None:
                    self.on_beat()
            except redis.RedisError as error:
                log.warning("heartbeat for %s failed: %s", self.job_id, error)
