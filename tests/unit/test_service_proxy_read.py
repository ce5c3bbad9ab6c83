"""http-probe's `service` form: the whole call is bounded by the probe's timeout.

A backend behind the API server's proxy that trickles its answer (a byte every
timeout-minus-a-bit) passes every per-socket-operation timeout; without a deadline over
the whole call it would hold a worker slot until Celery's soft limit, and a cancelled
probe would leave its thread reading. Both sides are checked with fakes: the read loop of
`ClusterAccess.service_proxy_get` against a response that trickles (a fake clock, no
waiting), and http-probe's waiting side, which closes the response on a cancel or at the
deadline.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from pystol_worker.actions.http_probe import HttpProbeAction, HttpProbeParams
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError, TokenBucket
from pystol_worker.safety.outbound_http import ProbeStopped


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TricklingResponse:
    """An answer whose body arrives one byte at a time, each just inside the timeout."""

    status = 200

    def __init__(self, clock: Clock, step: float, size: int | None = None) -> None:
        self.clock, self.step, self.size = clock, step, size
        self.reads = 0
        self.closed = self.released = False

    def read(self, amount: int) -> bytes:
        if self.size is not None and self.reads >= self.size:
            return b""
        self.reads += 1
        self.clock.now += self.step
        return b"x"

    read1 = read

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True


class FakeApiClient:
    def __init__(self, response: TricklingResponse) -> None:
        self.response = response
        self.timeouts: list[Any] = []

    def param_serialize(self, **_: Any) -> tuple[str, str, dict[str, str], None, None]:
        return "GET", "https://api/x", {}, None, None

    def call_api(self, method: str, url: str, header_params: Any = None,
                 _request_timeout: Any = None) -> Any:
        self.timeouts.append(_request_timeout)
        return SimpleNamespace(response=self.response)


def access(response: TricklingResponse) -> tuple[ClusterAccess, FakeApiClient]:
    api = FakeApiClient(response)
    return ClusterAccess(api, TokenBucket(1000.0, 1000)), api  # type: ignore[arg-type]


def test_a_trickling_body_is_cut_off_at_the_calls_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("pystol_worker.kube.cluster_access.time.monotonic", clock)
    response = TricklingResponse(clock, step=4.9)  # a byte every 4.9 s, timeout 5 s
    cluster, api = access(response)
    with pytest.raises(ClusterError, match="timed out"):
        cluster.service_proxy_get("shop", "web", "/", 5.0, 1_000_000)
    assert response.reads <= 3  # not the whole megabyte, one byte at a time
    assert response.closed and response.released  # the connection is not reused
    connect, read = api.timeouts[0]  # (connect, read), not one per-operation number
    assert connect <= 5.0 and read == 5.0


def test_a_body_that_arrives_in_time_is_read_to_its_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("pystol_worker.kube.cluster_access.time.monotonic", clock)
    response = TricklingResponse(clock, step=0.01, size=10)
    cluster, _ = access(response)
    assert cluster.service_proxy_get("shop", "web", "/", 5.0, 100) == (200, 10, False,
                                                                       b"x" * 10)
    assert response.released and not response.closed


class HeldResponse:
    """A response another thread is blocked reading until it is shut down."""

    def __init__(self) -> None:
        self.shut = threading.Event()

    def shutdown(self) -> None:
        self.shut.set()


class HoldingProxy:
    """A service proxy whose backend never finishes (it gives up by itself after 3 s)."""

    def __init__(self) -> None:
        self.response = HeldResponse()

    def service_proxy_get(self, namespace: str, service: str, path: str, timeout: float,
                          max_body: int, on_response: Any = None
                          ) -> tuple[int, int, bool, bytes]:
        if on_response is not None:
            on_response(self.response)
        if self.response.shut.wait(3.0):
            raise OSError("connection closed")
        return 200, 1, False, b"x"


def context(cancelled: bool) -> Any:
    return SimpleNamespace(policy=SimpleNamespace(probes=SimpleNamespace(max_body_bytes=100)),
                           cancelled=lambda: cancelled)


def target() -> Any:
    service = HttpProbeParams.model_validate(
        {"service": {"namespace": "shop", "name": "web"}}).service
    assert service is not None
    return service


def test_a_cancel_closes_the_connection_the_probe_was_reading() -> None:
    proxy = HoldingProxy()
    with pytest.raises(ProbeStopped):
        HttpProbeAction._call_service(context(cancelled=True), proxy, target(), 30.0)
    assert proxy.response.shut.is_set()


def test_the_probes_timeout_bounds_the_whole_call() -> None:
    proxy = HoldingProxy()
    answer = HttpProbeAction._call_service(context(cancelled=False), proxy, target(), 0.3)
    assert answer.status is None and answer.error == "timed out after 0.3s"
    assert proxy.response.shut.is_set()
