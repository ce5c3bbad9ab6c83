"""The submit script: a new job stored in one Redis round trip.

Storing a job used to take four round trips (the halt GET, INCR of the sequence, a
MULTI with the record, timeline and indexes, the submitted counter) and the audit record
a fifth. This Lua script does all of it at once, in this order:

1. **halt** (when asked: the submission service does, a producer that checked
   itself may not): the global kill switch is read inside the script, so a halt set before the
   script runs can never be followed by a stored job (with a GET beforehand, a halt set
   between the GET and the write could be);
2. **idempotency**: with a key, `SET NX` it to the new job; a key already taken is
   answered with its value and nothing is written (the store decides what that means);
3. **store**: INCR the sequence, SET the record (the bytes `JobStore.create` serialised),
   RPUSH the `queued` event, ZADD every index;
4. **count** the submission (HINCRBY of `pystol_jobs_submitted_total`);
5. **audit** (optional): XADD the submission's `ok` record with the same id, cap and
   trimming `AuditLog` uses (`*` when the clock is behind the stream's newest entry).

Every key is passed in KEYS. The script is registered once per client
(`redis.Redis.register_script`: EVALSHA, and EVAL once after a SCRIPT FLUSH).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis

from pystol_worker.store.audit_log import StreamEntry

SUBMIT_LUA = """
if ARGV[12] == '1' then
  local halt = redis.call('GET', KEYS[1])
  if halt then return {'halted', halt} end
end
if ARGV[5] ~= '' then
  if not redis.call('SET', KEYS[8], ARGV[5], 'NX', 'EX', ARGV[6]) then
    return {'taken', redis.call('GET', KEYS[8]) or '{}'}
  end
end
local seq = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[2])
redis.call('ZADD', KEYS[5], seq, ARGV[3])
redis.call('ZADD', KEYS[6], seq, ARGV[3])
for i = 10, #KEYS do redis.call('ZADD', KEYS[i], seq, ARGV[3]) end
-- From here on the job is stored: a counter or audit write that fails (a key of the
-- wrong type, written by hand) must not abort the script half-way, leaving a stored job
-- that is never queued. It is reported (audit id '') and the submission goes on.
redis.pcall('HINCRBY', KEYS[7], ARGV[4], 1)
local audit_id = ''
if ARGV[7] ~= '' then
  local added = redis.pcall('XADD', KEYS[9], 'MAXLEN', ARGV[11], ARGV[9], ARGV[8], 'r', ARGV[7])
  if type(added) == 'table' and added.err then
    added = redis.pcall('XADD', KEYS[9], 'MAXLEN', ARGV[11], ARGV[9], '*', 'r', ARGV[7])
  end
  if type(added) == 'string' then
    redis.pcall('XTRIM', KEYS[9], 'MINID', ARGV[11], ARGV[10])
    audit_id = added
  end
end
return {'stored', seq, audit_id}
"""


class SubmitAudit(Protocol):
    """The audit record a submit script appends: `entry(job_id)` is asked for before the
    script runs (the record names the job), `stored(entry_id)` is told its stream id once
    the job is stored."""

    def entry(self, job_id: str) -> StreamEntry: ...

    def stored(self, entry_id: str) -> None: ...


class HaltedAtSubmit(Exception):
    """The script found the global halt engaged and stored nothing; `raw` is the halt
    key's value (`HaltState.from_raw` reads it)."""

    def __init__(self, raw: bytes | str) -> None:
        super().__init__("chaos is halted")
        self.raw = raw


@dataclass(frozen=True)
class SubmitKeys:
    halt: str
    seq: str
    record: str
    timeline: str
    jobs: str
    status_index: str
    counters: str
    idempotency: str | None
    indexes: list[str]


@dataclass(frozen=True)
class Stored:
    """The script stored the job: its sequence number and the audit entry's id ("" when
    none was asked for)."""

    seq: int
    audit_id: str


@dataclass(frozen=True)
class Taken:
    """The idempotency key was taken; `value` is what it holds."""

    value: bytes


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SubmitScript:
    """The script registered on one client; `run` is one round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(SUBMIT_LUA)

    def run(self, keys: SubmitKeys, *, record: str, event: str, job_id: str,
            counter_field: str, idempotency_value: str | None, idempotency_seconds: int,
            audit: StreamEntry | None, refuse_when_halted: bool) -> Stored | Taken:
        """Raises HaltedAtSubmit when `refuse_when_halted` and the halt is engaged
        (nothing was written)."""
        all_keys = [keys.halt, keys.seq, keys.record, keys.timeline, keys.jobs,
                    keys.status_index, keys.counters,
                    keys.idempotency or keys.record,  # unused without a key
                    audit.key if audit is not None else keys.record,  # unused without audit
                    *keys.indexes]
        args: list[str | int] = [record, event, job_id, counter_field, idempotency_value or "",
                idempotency_seconds,
                audit.document if audit is not None else "",
                audit.first_id if audit is not None else "",
                audit.max_records if audit is not None else 0,
                audit.minid if audit is not None else "",
                audit.trim if audit is not None else "~",
                "1" if refuse_when_halted else "0"]
        answer = cast(list[Any], self._script(keys=all_keys, args=args))
        kind = _text(answer[0])
        if kind == "halted":
            raise HaltedAtSubmit(answer[1])
        if kind == "taken":
            value = answer[1]
            return Taken(value if isinstance(value, bytes) else str(value).encode())
        return Stored(int(answer[1]), _text(answer[2]))
