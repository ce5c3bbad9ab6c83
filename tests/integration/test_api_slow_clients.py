"""Clients that send one byte and stall cannot take the API's threads (`/halt` included).

gunicorn's gthread worker waits for a connection's first byte without a thread, then reads
the rest of the request on a thread with no deadline. Before `gunicorn_worker`, 40 sockets
that each sent `G` and nothing more held all 34 threads of this API (2 processes of 1
stream slot + 16) for as long as they stayed open: `/halt` never answered (30 s, the
test's own timeout). Now each stalled read ends after CLIENT_READ_SECONDS and the thread
is back: `/halt` answers within a few of those deadlines.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from pystol_api.http.gunicorn_worker import CLIENT_READ_SECONDS
from tests.integration.conftest import TOKEN
from tests.support.pystol_processes import api
from tests.support.redis_server import RedisServer, free_port

STALLED_CLIENTS = 40  # more than the 2 x (1 + 16) threads of the API below


@pytest.fixture()
def small_api(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_API_WORKERS": "2",
           "PYSTOL_STREAM_MAX_CLIENTS": "1", "PYSTOL_KUBERNETES_AUTH": "false"}
    with api(env, port, TOKEN):
        yield f"http://127.0.0.1:{port}"


def test_stalled_clients_lose_their_threads_and_halt_answers(small_api: str) -> None:
    host, port = small_api.removeprefix("http://").split(":")
    stalled = []
    try:
        for _ in range(STALLED_CLIENTS):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"G")  # the first byte of a request line, and then nothing
            stalled.append(sock)
        time.sleep(1.0)  # every stalled request is on a thread now

        started = time.monotonic()
        answer = requests.get(f"{small_api}/api/v1/halt", timeout=CLIENT_READ_SECONDS * 3,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        waited = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        # Bounded, no longer for ever: gthread hands queued connections to threads as the
        # stalled ones time out, a few deadlines at the most.
        assert waited < 3 * CLIENT_READ_SECONDS + 3, f"/halt waited {waited:.1f} s"

        # The server hangs up on a stalled client once its deadline passes (without the
        # deadline, none is ever closed): an empty read is the close.
        readable, _, _ = select.select(stalled, [], [], CLIENT_READ_SECONDS + 5)
        assert readable, "no stalled client was hung up on"
        for sock in readable:
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
    finally:
        for sock in stalled:
            sock.close()
