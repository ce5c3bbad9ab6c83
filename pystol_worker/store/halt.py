"""The global kill switch: stop new injections at once, abort running jobs, refuse new ones.

The switch is one Redis key. Workers read it before every injecting call (the
same read that notices a cancelled job), so within one round trip of
`POST /api/v1/halt` no worker injects again; running jobs then revert and end
`aborted`, queued ones are cancelled, and submissions get 409 until it is lifted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime

import redis
from pydantic import BaseModel, Field

from pystol_worker.core.model import JobStatus, utcnow
from pystol_worker.store.job_store import HALT_KEY, JobStore, TransitionRefused
from pystol_worker.store.run_signals import stop_run

#: The experiment runs that have not ended (kept by `experiments/store.py`): a halt
#: stops each of them, so their rollbacks run and no further step is started.
RUNNING_RUNS_KEY = "pystol:xruns:running"

log = logging.getLogger("pystol.halt")

_SET_EVEN_WHEN_FULL = """#!lua flags=allow-oom
return redis.call('SET', KEYS[1], ARGV[1])
"""


class HaltState(BaseModel):
    halted: bool
    by: str | None = None
    reason: str | None = None
    since: datetime | None = None
    cancelled_jobs: int = 0
    aborted_jobs: int = 0
    stopping_jobs: int = Field(0, description="Queued jobs still being cancelled in the "
                                              "background when the halt answered.")


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
        return self.state_of(self.redis.get(HALT_KEY))

    @staticmethod
    def state_of(raw: bytes | str | None) -> HaltState:
        """The state the halt key's value `raw` describes (None: not halted). Also how the
        submit script's refusal, which read the key itself, becomes a ChaosHalted."""
        if raw is None:
            return HaltState(halted=False)
        return HaltState(halted=True, **json.loads(raw))

    def engage(self, store: JobStore, by: str, reason: str | None = None,
               budget_seconds: float = 0.3) -> HaltState:
        """Halt: set the switch first (workers stop injecting), then stop every job.

        The switch is what makes the halt work: every running job reads it before each
        injecting call, and a queued job a worker picks up while it is set ends without
        touching anything. Ending the records is bookkeeping, and with a long queue it
        costs a few Redis round trips per job, so the kill switch must not wait for it:
        running jobs are asked to abort first, queued ones are cancelled for at most
        `budget_seconds`, and the rest are cancelled by a background thread
        (`stopping_jobs` says how many)."""
        since = utcnow()
        value = json.dumps({"by": by, "reason": reason, "since": since.isoformat()})
        try:
            self.redis.set(HALT_KEY, value)
        except redis.exceptions.OutOfMemoryError:
            # A Redis at maxmemory (noeviction) refuses a plain SET, and the kill switch
            # must work exactly when everything else is failing: a script flagged
            # allow-oom may still write (Redis 7).
            self.redis.eval(_SET_EVEN_WHEN_FULL, 1, HALT_KEY, value)
        deadline = time.monotonic() + budget_seconds
        state = HaltState(halted=True, by=by, reason=reason, since=since)
        self.stop_runs(by, reason)
        for job_id in store.ids_with_status(JobStatus.RUNNING):
            self._stop(store, job_id, by, state)
        queued = store.ids_with_status(JobStatus.QUEUED)
        while queued and time.monotonic() < deadline:
            self._stop(store, queued.pop(0), by, state)
        if queued:
            state.stopping_jobs = len(queued)
            threading.Thread(target=self._stop_all, args=(store, queued, by),
                             name="halt-cancel-queue", daemon=True).start()
        return state

    def stop_runs(self, by: str, reason: str | None) -> int:
        """Set the stop signal of every running experiment run (the first stop wins, so a
        run already stopping keeps its own reason). Their step jobs already stop on the
        halt key; the stop key is what tells each run, when it next advances, to start no
        further step and go to its rollbacks. How many runs this call stopped."""
        text = f"halted by {by}" + (f": {reason}" if reason else "")
        stopped = 0
        for member in self.redis.smembers(RUNNING_RUNS_KEY):
            run_id = member.decode() if isinstance(member, bytes) else str(member)
            try:
                stopped += stop_run(self.redis, run_id, "halt", text, by=by)
            except redis.RedisError as error:
                log.warning("halt: could not stop experiment run %s: %s", run_id, error)
        return stopped

    @staticmethod
    def _stop(store: JobStore, job_id: str, by: str, state: HaltState | None = None) -> None:
        try:
            after = store.request_cancel(job_id, f"halt by {by}")
        except (TransitionRefused, KeyError):
            return  # ended meanwhile
        except ValueError as error:  # a record no model reads (Redis is not trusted)
            log.warning("halt: job %s has an unreadable record: %s", job_id, str(error)[:200])
            return
        if state is None:
            return
        if after.status == JobStatus.CANCELLED:
            state.cancelled_jobs += 1
        else:
            state.aborted_jobs += 1

    def _stop_all(self, store: JobStore, job_ids: list[str], by: str) -> None:
        for job_id in job_ids:
            if self.redis.get(HALT_KEY) is None:
                return  # lifted meanwhile: leave the rest queued
            try:
                self._stop(store, job_id, by)
            except redis.RedisError as error:
                log.warning("halt: could not cancel queued job %s: %s (a worker that picks "
                            "it up while halted ends it without running it)", job_id, error)

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
