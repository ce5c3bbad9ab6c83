"""Issue 13, the API's side: what a flood of requests, a browser, a scraper or a crowd of
followers can do to the API, each tried against the application `create_app` builds.

- rate limits per identity (429 problem + Retry-After), the halt switch on its own
  budget, the probes exempt, and no 500s when the limiter's Redis is gone;
- browser protections (CSP and friends) on every response, and pages the CSP allows;
- `/metrics` behind its own token, and naming no namespace without one;
- event streams and the cluster view bounded per process (503 + Retry-After), streams
  ended after PYSTOL_STREAM_MAX_SECONDS;
- the gunicorn thread budget and the start-up warning about plain HTTP.

The browser itself (no CSP violation in Chromium) is tests/e2e/test_dashboard.py; 100
concurrent clients against the real server are tests/integration/test_api_load.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from pystol_api.http import metrics_endpoint
from pystol_api.http.app import create_app
from pystol_api.http.dashboard import STATIC_DIR
from pystol_api.http.problems import PROBLEM_JSON
from pystol_api.http.rate_limits import KNOWN_TOKEN_SECONDS, RateLimits
from pystol_api.http.routes import cluster
from pystol_api.http.wsgi_server import (
    REQUEST_THREADS,
    gunicorn_options,
    is_loopback,
    plain_http_warning,
)
from pystol_worker.actions import default_registry
from pystol_worker.core.settings import Settings, SettingsError
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.store import metrics as m
from tests.support.recording_queue import RecordingQueue

TOKEN = "hardening-token-1"
OTHER = "hardening-token-2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB: dict[str, Any] = {"action": "pod-kill", "duration": "60s",
                       "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                  "mode": "one"}}
STREAM = {**AUTH, "Accept": "text/event-stream"}


def down_cluster() -> Any:
    raise ClusterError("no cluster in this test")


def make_app(redis_client: redis.Redis | None = None, **overrides: Any) -> Flask:
    settings = Settings(**{"api_tokens": [TOKEN, OTHER], "redis_url": "redis://127.0.0.1:1/0",
                           **overrides})
    return create_app(settings, redis_client=redis_client or fakeredis.FakeRedis(),
                      queue=RecordingQueue(), registry=default_registry(),
                      cluster_factory=down_cluster)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body: dict[str, Any] = json.loads(response.get_data(as_text=True))
    assert body["status"] == status and body["detail"]
    return body


def retry_after(response: Any, at_most: int) -> int:
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= at_most
    return seconds


# -- rate limits ----------------------------------------------------------------------------------

def test_a_flooding_token_gets_429_with_retry_after_and_others_are_unaffected() -> None:
    client = make_app(api_rate_limit="3/minute").test_client()
    for _ in range(3):
        assert client.get("/api/v1/actions", headers=AUTH).status_code == 200
    refused = client.get("/api/v1/actions", headers=AUTH)
    body = problem(refused, 429)
    assert "PYSTOL_API_RATE_LIMIT" in body["detail"]
    retry_after(refused, 60)
    # One budget across the API, not per route.
    problem(client.post("/api/v1/jobs", json=JOB, headers=AUTH), 429)
    # Another identity has a budget of its own.
    assert client.get("/api/v1/actions",
                      headers={"Authorization": f"Bearer {OTHER}"}).status_code == 200


def test_requests_without_a_token_are_counted_per_client_address() -> None:
    client = make_app(api_rate_limit="2/minute").test_client()
    for _ in range(2):
        assert client.get("/api/v1/openapi.json",
                          environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 200
    problem(client.get("/api/v1/openapi.json", environ_base={"REMOTE_ADDR": "10.0.0.1"}), 429)
    assert client.get("/api/v1/openapi.json",
                      environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200


def test_the_token_is_never_a_redis_key_only_its_hash() -> None:
    store = fakeredis.FakeRedis()
    client = make_app(store).test_client()
    assert client.get("/api/v1/actions", headers=AUTH).status_code == 200
    keys = [key.decode() for key in store.keys("*")]
    assert any(hashlib.sha256(TOKEN.encode()).hexdigest()[:32] in key for key in keys), keys
    assert not any(TOKEN in key for key in keys)


def test_the_halt_switch_works_when_the_budget_is_spent_and_has_its_own() -> None:
    client = make_app(api_rate_limit="2/minute", halt_rate_limit="4/minute").test_client()
    for _ in range(2):
        client.get("/api/v1/actions", headers=AUTH)
    problem(client.get("/api/v1/actions", headers=AUTH), 429)
    # Every method of /halt still answers for this identity...
    assert client.post("/api/v1/halt", headers=AUTH).status_code == 200
    assert client.get("/api/v1/halt", headers=AUTH).get_json()["halted"] is True
    assert client.delete("/api/v1/halt", headers=AUTH).status_code == 200
    assert client.get("/api/v1/halt", headers=AUTH).status_code == 200
    # ...until its own budget is spent: a flood of halts is limited too.
    refused = client.post("/api/v1/halt", headers=AUTH)
    assert "PYSTOL_HALT_RATE_LIMIT" in problem(refused, 429)["detail"]
    retry_after(refused, 60)


def test_halt_requests_do_not_spend_the_general_budget() -> None:
    client = make_app(api_rate_limit="2/minute", halt_rate_limit="50/minute").test_client()
    for _ in range(10):
        assert client.get("/api/v1/halt", headers=AUTH).status_code == 200
    assert client.get("/api/v1/actions", headers=AUTH).status_code == 200


def test_probes_are_never_limited() -> None:
    client = make_app(api_rate_limit="1/minute").test_client()
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_an_empty_limit_is_no_limit() -> None:
    client = make_app(api_rate_limit="").test_client()
    for _ in range(60):
        assert client.get("/api/v1/actions", headers=AUTH).status_code == 200


def test_a_bad_limit_stops_the_api_at_start_up() -> None:
    with pytest.raises(SettingsError, match="PYSTOL_API_RATE_LIMIT"):
        make_app(api_rate_limit="lots")
    with pytest.raises(SettingsError, match="PYSTOL_HALT_RATE_LIMIT"):
        make_app(halt_rate_limit="10 per fortnight")


def _unreachable_redis() -> redis.Redis:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                       socket_timeout=0.5)


def test_without_redis_the_limiter_neither_fails_requests_nor_stops_limiting() -> None:
    client = make_app(_unreachable_redis(), api_rate_limit="3/minute").test_client()
    # Routes that do not need Redis still answer (not a 500 from the limiter)...
    assert client.get("/healthz").status_code == 200
    for _ in range(3):
        assert client.get("/api/v1/actions", headers=AUTH).status_code == 200
    # ...and the counting went on in memory.
    problem(client.get("/api/v1/actions", headers=AUTH), 429)
    # Routes that need Redis say so, as before.
    problem(client.get("/readyz"), 503)


def test_the_openapi_document_declares_429_except_on_the_probes() -> None:
    document = make_app().test_client().get("/api/v1/openapi.json").get_json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = "429" in operation["responses"]
            assert declared == (path not in ("/healthz", "/readyz")), (method, path)


# -- browser protections --------------------------------------------------------------------------

def _directives(policy: str) -> dict[str, list[str]]:
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in parts}


def assert_protected(response: Any) -> None:
    policy = _directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_every_response_carries_the_browser_protections() -> None:
    client = make_app(api_rate_limit="30/minute").test_client()
    answers = [
        client.get("/"), client.get("/dashboard/app.js"), client.get("/api/v1/docs"),
        client.get("/api/v1/swagger"), client.get("/api/v1/"), client.get("/api/v1/openapi.json"),
        client.get("/api/v1/swagger/js/swagger-ui-bundle.js"), client.get("/metrics"),
        client.get("/healthz"), client.get("/api/v1/actions", headers=AUTH),
        client.get("/api/v1/actions"),             # 401
        client.get("/api/v1/nowhere"),             # 404
        client.get("/api/v1/jobs/j-1", headers=AUTH),  # 404 problem
        client.post("/api/v1/jobs", data="x", headers=AUTH),  # 415
    ]
    assert {answer.status_code for answer in answers} >= {200, 401, 404, 415}
    for answer in answers:
        assert_protected(answer)
    limited = make_app(api_rate_limit="1/minute").test_client()
    limited.get("/api/v1/actions", headers=AUTH)
    refused = limited.get("/api/v1/actions", headers=AUTH)
    assert refused.status_code == 429
    assert_protected(refused)


class InlineCode(HTMLParser):
    """What a CSP without 'unsafe-inline' refuses in a page: inline scripts, <style>
    elements, style attributes and on* event handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower() for name, _ in attrs}
        if tag == "style":
            self.found.append("<style>")
        if "style" in names:
            self.found.append(f"style attribute on <{tag}>")
        self.found.extend(f"{name} on <{tag}>" for name in names if name.startswith("on"))
        if tag == "script":
            if "src" not in names:
                self.found.append("inline <script>")
            self.scripts.extend(value or "" for name, value in attrs if name == "src")
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("code inside <script src>")


@pytest.mark.parametrize("path", ["/", "/api/v1/docs", "/api/v1/swagger", "/api/v1/"])
def test_pages_have_no_inline_code(path: str) -> None:
    client = make_app().test_client()
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    parser = InlineCode()
    parser.feed(response.get_data(as_text=True))
    assert parser.found == []
    if path != "/api/v1/":
        assert parser.scripts  # it does run code: from files the CSP allows


def test_dashboard_scripts_write_no_inline_style_or_handler() -> None:
    """What the dashboard's code puts into the page is held to the same rule: no style
    attribute (through `el(..., {style})`, setAttribute or HTML text) and no on*= handler
    in HTML it builds as text."""
    for script in sorted(STATIC_DIR.glob("*.js")):
        code = script.read_text()
        assert not re.search(r"""\bstyle\s*:\s*["'`]""", code), script.name
        assert not re.search(r"""setAttribute\(\s*["']style""", code), script.name
        assert not re.search(r"""\sstyle=["'`\\]""", code), script.name
        assert not re.search(r"""\son[a-z]+=["'`\\]""", code), script.name


def test_the_swagger_page_starts_from_its_data_attribute() -> None:
    page = make_app().test_client().get("/api/v1/docs").get_data(as_text=True)
    assert 'data-openapi-url="openapi.json"' in page
    init = (STATIC_DIR / "swagger-init.js").read_text()
    assert "dataset.openapiUrl" in init and "validatorUrl: null" in init


# -- /metrics -------------------------------------------------------------------------------------

def seed_metrics(client: redis.Redis) -> None:
    recorder = m.Recorder()
    recorder.inc(m.TARGETS_AFFECTED, {"action": "pod-kill", "namespace": "shop"}, 2)
    recorder.inc(m.TARGETS_AFFECTED, {"action": "pod-kill", "namespace": "payments"}, 3)
    workload = {"action": "pod-kill", "workload_kind": "Deployment"}
    recorder.observe(m.RECOVERY, {**workload, "namespace": "shop"}, 4.0)
    recorder.observe(m.RECOVERY, {**workload, "namespace": "payments"}, 40.0)
    recorder.flush(client)


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_without_a_metrics_token_no_namespace_is_named_but_totals_hold() -> None:
    store = fakeredis.FakeRedis()
    seed_metrics(store)
    response = make_app(store).test_client().get("/metrics")  # public, like before
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "shop" not in text and "payments" not in text
    assert 'namespace="' not in text
    found = parsed(text)
    assert found[("pystol_targets_affected_total", (("action", "pod-kill"),))] == 5
    recovery = (("action", "pod-kill"), ("workload_kind", "Deployment"))
    assert found[("pystol_recovery_seconds_count", recovery)] == 2
    assert found[("pystol_recovery_seconds_sum", recovery)] == 44.0
    assert found[("pystol_recovery_seconds_bucket", (*recovery[:1], ("le", "5.0"),
                                                      *recovery[1:]))] == 1


def test_with_a_metrics_token_metrics_need_it_and_show_namespaces() -> None:
    store = fakeredis.FakeRedis()
    seed_metrics(store)
    client = make_app(store, metrics_token="scrape-secret-0123").test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):  # API tokens do not do
        refused = client.get("/metrics", headers=headers)
        problem(refused, 401)
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "shop" not in refused.get_data(as_text=True)
    answer = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123"})
    assert answer.status_code == 200
    found = parsed(answer.get_data(as_text=True))
    assert found[("pystol_targets_affected_total",
                  (("action", "pod-kill"), ("namespace", "shop")))] == 2


# Labels reviewed as naming no namespace or object. A new label must be added here or to
# metrics_endpoint.NAME_LABELS, so that a namespace cannot slip out through it unnoticed.
NAMELESS_LABELS = {"action", "source", "status", "verdict", "outcome", "verb", "code",
                   "workload_kind", "queue", "reason"}


def test_every_metric_label_is_reviewed() -> None:
    labels = {label for metric in (*m.COUNTERS, *m.HISTOGRAMS, *m.GAUGES)
              for label in metric.labels}
    assert labels <= NAMELESS_LABELS | metrics_endpoint.NAME_LABELS, \
        labels - NAMELESS_LABELS - metrics_endpoint.NAME_LABELS


# -- event streams --------------------------------------------------------------------------------

@pytest.fixture
def follow() -> Iterator[tuple[FlaskClient, str]]:
    """An app serving at most 2 streams of at most 1 s, and a queued (never ending) job."""
    app = make_app(stream_max_clients=2, stream_max_seconds=1)
    client = app.test_client()
    answer = client.post("/api/v1/jobs", json=JOB, headers=AUTH)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    yield client, answer.get_json()["id"]


def open_stream(client: FlaskClient, job_id: str) -> Any:
    return client.get(f"/api/v1/jobs/{job_id}/events", headers=STREAM, buffered=False)


def test_one_stream_too_many_is_503_with_retry_after(follow: tuple[FlaskClient, str]) -> None:
    client, job_id = follow
    first, second = open_stream(client, job_id), open_stream(client, job_id)
    assert first.status_code == second.status_code == 200
    assert first.mimetype == "text/event-stream"
    refused = open_stream(client, job_id)
    assert "PYSTOL_STREAM_MAX_CLIENTS" in problem(refused, 503)["detail"]
    retry_after(refused, 60)
    # The JSON timeline is no stream: it still answers.
    assert client.get(f"/api/v1/jobs/{job_id}/events", headers=AUTH).status_code == 200
    # A follower leaving gives its slot to the next one.
    first.close()
    third = open_stream(client, job_id)
    assert third.status_code == 200
    second.close()
    third.close()


def test_a_stream_ends_after_stream_max_seconds(follow: tuple[FlaskClient, str]) -> None:
    client, job_id = follow
    services = client.application.extensions["pystol"]
    stop = threading.Event()

    def busy_job() -> None:  # a job whose timeline keeps growing
        while not stop.wait(0.1):
            services.store.append_event(job_id, "selected", "more pods")
    threading.Thread(target=busy_job, daemon=True).start()
    try:
        response = open_stream(client, job_id)
        assert response.status_code == 200
        started = time.monotonic()
        received = b""
        for chunk in response.response:
            received += chunk
            assert time.monotonic() - started < 5, "the stream went on past its limit"
        elapsed = time.monotonic() - started
        response.close()
    finally:
        stop.set()
    assert 0.9 <= elapsed < 3.0
    assert b"event: selected" in received
    assert b"event: end" not in received  # the job goes on: the client reconnects


# -- the cluster view -----------------------------------------------------------------------------

def test_a_crowd_waiting_for_the_cluster_is_turned_away_at_once() -> None:
    entered, gate = threading.Event(), threading.Event()

    def slow_cluster() -> Any:
        entered.set()
        gate.wait(10)
        raise ClusterError("the Kubernetes API took too long")

    settings = Settings(api_tokens=[TOKEN], redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings, redis_client=fakeredis.FakeRedis(), queue=RecordingQueue(),
                     registry=default_registry(), cluster_factory=slow_cluster)
    statuses: list[int] = []

    def ask() -> None:
        statuses.append(app.test_client().get("/api/v1/cluster", headers=AUTH).status_code)
    waiting = [threading.Thread(target=ask) for _ in range(cluster.MAX_CONCURRENT)]
    for thread in waiting:
        thread.start()
    try:
        assert entered.wait(5)
        time.sleep(0.5)  # the others reach the view and wait for the one read
        started = time.monotonic()
        busy = app.test_client().get("/api/v1/cluster", headers=AUTH)
        assert time.monotonic() - started < 2  # at once (milliseconds), not after the read
        problem(busy, 503)
        retry_after(busy, 5)
    finally:
        gate.set()
        for thread in waiting:
            thread.join(10)
    assert statuses == [502] * cluster.MAX_CONCURRENT
    # Slots were given back: the view answers again.
    problem(app.test_client().get("/api/v1/cluster", headers=AUTH), 502)


# -- the server -----------------------------------------------------------------------------------

def test_streams_can_never_take_the_threads_plain_requests_need() -> None:
    settings = Settings(api_tokens=[TOKEN], stream_max_clients=10)
    options = gunicorn_options(settings)
    assert options["worker_class"] == "pystol_api.http.gunicorn_worker.DeadlineThreadWorker"
    assert options["threads"] == 10 + REQUEST_THREADS
    assert REQUEST_THREADS >= 8


@pytest.mark.parametrize("bind,warned", [
    ("127.0.0.1:8080", False), ("127.0.0.2:8080", False), ("[::1]:8080", False),
    ("localhost:8080", False), ("0.0.0.0:8080", True), ("[::]:8080", True),
    ("10.1.2.3:8080", True), ("pystol.example.com:8080", True),
])
def test_plain_http_on_a_reachable_address_is_warned_about(bind: str, warned: bool) -> None:
    warning = plain_http_warning(Settings(api_tokens=[TOKEN], api_bind=bind))
    assert (warning is not None) == warned
    if warning is not None:
        assert "plain HTTP" in warning and "TLS" in warning and bind in warning
    assert is_loopback(bind.rsplit(":", 1)[0].strip("[]")) == (not warned)



def test_inventing_a_new_token_per_request_earns_no_new_budget() -> None:
    """The per-identity key is the token's hash, before the token is checked: without the
    per-address limit, a random bearer token on every request was a fresh budget each."""
    client = make_app(api_rate_limit="3/minute", api_address_rate_limit="5/minute"
                      ).test_client()
    codes = [client.get("/api/v1/jobs", headers={"Authorization": f"Bearer guess-{n}"}
                        ).status_code for n in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3


def test_a_token_that_authenticated_is_not_counted_against_its_address() -> None:
    """Behind a proxy every client shares one address. Guesses from it spend that address's
    budget; an operator whose token authenticated lately must still get through (to cancel
    a job), while the guesses, and a wrong token however often repeated, stay refused."""
    client = make_app(api_rate_limit="100/minute", api_address_rate_limit="3/minute"
                      ).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.9"}
    assert client.get("/api/v1/jobs", headers=AUTH, environ_base=proxy).status_code == 200
    guesses = [client.get("/api/v1/jobs", environ_base=proxy,
                          headers={"Authorization": f"Bearer guess-{n}"}).status_code
               for n in range(4)]
    assert guesses == [401, 401, 429, 429]  # the operator's first request spent one of 3
    wrong = [client.get("/api/v1/jobs", environ_base=proxy,
                        headers={"Authorization": "Bearer wrong"}).status_code
             for _ in range(3)]
    assert wrong == [429, 429, 429]
    for _ in range(10):
        assert client.get("/api/v1/jobs", headers=AUTH, environ_base=proxy).status_code == 200
    # A token not seen yet meets the spent address budget before it can authenticate.
    problem(client.get("/api/v1/jobs", environ_base=proxy,
                       headers={"Authorization": f"Bearer {OTHER}"}), 429)
    # Its own budget still holds for the known token.
    spent = make_app(api_rate_limit="2/minute", api_address_rate_limit="3/minute"
                     ).test_client()
    codes = [spent.get("/api/v1/jobs", headers=AUTH, environ_base=proxy).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]


def test_a_known_token_is_forgotten_after_a_minute() -> None:
    now = [0.0]
    limits = RateLimits([], fakeredis.FakeRedis(), clock=lambda: now[0])
    limits.remember("token:abc")
    assert limits.is_known("token:abc") and not limits.is_known("token:other")
    now[0] = KNOWN_TOKEN_SECONDS + 1
    assert not limits.is_known("token:abc")
