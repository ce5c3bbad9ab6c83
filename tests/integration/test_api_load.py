"""100 concurrent clients against the real API server: the kill switch still answers.

The API runs as `pystol api` runs it (gunicorn, its gthread workers and thread budget from
`wsgi_server`), on loopback, with a real redis-server and the simulated cluster behind
`GET /api/v1/cluster`. No Celery worker: submitted jobs stay queued and touch nothing.

While 60 clients follow a job's server-sent events (each reconnecting after a stream
ends, as a browser's EventSource does) and 40 clients hammer `GET /api/v1/cluster` and
`POST /api/v1/jobs` without pause, an operator reads the halt switch, engages it and
lifts it: each answer must come within 1 s. The streams beyond the per-process bound are
refused with 503 + Retry-After instead of taking threads (the streams really open are
counted on the server's side: its Redis subscriptions), the hammering tokens get 429s
(their budget) and 503s (the cluster view's bound), and nothing answers 500. When the
crowd leaves, every endpoint answers again, streams included.

The limits are the defaults (PYSTOL_API_RATE_LIMIT 50/second per identity), except the
streams per process (16, to see the bound at work with 60 followers). Each client of the
crowd sends from its own loopback address, as 100 machines would, so the per-address
budget counts them apart from the operator. Engaging the halt
also cancels every queued job (`HaltSwitch.engage`), and the crowd queues some hundreds:
the halt's answer time is checked last, with the number of jobs it cancelled.

Bounded: the load runs for about 8 s; the whole test, start-up included, takes about 20.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests

from pystol_worker.store.job_store import TIMELINE_CHANNEL
from tests.support.pystol_processes import Process, api
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

OPERATOR = "load-operator-token"
FOLLOWERS = [f"load-follower-token-{n}" for n in range(4)]
HAMMERS = [f"load-hammer-token-{n}" for n in range(2)]
STREAMS, HAMMERING = 60, 40
STREAM_MAX_CLIENTS = 16  # per API process; 2 processes: at most 32 of the 60 streams
API_WORKERS = 2
HALT_BUDGET_SECONDS = 1.0
LOAD_SECONDS = 8.0
JOB = {"action": "pod-kill", "duration": "60s",
       "target": {"namespaces": ["shop"], "label_selector": "app=web", "mode": "one"}}


def crowd_address(n: int) -> tuple[str, int]:
    """The n-th client's own source address (127.0.0.2 and up: all of 127/8 is loopback).
    The 100 clients stand for 100 machines: sharing the operator's 127.0.0.1, the crowd
    spent that address's minute budget (6,000) within its 8 s on a fast day, and the
    operator's reads after it were refused for the rest of the minute."""
    return f"127.0.0.{2 + n}", 0


@dataclass
class Tally:
    """What the crowd saw, shared by its threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    most_open_streams: int = 0  # on the server: subscriptions to the job's timeline
    retry_after_missing: int = 0

    def saw(self, what: str, status: int, headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.statuses[(what, status)] += 1
            if status in (429, 503) and headers is not None and "retry-after" not in headers:
                self.retry_after_missing += 1

    def streams_open(self, count: int) -> None:
        with self.lock:
            self.most_open_streams = max(self.most_open_streams, count)

    def count(self, what: str, status: int) -> int:
        with self.lock:
            return self.statuses[(what, status)]


class Follower:
    """An event-stream client on a raw socket (so the test can cut it off at once):
    follows, and after a stream ends reconnects like EventSource (1 s, or Retry-After)."""

    def __init__(self, port: int, token: str, job_id: str, tally: Tally,
                 stop: threading.Event, source: tuple[str, int]) -> None:
        self.port, self.token, self.job_id, self.source = port, token, job_id, source
        self.tally, self.stop = tally, stop
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            wait = self.follow_once()
            self.stop.wait(wait)

    def follow_once(self) -> float:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30,
                                            source_address=self.source)
        except OSError:
            return 1.0
        self.sock = sock
        try:
            sock.sendall((f"GET /api/v1/jobs/{self.job_id}/events HTTP/1.1\r\n"
                          f"Host: 127.0.0.1:{self.port}\r\n"
                          f"Authorization: Bearer {self.token}\r\n"
                          "Accept: text/event-stream\r\nConnection: close\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    return 1.0
                head += chunk
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {name.strip().lower(): value.strip() for name, _, value in
                       (line.partition(":") for line in lines[1:])}
            self.tally.saw("stream", status, headers)
            if status != 200:
                return float(headers.get("retry-after", "1"))
            while sock.recv(4096):
                pass
            return 1.0
        except OSError:
            return 1.0
        finally:
            self.sock = None
            sock.close()

    def cut(self) -> None:
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def count_streams(client: redis.Redis, job_id: str, tally: Tally,
                  stop: threading.Event) -> None:
    """The streams the server has open: each subscribes to the job's timeline channel."""
    channel = f"{TIMELINE_CHANNEL}:{job_id}"
    while not stop.wait(0.05):
        [(_, count)] = client.pubsub_numsub(channel)
        tally.streams_open(int(count))


def hammer(port: int, token: str, tally: Tally, stop: threading.Event,
           source: tuple[str, int]) -> None:
    """GET /cluster and POST /jobs, alternately, as fast as answers come, on one kept-alive
    connection (http.client: the load generator shares the machine's cores with the API,
    so it should spend as little of them as it can)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps(JOB)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                            source_address=source)
    while not stop.is_set():
        for what, method, path, payload in (("cluster", "GET", "/api/v1/cluster", None),
                                            ("submit", "POST", "/api/v1/jobs", body)):
            try:
                connection.request(method, path, body=payload, headers=headers)
                answer = connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException):
                tally.saw(what, -1)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                                        source_address=source)
                continue
            tally.saw(what, answer.status, {k.lower(): v for k, v in answer.getheaders()})
    connection.close()


@dataclass
class LoadApi:
    url: str
    port: int
    process: Process
    redis: redis.Redis

    def timed(self, method: str, path: str, **kwargs: Any) -> tuple[float, requests.Response]:
        """One request on a fresh connection, as an operator in an emergency sends it."""
        started = time.monotonic()
        answer = requests.request(method, self.url + path, timeout=10,
                                  headers={"Authorization": f"Bearer {OPERATOR}"}, **kwargs)
        return time.monotonic() - started, answer


@pytest.fixture
def load_api(redis_server: RedisServer, sim: SimProcess) -> Iterator[LoadApi]:
    redis_server.client().flushdb()
    env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
           "PYSTOL_API_WORKERS": str(API_WORKERS),
           "PYSTOL_STREAM_MAX_CLIENTS": str(STREAM_MAX_CLIENTS)}
    port = free_port()
    with api(env, port, ",".join([OPERATOR, *FOLLOWERS, *HAMMERS])) as process:
        yield LoadApi(f"http://127.0.0.1:{port}", port, process, redis_server.client())


def test_halt_answers_within_a_second_under_100_concurrent_clients(load_api: LoadApi) -> None:
    _, submitted = load_api.timed("POST", "/api/v1/jobs", json=JOB)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    _, warm = load_api.timed("GET", "/api/v1/cluster")  # the cluster client is built once
    assert warm.status_code == 200, warm.text

    tally, stop = Tally(), threading.Event()
    followers = [Follower(load_api.port, FOLLOWERS[n % len(FOLLOWERS)], job_id, tally, stop,
                          crowd_address(n)) for n in range(STREAMS)]
    hammers = [threading.Thread(target=hammer, daemon=True,
                                args=(load_api.port, HAMMERS[n % len(HAMMERS)], tally, stop,
                                      crowd_address(STREAMS + n)))
               for n in range(HAMMERING)]
    counter = threading.Thread(target=count_streams, daemon=True,
                               args=(load_api.redis, job_id, tally, stop))
    counter.start()
    started = time.monotonic()
    for client in followers:
        client.thread.start()
    for thread in hammers:
        thread.start()
    halt_latencies: list[tuple[str, float, int]] = []
    try:
        # The crowd is in: the streams the API accepts are open, the rest were refused.
        deadline = time.monotonic() + 5
        while (tally.most_open_streams < API_WORKERS * STREAM_MAX_CLIENTS // 2
               or tally.count("stream", 503) == 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        for _ in range(3):
            latency, answer = load_api.timed("GET", "/api/v1/halt")
            halt_latencies.append(("GET", latency, answer.status_code))
            time.sleep(0.3)
        latency, engaged = load_api.timed("POST", "/api/v1/halt",
                                          json={"reason": "load test"})
        halt_latencies.append(("POST", latency, engaged.status_code))
        assert engaged.json()["halted"] is True, engaged.text
        time.sleep(1.0)
        latency, lifted = load_api.timed("DELETE", "/api/v1/halt")
        halt_latencies.append(("DELETE", latency, lifted.status_code))
        assert lifted.json()["halted"] is False, lifted.text
        time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
    finally:
        stop.set()
        for client in followers:
            client.cut()
        for thread in [*(client.thread for client in followers), *hammers, counter]:
            thread.join(15)

    report = (f"halt: {halt_latencies}\nstatuses: {sorted(tally.statuses.items())}\n"
              f"most streams open at once: {tally.most_open_streams}")
    assert all(status == 200 for _, _, status in halt_latencies), report
    # Reading and lifting the switch: no thread was left for them to wait for.
    assert all(latency < HALT_BUDGET_SECONDS for method, latency, _ in halt_latencies
               if method != "POST"), report
    # The crowd was really there, and was bounded rather than served at any cost.
    assert tally.most_open_streams <= API_WORKERS * STREAM_MAX_CLIENTS, report
    assert tally.most_open_streams >= STREAM_MAX_CLIENTS, report
    assert tally.count("stream", 503) > 0, report        # streams over the bound
    assert tally.count("cluster", 200) > 0 and tally.count("submit", 202) > 0, report
    assert tally.count("submit", 429) + tally.count("cluster", 429) > 0, report  # budgets
    assert not [key for key in tally.statuses if key[1] == 500 or key[1] < 0], report
    assert tally.retry_after_missing == 0, report
    assert not any(thread.is_alive() for thread in hammers), "a client hung"

    # After the crowd: everything answers again (slots and threads were given back).
    for method, path, body, expected in (("GET", "/healthz", None, 200),
                                         ("GET", "/api/v1/cluster", None, 200),
                                         ("POST", "/api/v1/jobs", JOB, 202),
                                         ("GET", "/api/v1/halt", None, 200)):
        latency, answer = load_api.timed(method, path, json=body)
        assert answer.status_code == expected, (path, answer.text)
        assert latency < HALT_BUDGET_SECONDS, (path, latency)
    new_job = load_api.timed("GET", "/api/v1/jobs?limit=1")[1].json()["items"][0]["id"]
    # A stream slot comes back when the server next writes to a client that left (a
    # keep-alive at the latest, every 10 s): a new stream gets one within that, retrying
    # after the Retry-After it is told, as a browser's EventSource does.
    deadline = time.monotonic() + 15
    while True:
        with requests.get(f"{load_api.url}/api/v1/jobs/{new_job}/events", stream=True,
                          timeout=10, headers={"Authorization": f"Bearer {OPERATOR}",
                                               "Accept": "text/event-stream"}) as stream:
            if stream.status_code == 503 and time.monotonic() < deadline:
                time.sleep(min(float(stream.headers.get("Retry-After", "1")), 2.0))
                continue
            assert stream.status_code == 200, stream.text
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            break
    # On loopback the server has no reason to warn about plain HTTP.
    assert not any("plain HTTP" in line for line in load_api.process.output)

    # Last, the kill switch itself: engaging it answered within the second too.
    engage_latency = next(latency for method, latency, _ in halt_latencies if method == "POST")
    assert engage_latency < HALT_BUDGET_SECONDS, (
        f"POST /api/v1/halt took {engage_latency:.2f} s under load, cancelling "
        f"{engaged.json()['cancelled_jobs']} queued jobs one by one (HaltSwitch.engage: "
        f"several Redis round trips per job)\n{report}")
