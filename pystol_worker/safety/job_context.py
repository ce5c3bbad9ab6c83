"""The two contexts an action sees: one while it selects, one while it runs.

`SelectContext` (the cluster and the settings, nothing else) is what `select()` gets.
A preview (the API's `POST /preview`) builds only this one, and `select()` is typed to
take only this one even in a run or a dry run (the runner's `RunContext` is one), so
selecting cannot journal, lock or record anything. It is the same code whether it
answers a preview, a dry run or a run.

`RunContext` is a `SelectContext` plus what a job that changes the cluster needs, none of
it optional: the job's id, its store (timeline, record), the revert journal, the target
locks and the undo functions of every registered action. In a worker only the runner
builds one, for a job it has claimed. Its `check()` reads Redis every time it is called
(one MGET: the job's cancel flag and the global halt), and actions call it right before
every injecting call: that read is what makes a halt stop injections within one round
trip. The same read carries, for a step of an experiment run, the run's stop key (a
sibling's probe, a cancel of the run) and the job's release key.

Two ways to wait: `sleep(s)` (a pause that only a stop ends) and `hold(s)` (a fault's
hold, which the experiment may also end early by releasing it: the fault is then reverted
as at the end of its duration). Both wake at once when `stop` is set — by a check that saw
a cancel, a halt or a run stop, or by the job's probe loop when a stop-on-failure probe
fails — so a fault never outlives the reason to end it by more than one poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pystol_worker.core.model import (
    EventKind,
    JobRecord,
    JobResult,
    Metrics,
    TimelineEvent,
    utcnow,
)
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster import Cluster
from pystol_worker.safety.revert_journal import RevertJournal, UndoRegistry
from pystol_worker.safety.target_locks import TargetLocks
from pystol_worker.store.job_store import JobStore

CANCEL_POLL_SECONDS = 0.2


class JobAborted(Exception):
    """The job was cancelled (or halted) while running; whatever it changed is reverted."""


@dataclass
class SelectContext:
    """What `select()` may use: read the cluster, read the settings and the admin policy
    (control-plane nodes, the cap on targets). Safe for previews."""

    settings: Settings
    cluster: Cluster
    policy: Policy = field(default_factory=Policy, kw_only=True)


@dataclass
class RunContext(SelectContext):
    """What `execute()` gets: a claimed job with its journal, locks and timeline."""

    store: JobStore
    job_id: str
    journal: RevertJournal
    locks: TargetLocks
    undo_functions: UndoRegistry
    result: JobResult = field(default_factory=JobResult)
    metrics: Metrics = field(default_factory=Metrics)
    stop: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None
    locked: list[str] = field(default_factory=list)
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None
    run_id: str | None = None  # the experiment run the job is a step of
    injected: threading.Event = field(default_factory=threading.Event)
    stopped_by_probe: bool = False  # a probe (its own, or a sibling's via the run) stopped it
    released: bool = False
    # The record as this job last stored it (claim, `update_record`): the expected value of
    # its next compare-and-set, so that a write costs one round trip, not two.
    stored: str | bytes | None = None

    def event(self, kind: str, message: str, **data: Any) -> None:
        """Append to the job's timeline (and tell `on_event`, for tests and local runs).
        The first injection or eviction starts the job's on-chaos probes."""
        self.store.append_event(self.job_id, kind, message, data)
        self._told(kind, message, data)

    def update_record(self, change: Callable[[JobRecord], None], kind: str, message: str,
                      **data: Any) -> None:
        """Change the job's record and append an event, in one compare-and-set against the
        record as this job last stored it. Another writer may have changed it since (a
        cancel request sets `cancel_requested` while the job runs): the write then fails,
        and is retried on the current record, so that change is kept, never overwritten."""
        event = TimelineEvent(at=utcnow(), kind=kind, message=message, data=data)
        self.stored = self.store.write(self.job_id, change, held=self.stored, event=event).raw
        self._told(kind, message, data)

    def _told(self, kind: str, message: str, data: dict[str, Any]) -> None:
        if kind in (EventKind.INJECTED, EventKind.EVICTED):
            self.injected.set()
        if self.on_event is not None:
            self.on_event(kind, message, data)

    def stop_for_probe(self, reason: str) -> None:
        """A stop-on-failure probe failed: end the job now (its faults are reverted)."""
        if not self.stop.is_set():
            self.abort_reason = reason
            self.stopped_by_probe = True
            self.stop.set()

    def cancelled(self) -> bool:
        """True once an abort was asked for: the job was cancelled, chaos was halted, its
        experiment run was stopped, or one of its probes stopped it."""
        if self.stop.is_set():
            return True
        signals = self.store.stop_signals(self.job_id, self.run_id)
        self.released = self.released or signals.released
        if signals.reason is not None:
            self.abort_reason = signals.reason
            self.stopped_by_probe = self.stopped_by_probe or signals.cause == "probe"
            self.stop.set()
            return True
        return False

    def check(self) -> None:
        if self.cancelled():
            raise JobAborted(self.abort_reason or "aborted")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (with JobAborted) when the job is cancelled or halted.

        A pause of no length returns at once without reading the stop signals: it is no
        wait to wake from, and an injecting call after it has its own `check()` (pod-kill's
        first kill sleeps 0 s, then checks: one read of Redis, not two)."""
        if seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stop.wait(min(remaining, CANCEL_POLL_SECONDS))

    def hold(self, seconds: float) -> bool:
        """Hold a fault for `seconds`, like `sleep`, but return early (no exception) once
        the experiment releases the job's fault; True when it was released."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            if self.released:
                self.event(EventKind.RELEASED, "the experiment released the fault")
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.stop.wait(min(remaining, CANCEL_POLL_SECONDS))
