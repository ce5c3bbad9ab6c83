"""While Redis is down the rate limits are counted in each API process's memory. A client
inventing a new token per request adds a key per request: the memory must stay bounded and
the flood's own address must keep being counted (and refused)."""

from __future__ import annotations

import redis

from pystol_api.http.rate_limits import RateLimits


def test_memory_counts_stay_bounded_and_keep_counting_the_flooding_address() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    limits = RateLimits([], unreachable, clock=lambda: 100.0, max_memory_keys=10)
    address_counts = []
    for n in range(1000):
        counts, in_redis = limits._hit([f"token-{n}", "address-10.0.0.9"], [60, 60])
        assert not in_redis
        address_counts.append(counts[1])
    assert len(limits._memory) <= 10
    assert address_counts[-1] == 1000  # never evicted: hit on every request
