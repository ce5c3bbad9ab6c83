"""No overlap: two running jobs never hold faults on the same workload or node.

A job takes one lock per workload or node it is about to touch, all or
nothing (a Lua script), before injecting. Locks expire with the job's
heartbeat, so a dead worker cannot keep a target locked; the heartbeat
refreshes them while the job runs.
"""

from __future__ import annotations

import redis

PREFIX = "pystol:lock:"

_ACQUIRE = """
local owners = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner and owner ~= ARGV[1] then table.insert(owners, key .. '=' .. owner) end
end
if #owners > 0 then return owners end
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
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
        owners = self._acquire(keys=keys, args=[job_id, int(ttl_seconds * 1000)])
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
