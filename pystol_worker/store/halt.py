"""The global kill switch: stop new injections at once, abort running jobs, refuse new ones.

The switch is one Redis key. Workers read it before every injecting call (the
same read that notices a cancelled job), so within one round trip of
`POST /api/v1/halt` no worker injects again; running jobs then revert and end
`aborted`, queued ones are cancelled, and submissions get 409 until it is lifted.
"""

from __future__ import annotations

import json
from datetime import datetime

import redis
from pydantic import BaseModel

from pystol_worker.core.model import JobStatus, utcnow
from pystol_worker.store.job_store import HALT_KEY, JobStore, TransitionRefused


class HaltState(BaseModel):
    halted: bool
    by: str | None = None
    reason: str | None = None
    since: datetime | None = None
    cancelled_jobs: int = 0
    aborted_jobs: int = 0


class ChaosHalted(Exception):
    """New jobs are refused while the global halt is engaged."""

    def __init__(self, state: HaltState) -> None:
        since = state.since.isoformat() if state.since else "?"
        super().__init__(f"chaos is halted (by {state.by} since {since}"
                         + (f": {state.reason}" if state.reason else "")
                         + "); lift the halt (DELETE /api/v1/halt, `pystol halt --off`) first")
        self.state = state


class HaltSwitch:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def state(self) -> HaltState:
        raw = self.redis.get(HALT_KEY)
        if raw is None:
            return HaltState(halted=False)
        return HaltState(halted=True, **json.loads(raw))

    def engage(self, store: JobStore, by: str, reason: str | None = None) -> HaltState:
        """Halt: set the switch first (workers stop injecting), then stop every job."""
        since = utcnow()
        self.redis.set(HALT_KEY, json.dumps({"by": by, "reason": reason,
                                             "since": since.isoformat()}))
        cancelled = aborted = 0
        for status in (JobStatus.QUEUED, JobStatus.RUNNING):
            cursor = None
            while True:
                page = store.list(status=status, cursor=cursor, limit=200)
                for record in page.items:
                    try:
                        after = store.request_cancel(record.id, f"halt by {by}")
                    except TransitionRefused:
                        continue
                    if after.status == JobStatus.CANCELLED:
                        cancelled += 1
                    else:
                        aborted += 1
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        return HaltState(halted=True, by=by, reason=reason, since=since,
                         cancelled_jobs=cancelled, aborted_jobs=aborted)

    def refuse_if_halted(self) -> None:
        state = self.state()
        if state.halted:
            raise ChaosHalted(state)

    def release(self) -> HaltState:
        self.redis.delete(HALT_KEY)
        return HaltState(halted=False)

    def halted_by(self) -> str | None:
        raw = self.redis.get(HALT_KEY)
        if raw is None:
            return None
        return str(json.loads(raw).get("by") or "someone")
