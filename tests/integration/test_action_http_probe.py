"""http-probe against a small HTTP server of the test's own, through the whole pipeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.integration.conftest import Stack


class Handler(BaseHTTPRequestHandler):
    """/ok → 200, /status/NNN → NNN, /slow?ms=N → 200 after N ms, /flaky → 200, 500, 200, …"""

    server: ProbeServer

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.server.hits.append(url.path)
        status = 200
        if url.path.startswith("/status/"):
            status = int(url.path.rsplit("/", 1)[1])
        elif url.path == "/slow":
            time.sleep(int(parse_qs(url.query)["ms"][0]) / 1000)
        elif url.path == "/flaky":
            status = 500 if self.server.hits.count("/flaky") % 2 == 0 else 200
        body = b"pong\n"
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the prober timed out and went away

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ProbeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def count(self, path: str) -> int:
        return self.hits.count(path)


@pytest.fixture(scope="module")
def server() -> Iterator[ProbeServer]:
    httpd = ProbeServer()
    thread = threading.Thread(target=httpd.serve_forever, name="probe-server", daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def probe(url: str, **params: Any) -> dict[str, Any]:
    # target.namespaces only satisfies the shared validation until TargetKind.URL lands.
    params.setdefault("interval", "10ms")
    return {"action": "http-probe", "target": {"namespaces": ["default"]},
            "params": {"url": url, **params}}


def test_healthy_url_reports_statuses_and_percentiles(stack: Stack, server: ProbeServer
                                                      ) -> None:
    journal_before = stack.redis.client().hlen("pystol:journal")
    job = stack.submit(probe(server.url("/ok"), count=5))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert server.count("/ok") == 5
    output = record["result"]["output"]
    assert output["statuses"] == {"200": 5}
    assert output["count"] == 5 and output["succeeded"] == 5
    assert output["success_percent"] == 100
    latency = output["latency_seconds"]
    assert set(latency) >= {"p50", "p90", "p99", "max"}
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 2
    assert len(output["calls"]) == 5 and all(c["status"] == 200 for c in output["calls"])
    assert record["targets"] == [{"kind": "URL", "name": server.url("/ok"), "namespace": None,
                                  "uid": None, "node": None, "workload": None}]
    # It changes nothing: no changes, no journal entry.
    assert record["result"]["changes"] == []
    assert record["metrics"]["targets_affected"] == 0
    assert stack.redis.client().hlen("pystol:journal") == journal_before
    kinds = [event["kind"] for event in record["timeline"]]
    assert {"probing", "probed", "succeeded"} <= set(kinds)


def test_unexpected_status_fails_the_job(stack: Stack, server: ProbeServer) -> None:
    job = stack.submit(probe(server.url("/status/500"), count=3))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed", record
    assert "0/3 calls answered 200" in record["reason"]
    assert "3x 500" in record["reason"]
    assert record["result"]["output"]["statuses"] == {"500": 3}

    job = stack.submit(probe(server.url("/status/500"), count=2, expect_status=500))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record


def test_min_success_percent_tolerates_some_failures(stack: Stack, server: ProbeServer
                                                     ) -> None:
    job = stack.submit(probe(server.url("/flaky"), count=4, min_success_percent=50))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert record["result"]["output"]["statuses"] == {"200": 2, "500": 2}
    job = stack.submit(probe(server.url("/flaky"), count=4, min_success_percent=75))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed", record
    assert "2/4 calls answered 200" in record["reason"]


def test_slow_answers_fail_max_latency(stack: Stack, server: ProbeServer) -> None:
    job = stack.submit(probe(server.url("/slow?ms=300"), count=3, max_latency="100ms"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed", record
    assert "max_latency" in record["reason"]
    latency = record["result"]["output"]["latency_seconds"]
    assert 0.3 <= latency["p50"] < 1.5 and latency["max"] >= 0.3

    job = stack.submit(probe(server.url("/slow?ms=50"), count=2, max_latency="2s"))
    assert stack.wait_for_job(job["id"])["status"] == "succeeded"


def test_timeouts_count_as_errors(stack: Stack, server: ProbeServer) -> None:
    job = stack.submit(probe(server.url("/slow?ms=1500"), count=2, timeout="200ms"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed", record
    output = record["result"]["output"]
    assert output["statuses"] == {"error": 2}
    assert output["latency_seconds"] is None
    assert any("timed out" in error for error in output["errors"])


def test_preview_and_dry_run_call_nothing(stack: Stack, server: ProbeServer) -> None:
    spec = probe(server.url("/dry"), count=3)
    response = stack.call("POST", "/api/v1/preview", json=spec)
    assert response.status_code == 200, response.text
    assert response.json()["chosen"] == [{"kind": "URL", "name": server.url("/dry"),
                                          "namespace": None, "uid": None, "node": None,
                                          "workload": None}]
    job = stack.submit(dict(spec, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    assert server.count("/dry") == 0


def test_cancel_stops_between_calls_and_keeps_the_output(stack: Stack, server: ProbeServer
                                                         ) -> None:
    job = stack.submit(probe(server.url("/long"), count=100, interval="300ms"))
    deadline = time.monotonic() + 20
    while server.count("/long") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    record = stack.wait_for_job(job["id"], timeout=10)
    assert record["status"] == "aborted", record
    made = server.count("/long")
    assert 2 <= made < 100
    assert 1 <= record["result"]["output"]["count"] <= made
    time.sleep(0.5)
    assert server.count("/long") == made  # nothing after the abort


@pytest.mark.parametrize(("spec", "field"), [
    (probe("ftp://example.org/"), "params.url"),
    (probe("http://127.0.0.1/", count=0), "params.count"),
    (probe("http://127.0.0.1/", expect_status=99), "params.expect_status"),
    (dict(probe("http://127.0.0.1/"), duration="10s"), "duration"),
    ({"action": "http-probe", "target": {"namespaces": ["default"]}, "params": {}},
     "params.url"),
])
def test_bad_input_is_refused_with_the_field(stack: Stack, spec: dict[str, Any],
                                             field: str) -> None:
    response = stack.call("POST", "/api/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert field in response.text
