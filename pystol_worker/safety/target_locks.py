"""No overlap: two running jobs never hold faults on the same workload or node.

A job takes one lock per workload or node it is about to touch, all or
nothing (a Lua script), before injecting. Locks expire with the job's
heartbeat, so a dead worker cannot keep a target locked; the heartbeat
refreshes them while the job runs. A target also counts as held while any
other job still has a revert-journal entry on it: the fault of a dead job is
still in the cluster until the reaper reverted it, and a job that started on
top of it would take the fault for the original state.
"""

from __future__ import annotations

import redis

from pystol_worker.core.model import TargetRef

PREFIX = "pystol:lock:"

JOURNAL_PREFIX = "pystol:journal:lock:"

# KEYS: n lock keys, then the n journal sets of the same targets. ARGV: job id, ttl ms, n.
_ACQUIRE = """
local n = tonumber(ARGV[3])
local owners = {}
for i = 1, n do
  local owner = redis.call('GET', KEYS[i])
  if owner and owner ~= ARGV[1] then table.insert(owners, KEYS[i] .. '=' .. owner) end
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[n + i])) do
    local holder = string.match(member, '^(.-)|')
    if holder and holder ~= ARGV[1] then table.insert(owners, KEYS[i] .. '=' .. holder) end
  end
end
if #owners > 0 then return owners end
for i = 1, n do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return {}
"""

_RELEASE = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""

_REFRESH = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) end
end
return 0
"""


def lock_key(kind: str, namespace: str | None, name: str) -> str:
    return f"{PREFIX}{kind}/{namespace or '-'}/{name}"


def target_lock_keys(refs: list[TargetRef]) -> list[str]:
    """One lock per workload (or bare pod) and per node the job touches."""
    keys = set()
    for ref in refs:
        if ref.workload is not None:
            keys.add(lock_key(ref.workload.kind, ref.workload.namespace, ref.workload.name))
        else:
            keys.add(lock_key(ref.kind, ref.namespace, ref.name))
    return sorted(keys)


def journal_key(lock: str) -> str:
    """The set of journal entries ('job|entry') that keep a target held."""
    return JOURNAL_PREFIX + lock.removeprefix(PREFIX)


class TargetLocks:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._refresh = client.register_script(_REFRESH)

    def acquire(self, job_id: str, keys: list[str], ttl_seconds: float) -> dict[str, str]:
        """Take every lock or none; returns {target: job holding it} for the conflicts."""
        if not keys:
            return {}
        owners = self._acquire(keys=[*keys, *(journal_key(key) for key in keys)],
                               args=[job_id, int(ttl_seconds * 1000), len(keys)])
        conflicts = {}
        for item in owners:
            text = item.decode() if isinstance(item, bytes) else str(item)
            key, owner = text.rsplit("=", 1)
            conflicts[key.removeprefix(PREFIX)] = owner
        return conflicts

    def release(self, job_id: str, keys: list[str]) -> None:
        if keys:
            self._release(keys=keys, args=[job_id])

    def refresh(self, job_id: str, keys: list[str], ttl_seconds: float) -> None:
        if keys:
            self._refresh(keys=keys, args=[job_id, int(ttl_seconds * 1000)])
