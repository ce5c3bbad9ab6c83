"""Tests for pystol_worker.kube.cluster_access's TokenBucket and RetryPolicy (no cluster needed)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from pystol_worker.kube.cluster_access import RetryPolicy, TokenBucket


def test_burst_passes_at_once_then_calls_are_paced_to_qps() -> None:
    bucket = TokenBucket(qps=50, burst=5)
    start = time.monotonic()
    waits = [bucket.acquire() for _ in range(5)]
    burst_elapsed = time.monotonic() - start
    assert waits == [0.0] * 5
    assert burst_elapsed < 0.5  # no sleep at all; the bound only allows for a loaded machine

    start = time.monotonic()
    for _ in range(20):
        bucket.acquire()
    paced = time.monotonic() - start
    # 20 tokens at 50/s take 0.4 s; allow for a slow machine but not for no limit at all
    assert 0.3 <= paced <= 1.2


def test_the_bucket_refills_while_idle_but_not_beyond_the_burst() -> None:
    bucket = TokenBucket(qps=100, burst=3)
    for _ in range(3):
        bucket.acquire()
    time.sleep(0.2)  # long enough to earn 20 tokens, but only 3 fit
    start = time.monotonic()
    waits = [bucket.acquire() for _ in range(3)]
    assert waits == [0.0] * 3
    assert bucket.acquire() > 0  # the fourth must wait: the bucket held no more than 3
    assert time.monotonic() - start < 0.5  # ...one token's wait (10 ms), not a long one


def test_acquire_reports_the_time_it_waited() -> None:
    bucket = TokenBucket(qps=20, burst=1)
    assert bucket.acquire() == 0.0
    start = time.monotonic()
    waited = bucket.acquire()
    elapsed = time.monotonic() - start
    assert waited == pytest.approx(0.05, abs=0.02)
    assert elapsed >= waited * 0.9


def test_the_limit_holds_across_threads() -> None:
    bucket = TokenBucket(qps=100, burst=2)
    start = time.monotonic()

    def worker() -> None:
        for _ in range(10):
            bucket.acquire()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.monotonic() - start
    # 40 calls, 2 free, 38 at 100/s -> 0.38 s; four threads must not multiply the rate
    assert 0.3 <= elapsed <= 1.5


# --------------------------------------------------------------------------- retry policy


@pytest.mark.parametrize(("retry_after", "expected"), [("0", 0.0), ("1", 1.0), ("3", 3.0),
                                                       ("5", 5.0)])
def test_retry_after_is_honoured(retry_after: str, expected: float) -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0)
    for attempt in range(4):
        assert policy.delay(attempt, retry_after) == expected


@pytest.mark.parametrize("retry_after", ["6", "120", "86400"])
def test_retry_after_is_capped_at_max_delay(retry_after: str) -> None:
    assert RetryPolicy(max_delay=5.0).delay(0, retry_after) == 5.0


@pytest.mark.parametrize("retry_after", [None, "", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_without_a_usable_retry_after_the_backoff_applies(retry_after: str | None) -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0)
    delay = policy.delay(0, retry_after)
    assert 0.1 <= delay <= 0.2


def test_backoff_grows_exponentially_with_jitter_and_caps() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0)
    for attempt, full in enumerate([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]):
        delays = [policy.delay(attempt, None) for _ in range(200)]
        assert all(full / 2 <= delay <= full for delay in delays), attempt
        assert len(set(delays)) > 1  # jittered, so retrying clients do not stampede
    assert policy.delay(60, None) <= 5.0


def test_the_jitter_spans_half_to_all_of_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    monkeypatch.setattr(random, "random", lambda: 0.0)
    assert policy.delay(2, None) == pytest.approx(2.0)
    monkeypatch.setattr(random, "random", lambda: 1.0)
    assert policy.delay(2, None) == pytest.approx(4.0)
