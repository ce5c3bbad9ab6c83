"""What an action sees while it runs: the cluster, the clock, the timeline and cancellation.

A preview (the API's `POST /preview`) gets the same context without a job, so an
action's `select()` is the same code whether it answers a preview or a run.
`check()` reads Redis every time it is called (one MGET: the job's cancel flag
and the global halt), and actions call it right before every injecting call:
that read is what makes a halt stop injections within one round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pystol_worker.core.model import JobResult, Metrics
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import ClusterAccess
from pystol_worker.safety.revert_journal import RevertJournal
from pystol_worker.safety.target_locks import TargetLocks
from pystol_worker.store.job_store import JobStore

CANCEL_POLL_SECONDS = 0.2


class JobAborted(Exception):
    """The job was cancelled (or halted) while running; whatever it changed is reverted."""


@dataclass
class JobContext:
    settings: Settings
    cluster: ClusterAccess
    store: JobStore | None = None
    job_id: str | None = None
    journal: RevertJournal | None = None
    locks: TargetLocks | None = None
    result: JobResult = field(default_factory=JobResult)
    metrics: Metrics = field(default_factory=Metrics)
    stop: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None
    locked: list[str] = field(default_factory=list)
    on_event: Callable[[str, str, dict[str, Any]], None] | None = None

    def event(self, kind: str, message: str, **data: Any) -> None:
        if self.store is not None and self.job_id is not None:
            self.store.append_event(self.job_id, kind, message, data)
        if self.on_event is not None:
            self.on_event(kind, message, data)

    def cancelled(self) -> bool:
        """True once an abort was asked for: the job was cancelled or chaos was halted."""
        if self.stop.is_set():
            return True
        if self.store is not None and self.job_id is not None:
            reason = self.store.stop_reason(self.job_id)
            if reason is not None:
                self.abort_reason = reason
                self.stop.set()
                return True
        return False

    def check(self) -> None:
        if self.cancelled():
            raise JobAborted(self.abort_reason or "aborted")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (with JobAborted) when the job is cancelled or halted."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stop.wait(min(remaining, CANCEL_POLL_SECONDS))
