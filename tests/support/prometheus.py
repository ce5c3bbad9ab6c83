"""Prometheus for tests: the real one (Debian's `/usr/bin/prometheus`, installed by
`scripts/dev.sh`) scraping what a test serves, and a recording stand-in for unit tests.

- `RealPrometheus` / `real_prometheus(tmp_path, scrape_configs)`: a Prometheus process on a
  free port with its TSDB in `tmp_path`, waited for until it answers queries; `query()`
  asks it like anyone would (GET `/api/v1/query`); `stop()` ends it (a guard then sees it
  down).
- `Exporter`: a tiny `/metrics` endpoint whose gauges the test sets (an SLO burn rate).
- `FakePrometheus`: an HTTP server answering `POST /api/v1/query` (and any GET) with
  whatever JSON the test sets, after `delay` seconds, recording each request's raw body
  and headers, so that a test can see the PromQL arrive verbatim.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.redis_server import free_port

PROMETHEUS = "/usr/bin/prometheus"


def prometheus_binary() -> str:
    """The Prometheus binary; skips the test when it is not installed."""
    if Path(PROMETHEUS).exists():
        return PROMETHEUS
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus is not installed (scripts/dev.sh installs it)")
    return found


@dataclass
class RealPrometheus:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> Any:
        return requests.get(f"{self.url}/api/v1/query", params={"query": promql},
                            timeout=5).json()

    def log(self) -> str:
        return self.log_path.read_text()[-3000:]

    def wait_for(self, promql: str, predicate: Any, seconds: float = 60.0) -> Any:
        """Query until `predicate(result list)` holds; the last answer."""
        deadline = time.monotonic() + seconds
        answer: Any = None
        while time.monotonic() < deadline:
            try:
                answer = self.query(promql)
                if predicate(answer["data"]["result"]):
                    return answer
            except (requests.RequestException, ValueError, KeyError):
                pass
            assert self.process.poll() is None, self.log()
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never answered {promql} as expected: {answer}\n"
                             + self.log())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


@contextmanager
def real_prometheus(tmp_path: Path, scrape_configs: list[dict[str, Any]],
                    scrape_interval: str = "1s") -> Iterator[RealPrometheus]:
    """A real Prometheus scraping `scrape_configs` (its TSDB and log in `tmp_path`)."""
    binary = prometheus_binary()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": scrape_configs}))
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([binary, f"--config.file={config}",
                                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT)
    prometheus = RealPrometheus(process, port, log_path)
    try:
        yield prometheus
    finally:
        prometheus.stop()


class _ExporterHandler(BaseHTTPRequestHandler):
    server: _ExporterServer

    def do_GET(self) -> None:
        lines = []
        for name, value in sorted(self.server.gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ExporterServer(ThreadingHTTPServer):
    gauges: dict[str, float]


@contextmanager
def exporter(**gauges: float) -> Iterator[_ExporterServer]:
    """A `/metrics` endpoint serving `gauges` (the test changes `server.gauges`);
    `server.server_address` says where."""
    server = _ExporterServer(("127.0.0.1", 0), _ExporterHandler)
    server.gauges = dict(gauges)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def scalar(value: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "scalar", "result": [1.0, value]}}


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"i": str(index)}, "value": [1.0, value]}
        for index, value in enumerate(values)]}}


@dataclass
class FakePrometheus:
    """What `fake_prometheus()` yields: set `answer` (a JSON document, or raw bytes);
    `requests` holds (path, headers, raw body) of each call."""

    url: str
    answer: Any = field(default_factory=lambda: scalar("1"))
    delay: float = 0.0  # seconds before it answers
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@contextmanager
def fake_prometheus() -> Iterator[FakePrometheus]:
    state = FakePrometheus(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            state.requests.append((self.path, dict(self.headers.items()), body))
            if state.delay:
                time.sleep(state.delay)
            answer = state.answer
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
