"""The two signals an experiment run sends the jobs of its steps, through Redis.

- `xrun:{run}:stop` — the run must stop: every running step job of it aborts (and reverts)
  at its next check, as it would for a cancel or a halt. The value says why:
  `{"cause": "probe"|"cancel"|"halt"|"step-aborted"|"deadline", "reason": ..., "by": ...}`.
  A job's `RunContext` reads it in the same MGET as its cancel flag and the halt.
- `job:{id}:release` — an `until-rollback` step's fault may end now: `RunContext.hold`
  returns early and the fault is reverted as at the end of its duration. Releasing is not
  an abort, and forging the key only shortens a fault.

The release key expires (a day). The stop key does not expire while its run goes on: a
step job deferred to a later chaos window, or queued behind others, must still find it
when it starts, however long after the stop that is (the engine also cancels such jobs).
The engine removes it, or gives it a day to live, once the run has ended and none of its
step jobs is left running (`forget_run_stop`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import redis

PREFIX = "pystol:"
SIGNAL_SECONDS = 24 * 3600

StopCause = Literal["probe", "cancel", "halt", "step-aborted", "deadline"]


def run_stop_key(run_id: str) -> str:
    return f"{PREFIX}xrun:{run_id}:stop"


def release_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:release"


@dataclass(frozen=True)
class RunStop:
    cause: str
    reason: str
    by: str | None = None

    @classmethod
    def parse(cls, raw: bytes | str | None) -> RunStop | None:
        if raw is None:
            return None
        try:
            data: Any = json.loads(raw)
        except ValueError:
            return cls("cancel", "stopped (the stop signal could not be read)")
        if not isinstance(data, dict):
            return cls("cancel", "stopped (the stop signal could not be read)")
        return cls(str(data.get("cause") or "cancel")[:40],
                   str(data.get("reason") or "stopped")[:1000],
                   None if data.get("by") is None else str(data["by"])[:200])


def stop_run(client: redis.Redis, run_id: str, cause: StopCause, reason: str,
             by: str | None = None) -> bool:
    """Ask every step job of the run to stop; the first stop wins (its reason is the
    run's). True when this call set it."""
    value = json.dumps({"cause": cause, "reason": reason[:1000], "by": by})
    return bool(client.set(run_stop_key(run_id), value, nx=True))


def keep_run_stop(client: redis.Redis, run_id: str) -> None:
    """The run is not over: its stop, if any, stays without an expiry (a stop key set by
    an older version with a TTL, or given one by `forget_run_stop` too early, is kept)."""
    client.persist(run_stop_key(run_id))


def forget_run_stop(client: redis.Redis, run_id: str, jobs_left: bool) -> None:
    """The stop did its work. With step jobs of the run still not ended (they were asked
    to cancel too), it stays a day as a second signal; otherwise it goes now."""
    if jobs_left:
        client.expire(run_stop_key(run_id), SIGNAL_SECONDS)
    else:
        client.delete(run_stop_key(run_id))


def run_stopped(client: redis.Redis, run_id: str) -> RunStop | None:
    return RunStop.parse(client.get(run_stop_key(run_id)))


def release_job(client: redis.Redis, job_id: str) -> None:
    client.set(release_key(job_id), "1", ex=SIGNAL_SECONDS)


def released(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(release_key(job_id)))


def step_refusal(client: redis.Redis, run_id: str, path: str, now: datetime) -> str | None:
    """Why a step job of run `run_id` at `path` may not start now, or None: the run has
    ended, or (a method or hypothesis step) the run is past its deadline. The
    runner asks it before the job touches the cluster, so that a step job queued or
    deferred for long (a chaos window in wait mode) never injects after its run is over,
    even if the engine's cancel did not reach it. Rollback steps may run past the
    deadline (the engine ends the run, and cancels them, at deadline + grace)."""
    raw = client.get(f"{PREFIX}xrun:{run_id}")
    if raw is None:
        # Only an ended run's record expires (after the job retention); a step job that
        # outlived it also finds no stop key, but still its own sealed grant. Not refused
        # here, so that a job linked to a run can be run on its own (tests, rehearsals).
        return None
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return f"refused: experiment run {run_id} cannot be read"
    if not isinstance(data, dict):
        return f"refused: experiment run {run_id} cannot be read"
    status = str(data.get("status") or "")
    if status in ("completed", "aborted", "cancelled", "skipped"):
        return f"refused: experiment run {run_id} already ended {status}"
    output = data.get("output")
    deadline_raw = output.get("deadline_at") if isinstance(output, dict) else None
    if not path.startswith("rollbacks") and isinstance(deadline_raw, str):
        try:
            deadline = datetime.fromisoformat(deadline_raw)
        except ValueError:
            return None
        if now >= deadline:
            return (f"refused: experiment run {run_id} passed its deadline "
                    f"({deadline.isoformat()}) before this step started")
    return None
