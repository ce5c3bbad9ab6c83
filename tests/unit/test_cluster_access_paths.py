"""evict, exec and watch take ClusterAccess's one rate-limited path, retried as documented.

No server: the client's API methods are replaced on the instance, so these tests see
exactly what the access layer does around them (tokens taken, attempts, counts, errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError, RetryPolicy, TokenBucket


class CountingBucket(TokenBucket):
    def __init__(self) -> None:
        super().__init__(qps=1000, burst=1000)
        self.taken = 0

    def acquire(self) -> float:
        self.taken += 1
        return super().acquire()


@dataclass
class Layer:
    """A ClusterAccess with no server behind it, and what it did: tokens and counts."""

    access: ClusterAccess
    bucket: CountingBucket
    counted: list[tuple[str, int]]


@pytest.fixture
def layer() -> Layer:
    bucket, counted = CountingBucket(), []
    access = ClusterAccess(ApiClient(), bucket, RetryPolicy(attempts=4, base_delay=0),
                           on_request=lambda verb, code: counted.append((verb, code)))
    return Layer(access, bucket, counted)


def failing(*statuses: int, then: Any = None) -> Any:
    """A client method that fails with these statuses in turn, then returns `then`."""
    left = list(statuses)
    calls: list[tuple[Any, ...]] = []

    def method(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if left:
            raise ApiException(status=left.pop(0), reason="test")
        return then
    method.calls = calls  # type: ignore[attr-defined]
    return method


def test_evict_is_one_rate_limited_request_that_node_drain_retries_itself(
        layer: Layer, monkeypatch: pytest.MonkeyPatch) -> None:
    """No retry inside the layer: between two tries of an eviction node-drain checks the
    halt switch, which a retry loop in here could not."""
    monkeypatch.setattr(layer.access.core, "create_namespaced_pod_eviction", failing(503))
    with pytest.raises(ClusterError) as failed:
        layer.access.evict("shop", "web-1", 0)
    assert failed.value.status == 503
    assert layer.bucket.taken == 1
    assert layer.counted == [("create", 503)]
    layer.access.evict("shop", "web-1", 0)
    assert layer.counted == [("create", 503), ("create", 200)]


def test_evict_hands_a_disruption_budgets_429_to_the_caller_at_once(
        layer: Layer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layer.access.core, "create_namespaced_pod_eviction", failing(429))
    with pytest.raises(ClusterError) as refused:
        layer.access.evict("shop", "web-1")
    assert refused.value.status == 429
    assert layer.bucket.taken == 1


class FakeStream:
    returncode = 0

    def run_forever(self, timeout: float) -> None:
        pass

    def peek_stdout(self) -> bool:
        return True

    def read_stdout(self) -> str:
        return "bye"

    def peek_stderr(self) -> bool:
        return False

    def read_stderr(self) -> str:
        return ""

    def close(self) -> None:
        pass


def test_exec_is_rate_limited_counted_and_never_retried(layer: Layer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import kubernetes.stream

    opened = failing(500, then=FakeStream())
    monkeypatch.setattr(kubernetes.stream, "stream", opened)
    with pytest.raises(ClusterError) as failed:
        layer.access.exec_in_pod("shop", "web-1", "app", ["kill", "1"])
    assert failed.value.status == 500 and len(opened.calls) == 1
    assert layer.access.exec_in_pod("shop", "web-1", "app", ["kill", "1"]) == (0, "bye", "")
    assert layer.bucket.taken == 2
    assert layer.counted == [("create", 500), ("create", 200)]


class FakeWatchResponse:
    status = 200

    def stream(self, amt: int, decode_content: bool) -> Iterator[bytes]:
        yield b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n{"type": "DEL'
        yield b'ETED", "object": {"metadata": {"name": "a"}}}\n'

    def release_conn(self) -> None:
        pass


def test_opening_a_watch_is_retried_like_any_get(layer: Layer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layer.access.watch_core, "list_namespaced_pod",
                        failing(429, 502, then=FakeWatchResponse()))
    events = list(layer.access.watch_pods("shop", "app=web", "42", 5))
    assert events == [("ADDED", {"metadata": {"name": "a"}}),
                      ("DELETED", {"metadata": {"name": "a"}})]
    assert layer.bucket.taken == 3
    assert layer.counted == [("watch", 429), ("watch", 502), ("watch", 200)]
