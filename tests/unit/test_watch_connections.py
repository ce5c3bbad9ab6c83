"""An abandoned watch must not leave a dead connection for the next request.

A local HTTP/1.1 server notes which client connection (its port) served each request.
The watch answers one event and then keeps the stream open, as a real watch does until
its timeout; the caller stops reading after that event. The next list must go out on
the first list's connection, still alive, not on a reconnected one.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes.client import ApiClient, Configuration

from pystol_worker.kube.cluster_access import ClusterAccess, RetryPolicy, TokenBucket


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: list[tuple[str, int]] = []
    release = threading.Event()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        watching = "watch=true" in self.path.lower()
        self.served.append(("watch" if watching else "list", self.client_address[1]))
        if not watching:
            body = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "7"},
                               "items": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        line = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "a"}}}).encode()
        line += b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()
        self.release.wait(5)  # the stream stays open, as a watch does until its timeout
        with contextlib.suppress(OSError):
            self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    Recorder.served = []
    Recorder.release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    Recorder.release.set()
    httpd.shutdown()
    httpd.server_close()


def test_the_next_request_after_an_abandoned_watch_reuses_a_live_connection(
        server: ThreadingHTTPServer) -> None:
    configuration = Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    access = ClusterAccess(ApiClient(configuration), TokenBucket(1000, 1000),
                           RetryPolicy(attempts=1))
    access.list_pods("shop", "app=web")
    events = access.watch_pods("shop", "app=web", "7", 5)
    assert next(events) == ("ADDED", {"metadata": {"name": "a"}})
    events.close()  # abandoned mid-stream, as an observer does once its workload recovered
    access.list_pods("shop", "app=web")
    Recorder.release.set()
    time.sleep(0.05)
    kinds = [kind for kind, _ in Recorder.served]
    assert kinds == ["list", "watch", "list"]
    first_list, watch, second_list = (port for _, port in Recorder.served)
    assert second_list == first_list, "the second list reconnected"
    assert watch != first_list
