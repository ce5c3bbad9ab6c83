"""The two signals an experiment run sends the jobs of its steps, through Redis.

- `xrun:{run}:stop` — the run must stop: every running step job of it aborts (and reverts)
  at its next check, as it would for a cancel or a halt. The value says why:
  `{"cause": "probe"|"cancel"|"halt"|"step-aborted"|"deadline", "reason": ..., "by": ...}`.
  A job's `RunContext` reads it in the same MGET as its cancel flag and the halt.
- `job:{id}:release` — an `until-rollback` step's fault may end now: `RunContext.hold`
  returns early and the fault is reverted as at the end of its duration. Releasing is not
  an abort, and forging the key only shortens a fault.

Both keys expire (a day): a run or job that never reads them leaves nothing for ever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    return bool(client.set(run_stop_key(run_id), value, nx=True, ex=SIGNAL_SECONDS))


def run_stopped(client: redis.Redis, run_id: str) -> RunStop | None:
    return RunStop.parse(client.get(run_stop_key(run_id)))


def release_job(client: redis.Redis, job_id: str) -> None:
    client.set(release_key(job_id), "1", ex=SIGNAL_SECONDS)


def released(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(release_key(job_id)))
