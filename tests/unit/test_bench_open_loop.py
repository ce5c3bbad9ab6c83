"""The open-loop client of bench.pipeline (a): latency counts from each request's
scheduled send time, so a stalled server shows in the figures (no coordinated omission)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.pipeline import open_loop


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers
    stall_first = 0.0
    seen = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Handler.seen += 1
        if Handler.seen == 1 and Handler.stall_first:
            time.sleep(Handler.stall_first)
        body = b'{"id": "j-1"}'
        self.send_response(202)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    Handler.seen = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_every_scheduled_request_is_sent_and_answered(server: int) -> None:
    result = asyncio.run(open_loop(server, "/api/v1/jobs", rate=200, seconds=0.5,
                                   connections=2))
    assert result["requests"] == 100 and Handler.seen == 100
    assert result["errors"] == 0


def test_a_stall_delays_the_requests_scheduled_behind_it(server: int) -> None:
    # One connection, a request every 10 ms, the first answer takes at least 0.3 s: the
    # requests scheduled in its first 0.1 s cannot end before it, so at least 10 of the
    # 100 latencies (from the schedule) are >= 0.2 s whatever the machine's speed (a lower
    # bound, not a timing expectation). Timed from the actual send, as a closed-loop client
    # does, they would look fast.
    Handler.stall_first = 0.3
    try:
        result = asyncio.run(open_loop(server, "/api/v1/jobs", rate=100, seconds=1.0,
                                       connections=1))
    finally:
        Handler.stall_first = 0.0
    latency = result["latency_s"]
    assert result["requests"] == 100 and result["errors"] == 0
    assert latency["p95"] >= 0.2  # the queue behind the stall, not only the stalled one
    assert result["client_lag_s"]["p95"] >= 0.2  # and the client says it wrote them late
