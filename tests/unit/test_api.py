"""The HTTP API against fakeredis, a recording queue and the default action registry.

Everything is injected through `create_app`; nothing is patched. The cluster is only
needed by previews, which are tested here for their failure mapping alone (the
simulated cluster covers the rest in the integration tests).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from pystol_api.http.app import create_app, services_of
from pystol_api.http.auth import submitter_name
from pystol_api.http.problems import PROBLEM_JSON, PROBLEM_TYPE_BASE
from pystol_api.http.wsgi_server import ApiServer, gunicorn_options, serve
from pystol_worker.actions import default_registry
from pystol_worker.core.model import JobStatus
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError
from pystol_worker.store.job_store import JobStore
from tests.support.recording_queue import RecordingQueue

TOKEN = "unit-test-token-1"
OTHER_TOKEN = "unit-test-token-2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB: dict[str, Any] = {
    "action": "pod-kill",
    "target": {"namespaces": ["shop"], "label_selector": "app=web", "mode": "fixed",
               "value": 2},
    "params": {"grace_period_seconds": 0},
    "duration": "60s",
}


class RefusingQueue:
    """A JobQueue whose broker is down."""

    def send(self, job_id: str) -> None:
        raise ConnectionError("broker unreachable")


class UnreachableCluster(ClusterAccess):
    """A cluster whose API server does not answer: previews fail, and a bearer token the
    API does not know cannot be checked with a TokenReview (so it is refused)."""

    def __init__(self) -> None:  # no kubernetes client: nothing here talks to a cluster
        self.reviews = 0

    def list_pods(self, namespace: str, label_selector: str | None = None,
                  field_selector: str | None = None, *,
                  project: Any = None) -> tuple[list[dict[str, Any]], str]:
        raise ClusterError("cannot reach the Kubernetes API: connection refused")

    def review_token(self, token: str) -> dict[str, Any]:
        self.reviews += 1
        raise ClusterError("cannot reach the Kubernetes API: connection refused")

    def review_access(self, user: str, groups: list[str], uid: str | None, verb: str,
                      group: str, resource: str, namespace: str | None) -> bool:
        raise ClusterError("cannot reach the Kubernetes API: connection refused")


class BuggyCluster(UnreachableCluster):
    """A cluster layer with a bug: the error must not leak to the client."""

    def list_pods(self, namespace: str, label_selector: str | None = None,
                  field_selector: str | None = None, *,
                  project: Any = None) -> tuple[list[dict[str, Any]], str]:
        raise RuntimeError("internal detail /etc/secret-path")


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_tokens": [TOKEN, OTHER_TOKEN],
                              "redis_url": "redis://127.0.0.1:6379/0",
                              "protected_namespaces": ["kube-system", "kube-public"],
                              "allow_protected": False, "max_request_bytes": 64 * 1024}
    values.update(overrides)
    return Settings(**values)


class Harness:
    """One app for the module (building one takes ~0.25 s of schema generation), with its
    fake Redis emptied and its queue forgotten before each test."""

    def __init__(self) -> None:
        self.redis = fakeredis.FakeRedis()
        self.queue = RecordingQueue()
        self.app = create_app(make_settings(), redis_client=self.redis, queue=self.queue,
                              registry=default_registry(), cluster_factory=UnreachableCluster)


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


@pytest.fixture
def fake_redis(harness: Harness) -> fakeredis.FakeRedis:
    harness.redis.flushall()
    return harness.redis


@pytest.fixture
def queue(harness: Harness) -> RecordingQueue:
    harness.queue.sent.clear()
    return harness.queue


@pytest.fixture
def app(harness: Harness, fake_redis: fakeredis.FakeRedis, queue: RecordingQueue) -> Flask:
    return harness.app


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> JobStore:
    return JobStore(fake_redis)


def submit(client: FlaskClient, spec: dict[str, Any] | None = None,
           **headers: str) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json=spec or JOB, headers={**AUTH, **headers})
    assert response.status_code == 202, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def assert_problem(response: Any, status: int, locs: list[str] | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body: dict[str, Any] = json.loads(response.get_data(as_text=True))
    assert body["status"] == status
    assert body["type"].startswith(PROBLEM_TYPE_BASE)
    assert body["title"] and body["detail"]
    assert body["instance"] == response.request.path
    if locs is not None:  # regular expressions, one per expected error, in order
        found = [error["loc"] for error in body["errors"]]
        assert len(found) == len(locs), body
        for pattern, loc in zip(locs, found, strict=True):
            assert re.fullmatch(pattern, loc), (pattern, body)
    return body


# -- submitting ---------------------------------------------------------------------------------

def test_submit_stores_and_queues_once(client: FlaskClient, queue: RecordingQueue,
                                       store: JobStore) -> None:
    response = client.post("/api/v1/jobs", json=JOB, headers=AUTH)
    assert response.status_code == 202
    assert response.mimetype == "application/json"
    record = response.get_json()
    assert response.headers["Location"] == f"/api/v1/jobs/{record['id']}"
    assert record["status"] == "queued"
    assert record["source"] == "api"
    assert record["submitter"] == "token-" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert record["spec"]["target"]["namespaces"] == ["shop"]
    assert [event["kind"] for event in record["timeline"]] == ["queued"]
    assert queue.sent == [record["id"]]
    stored = store.get(record["id"])
    assert stored.status == JobStatus.QUEUED
    assert stored.spec.duration == 60.0


def test_submit_from_the_cli_is_recorded_as_cli(client: FlaskClient) -> None:
    record = submit(client, **{"X-Pystol-Source": "cli"})
    assert record["source"] == "cli"


def test_submitter_is_per_token_and_not_the_token(client: FlaskClient) -> None:
    first = submit(client)
    second = client.post("/api/v1/jobs", json=JOB,
                         headers={"Authorization": f"Bearer {OTHER_TOKEN}"}).get_json()
    assert first["submitter"] == submitter_name(TOKEN)
    assert second["submitter"] == submitter_name(OTHER_TOKEN)
    assert first["submitter"] != second["submitter"]
    assert TOKEN not in json.dumps(first)


def test_idempotent_repeat_answers_the_earlier_job(client: FlaskClient,
                                                   queue: RecordingQueue) -> None:
    spec = {**JOB, "idempotency_key": "deploy-42"}
    first = client.post("/api/v1/jobs", json=spec, headers=AUTH)
    again = client.post("/api/v1/jobs", json=spec, headers=AUTH)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert queue.sent == [first.get_json()["id"]]


def test_idempotency_key_with_another_spec_conflicts(client: FlaskClient,
                                                     queue: RecordingQueue) -> None:
    first = submit(client, {**JOB, "idempotency_key": "k1"})
    other = {**JOB, "idempotency_key": "k1", "params": {"grace_period_seconds": 5}}
    body = assert_problem(client.post("/api/v1/jobs", json=other, headers=AUTH), 409)
    assert "k1" in body["detail"] and first["id"] in body["detail"]
    assert queue.sent == [first["id"]]


def test_a_job_that_cannot_be_queued_is_marked_failed(fake_redis: fakeredis.FakeRedis,
                                                      store: JobStore) -> None:
    app = create_app(make_settings(), redis_client=fake_redis, queue=RefusingQueue())
    response = app.test_client().post("/api/v1/jobs", json=JOB, headers=AUTH)
    assert_problem(response, 503)
    assert response.headers["Retry-After"]
    [record] = store.list().items
    assert record.status == JobStatus.FAILED
    assert record.reason == "could not be queued"


# -- listing ------------------------------------------------------------------------------------

def test_list_filters(client: FlaskClient) -> None:
    shop = [submit(client)["id"] for _ in range(2)]
    web = submit(client, {**JOB, "target": {**JOB["target"], "namespaces": ["web"]}})["id"]
    cancelled = client.post(f"/api/v1/jobs/{shop[0]}/cancel", headers=AUTH)
    assert cancelled.status_code == 200

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/v1/jobs?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [item["id"] for item in response.get_json()["items"]]

    assert ids("") == [web, shop[1], shop[0]]
    assert ids("namespace=shop") == [shop[1], shop[0]]
    assert ids("namespace=web") == [web]
    assert ids("status=cancelled") == [shop[0]]
    assert ids("status=queued") == [web, shop[1]]
    assert ids("action=pod-kill") == [web, shop[1], shop[0]]
    assert ids("action=node-drain") == []
    assert ids("status=queued&namespace=shop") == [shop[1]]


def test_cursor_paging_is_newest_first_and_complete(client: FlaskClient) -> None:
    created = [submit(client)["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/api/v1/jobs?{query}", headers=AUTH).get_json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(created))


def test_jobs_created_while_paging_do_not_repeat(client: FlaskClient) -> None:
    created = [submit(client)["id"] for _ in range(7)]
    first = client.get("/api/v1/jobs?limit=3", headers=AUTH).get_json()
    newer = [submit(client)["id"] for _ in range(4)]
    seen = [item["id"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"/api/v1/jobs?limit=3&cursor={cursor}", headers=AUTH).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen))
    assert seen == list(reversed(created))
    assert not set(newer) & set(seen)


def test_list_limit_defaults_to_50(client: FlaskClient, store: JobStore) -> None:
    page = client.get("/api/v1/jobs", headers=AUTH).get_json()
    assert page == {"items": [], "next_cursor": None}


# -- one job, cancel, events --------------------------------------------------------------------

def test_get_job_with_timeline(client: FlaskClient) -> None:
    job = submit(client)
    response = client.get(f"/api/v1/jobs/{job['id']}", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == job["id"]
    assert [event["kind"] for event in body["timeline"]] == ["queued"]


def test_get_unknown_job_is_404(client: FlaskClient) -> None:
    body = assert_problem(client.get("/api/v1/jobs/j-nope", headers=AUTH), 404)
    assert "j-nope" in body["detail"]


def test_cancel_a_queued_job_then_again(client: FlaskClient, store: JobStore) -> None:
    job = submit(client)
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "cancelled"
    assert body["timeline"][-1]["kind"] == "cancelled"
    assert store.get(job["id"]).status == JobStatus.CANCELLED

    again = assert_problem(client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=AUTH), 409)
    assert "cancelled" in again["detail"]


def test_cancel_a_running_job_asks_it_to_abort(client: FlaskClient, store: JobStore) -> None:
    job = submit(client)
    store.claim(job["id"], "worker-1")
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "running"
    assert body["cancel_requested"] is True
    assert store.cancel_requested_by(job["id"]) == submitter_name(TOKEN)


def test_cancel_a_finished_job_says_how_it_ended(client: FlaskClient, store: JobStore) -> None:
    job = submit(client)
    store.claim(job["id"], "worker-1")
    store.finish(job["id"], JobStatus.SUCCEEDED, "all pods recovered")
    body = assert_problem(client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=AUTH), 409)
    assert "succeeded" in body["detail"] and "all pods recovered" in body["detail"]


def test_cancel_unknown_job_is_404(client: FlaskClient) -> None:
    assert_problem(client.post("/api/v1/jobs/j-nope/cancel", headers=AUTH), 404)


def test_events_are_the_timeline(client: FlaskClient, store: JobStore) -> None:
    job = submit(client)
    store.append_event(job["id"], "selected", "2 pods")
    response = client.get(f"/api/v1/jobs/{job['id']}/events", headers=AUTH)
    assert response.status_code == 200
    assert [item["kind"] for item in response.get_json()["items"]] == ["queued", "selected"]
    assert_problem(client.get("/api/v1/jobs/j-nope/events", headers=AUTH), 404)


def test_events_as_a_stream_of_an_ended_job(client: FlaskClient, store: JobStore) -> None:
    job = submit(client)
    store.append_event(job["id"], "selected", "2 pods")
    store.finish(job["id"], JobStatus.FAILED, "no targets")
    response = client.get(f"/api/v1/jobs/{job['id']}/events",
                          headers={**AUTH, "Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    text = response.get_data(as_text=True)
    kinds = re.findall(r"^event: (.+)$", text, re.M)
    assert kinds == ["queued", "selected", "failed", "end"]
    assert re.findall(r"^id: (\d+)$", text, re.M) == ["0", "1", "2"]
    assert text.rstrip().endswith('data: {"status": "failed"}')
    resumed = client.get(f"/api/v1/jobs/{job['id']}/events",
                         headers={**AUTH, "Accept": "text/event-stream", "Last-Event-ID": "1"})
    assert re.findall(r"^event: (.+)$", resumed.get_data(as_text=True), re.M) == [
        "failed", "end"]


# -- catalogue, preview, health -----------------------------------------------------------------

def test_actions_catalogue(client: FlaskClient) -> None:
    response = client.get("/api/v1/actions", headers=AUTH)
    assert response.status_code == 200
    entries = {item["name"]: item for item in response.get_json()["items"]}
    pod_kill = entries["pod-kill"]
    assert pod_kill["targets"] == "pods"
    assert pod_kill["description"]
    schema = pod_kill["params_schema"]
    assert schema["type"] == "object"
    assert "grace_period_seconds" in schema["properties"]
    assert schema.get("additionalProperties") is False


def test_preview_cluster_error_is_502(client: FlaskClient) -> None:
    body = assert_problem(client.post("/api/v1/preview", json=JOB, headers=AUTH), 502)
    assert "connection refused" in body["detail"]


def test_preview_without_a_usable_kubeconfig_is_502(fake_redis: fakeredis.FakeRedis) -> None:
    def no_kubeconfig() -> ClusterAccess:
        raise FileNotFoundError("kubeconfig /nowhere/config not found")

    app = create_app(make_settings(), redis_client=fake_redis, queue=RecordingQueue(),
                     cluster_factory=no_kubeconfig)
    response = app.test_client().post("/api/v1/preview", json=JOB, headers=AUTH)
    assert "kubeconfig" in assert_problem(response, 502)["detail"]


def test_preview_validates_like_submit(client: FlaskClient) -> None:
    spec = {**JOB, "target": {**JOB["target"], "namespaces": ["kube-system"]}}
    assert_problem(client.post("/api/v1/preview", json=spec, headers=AUTH), 422,
                   [r"target\.namespaces\[0\]"])


def test_unexpected_errors_are_500_without_internals(fake_redis: fakeredis.FakeRedis) -> None:
    app = create_app(make_settings(), redis_client=fake_redis, queue=RecordingQueue(),
                     cluster_factory=BuggyCluster)
    response = app.test_client().post("/api/v1/preview", json=JOB, headers=AUTH)
    body = assert_problem(response, 500)
    assert "secret" not in response.get_data(as_text=True)
    assert "RuntimeError" not in body["detail"]


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok"}


def test_readyz_is_503_when_redis_is_down() -> None:
    down = redis.Redis(port=1, socket_connect_timeout=1)
    app = create_app(make_settings(), redis_client=down, queue=RecordingQueue())
    client = app.test_client()
    assert_problem(client.get("/readyz"), 503)
    assert client.get("/healthz").status_code == 200
    # A request that needs the store answers 503 too, not 500.
    assert_problem(client.get("/api/v1/jobs", headers=AUTH), 503)


# -- authentication -----------------------------------------------------------------------------

PROTECTED = [("post", "/api/v1/jobs"), ("get", "/api/v1/jobs"), ("get", "/api/v1/jobs/j-1"),
             ("post", "/api/v1/jobs/j-1/cancel"), ("get", "/api/v1/jobs/j-1/events"),
             ("get", "/api/v1/actions"), ("post", "/api/v1/preview")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}",
                                           "Bearer ", TOKEN])
def test_protected_routes_need_a_valid_token(client: FlaskClient, queue: RecordingQueue,
                                             method: str, path: str,
                                             authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = getattr(client, method)(path, json=JOB, headers=headers)
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert queue.sent == []


@pytest.mark.parametrize("kubernetes_auth", [True, False])
def test_an_unknown_token_is_refused_whether_or_not_the_cluster_is_asked(
        fake_redis: fakeredis.FakeRedis, kubernetes_auth: bool) -> None:
    """With PYSTOL_KUBERNETES_AUTH a token the API does not know is asked of the cluster
    (a TokenReview); a cluster that cannot answer refuses it (401), never lets it in."""
    clusters: list[UnreachableCluster] = []

    def cluster() -> UnreachableCluster:
        clusters.append(UnreachableCluster())
        return clusters[-1]
    queue = RecordingQueue()
    app = create_app(make_settings(kubernetes_auth=kubernetes_auth), redis_client=fake_redis,
                     queue=queue, cluster_factory=cluster)
    response = app.test_client().post("/api/v1/jobs", json=JOB,
                                      headers={"Authorization": "Bearer not-a-pystol-token"})
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert [c.reviews for c in clusters] == ([1] if kubernetes_auth else [])
    assert queue.sent == []


def test_public_routes_need_no_token(client: FlaskClient) -> None:
    for path in ("/healthz", "/readyz", "/api/v1/openapi.json", "/api/v1/docs"):
        assert client.get(path).status_code == 200, path


# -- bad input is a 4xx problem, never a 5xx ----------------------------------------------------

def with_target(**target: Any) -> dict[str, Any]:
    return {**JOB, "target": {"namespaces": ["shop"], **target}}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


INVALID_JOBS = [
    pytest.param({**JOB, "action": "nuke"}, ["action"], id="unknown-action"),
    pytest.param(with_target(label_selector="app in (web"), [r"target\.label_selector"],
                 id="bad-label-selector"),
    pytest.param(with_target(field_selector="((("), [r"target\.field_selector"],
                 id="bad-field-selector"),
    # The model checks mode and value together (loc `target`); a field check would say
    # `target.value`.
    pytest.param(with_target(mode="fixed"), [r"target(\.value)?"], id="mode-needs-value"),
    pytest.param(with_target(mode="all", value=3), [r"target(\.value)?"],
                 id="mode-takes-no-value"),
    pytest.param(with_target(mode="fixed-percent", value=150), [r"target(\.value)?"],
                 id="percent-range"),
    pytest.param(with_target(mode="fixed", value="two"), [r"target\.value"], id="value-type"),
    pytest.param(with_target(mode="sometimes"), [r"target\.mode"], id="unknown-mode"),
    pytest.param({**JOB, "target": {"namespaces": ["shop", "kube-system"]}},
                 [r"target\.namespaces\[1\]"], id="protected-namespace"),
    pytest.param({**JOB, "target": {"namespaces": []}}, [r"target\.namespaces"],
                 id="no-namespace"),
    pytest.param({**JOB, "target": {"namespaces": [7]}}, [r"target\.namespaces\[0\]"],
                 id="namespace-type"),
    pytest.param({**JOB, "params": {"bogus": True}}, [r"params\.bogus"], id="unknown-param"),
    pytest.param({**JOB, "params": {"grace_period_seconds": "soon"}},
                 [r"params\.grace_period_seconds"], id="param-type"),
    # Refused by the job model's own limit on params' depth (MAX_PARAMS_DEPTH), at `params`.
    pytest.param({**JOB, "params": nested(500)}, ["params"], id="deep-params"),
    pytest.param({**JOB, "surprise": 1}, ["surprise"], id="unknown-field"),
    pytest.param({"target": JOB["target"]}, ["action"], id="missing-action"),
    pytest.param({**JOB, "dry_run": "maybe"}, ["dry_run"], id="dry-run-type"),
    pytest.param({**JOB, "duration": "soon"}, ["duration"], id="bad-duration"),
    # Non-finite numbers: the model names the field; the API's own guard says `body`.
    pytest.param({**JOB, "duration": "inf"}, ["duration|body"], id="infinite-duration"),
    pytest.param(with_target(mode="fixed", value="inf"), [r"target\.value|body"],
                 id="infinite-value"),
    pytest.param({**JOB, "probes": [{"type": "http", "url": "http://x", "timeout": "nan"}]},
                 [r"probes\[0\](\.http)?(\.run)?\.timeout|body"], id="nan-probe-timeout"),
    pytest.param(with_target(amount=10**400), [r"target(\.amount)?|body"], id="huge-amount"),
    pytest.param({**JOB, "duration": 10**400}, ["duration|body"], id="huge-duration"),
    pytest.param({**JOB, "probes": [{"type": "http", "url": "ftp://x"}]},
                 [r"probes\[0\](\.http)?\.url"], id="probe-url"),
    pytest.param({**JOB, "idempotency_key": ""}, ["idempotency_key"], id="empty-key"),
]


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/preview"])
@pytest.mark.parametrize(("spec", "locs"), INVALID_JOBS)
def test_invalid_jobs_are_422_with_field_paths(client: FlaskClient, queue: RecordingQueue,
                                               path: str, spec: dict[str, Any],
                                               locs: list[str]) -> None:
    body = assert_problem(client.post(path, json=spec, headers=AUTH), 422, locs)
    assert body["type"] == PROBLEM_TYPE_BASE + "validation-error"
    assert body["detail"].startswith(body["errors"][0]["loc"] + ": ")
    assert all(error["msg"] for error in body["errors"])
    assert not any(error["msg"].startswith("Value error") for error in body["errors"])
    assert queue.sent == []


RAW_BODIES = [
    pytest.param(b"{", "application/json", 400, id="malformed-json"),
    pytest.param(b"", "application/json", 400, id="empty-body"),
    pytest.param(b'{"action": "\xff"}', "application/json", 400, id="not-utf8"),
    pytest.param(b'{"action": NaN}', "application/json", 400, id="nan-literal"),
    pytest.param(b"[" * 20000, "application/json", 400, id="deep-nesting"),
    pytest.param(b"[]", "application/json", 422, id="array-body"),
    pytest.param(b"null", "application/json", 422, id="null-body"),
    pytest.param(json.dumps(json.dumps(JOB)).encode(), "application/json", 422,
                 id="json-string-body"),
    pytest.param(b'{"action": "pod-kill", "target": {"namespaces": ["shop"], "mode": "fixed",'
                 b' "value": 1e999}}', "application/json", 422, id="overflowing-number"),
    pytest.param(json.dumps(JOB).encode(), "text/plain", 415, id="text-plain"),
    pytest.param(b"action=pod-kill", "application/x-www-form-urlencoded", 415, id="form"),
    pytest.param(json.dumps(JOB).encode(), None, 415, id="no-content-type"),
]


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/preview"])
@pytest.mark.parametrize(("data", "content_type", "status"), RAW_BODIES)
def test_bad_bodies_are_4xx_problems(client: FlaskClient, queue: RecordingQueue, path: str,
                                     data: bytes, content_type: str | None,
                                     status: int) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    assert_problem(client.post(path, data=data, headers=headers), status)
    assert queue.sent == []


def test_oversized_body_is_413(client: FlaskClient, queue: RecordingQueue) -> None:
    spec = {**JOB, "params": {"padding": "x" * (70 * 1024)}}
    body = assert_problem(client.post("/api/v1/jobs", json=spec, headers=AUTH), 413)
    assert str(64 * 1024) in body["detail"]
    assert queue.sent == []


def test_bad_source_header_is_422(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json=JOB, headers={**AUTH, "X-Pystol-Source": "cr"})
    body = assert_problem(response, 422, ["X-Pystol-Source"])
    assert TOKEN not in response.get_data(as_text=True)
    assert "api" in body["detail"] and "cli" in body["detail"]


@pytest.mark.parametrize(("query", "loc"), [
    ("status=bogus", "status"), ("limit=0", "limit"), ("limit=201", "limit"),
    ("limit=ten", "limit"), ("cursor=abc", "cursor"), ("cursor=" + "9" * 40, "cursor"),
    ("action=", "action"), ("stauts=queued", "stauts"),
])
def test_bad_list_queries_are_422(client: FlaskClient, query: str, loc: str) -> None:
    assert_problem(client.get(f"/api/v1/jobs?{query}", headers=AUTH), 422, [loc])


def test_unknown_route_is_404(client: FlaskClient) -> None:
    assert_problem(client.get("/api/v1/nothing-here", headers=AUTH), 404)
    assert_problem(client.get("/nothing-here"), 404)


def test_wrong_method_is_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/api/v1/jobs", headers=AUTH)
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_problem(client.get("/api/v1/preview", headers=AUTH), 405)


# -- OpenAPI and docs ---------------------------------------------------------------------------

def test_openapi_document(client: FlaskClient) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    paths = document["paths"]
    expected = {("/api/v1/jobs", "post"), ("/api/v1/jobs", "get"), ("/api/v1/jobs/{id}", "get"),
                ("/api/v1/jobs/{id}/cancel", "post"), ("/api/v1/jobs/{id}/events", "get"),
                ("/api/v1/actions", "get"), ("/api/v1/preview", "post"),
                ("/healthz", "get"), ("/readyz", "get")}
    for path, method in expected:
        assert method in paths.get(path, {}), (path, method)
    schemas = document["components"]["schemas"]
    assert {"action", "target", "params"} <= set(schemas["JobSpec"]["properties"])
    assert "Problem" in schemas
    body_schema = paths["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert body_schema["schema"]["$ref"] == "#/components/schemas/JobSpec"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "A token from PYSTOL_API_TOKENS."}
    assert paths["/api/v1/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert "Location" in paths["/api/v1/jobs"]["post"]["responses"]["202"]["headers"]
    # Every reference resolves, and no operation advertises an error shape we don't send.
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in schemas, ref
    for path_item in paths.values():
        for operation in path_item.values():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(answer["content"]) == [PROBLEM_JSON], (status, operation)


def test_docs_page_uses_only_local_assets(client: FlaskClient) -> None:
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger-ui" in page
    assert not re.search(r"https?://", page)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets
    for asset in assets:  # resolved as the browser does, relative to the page
        assert client.get(urljoin("/api/v1/docs", asset)).status_code == 200, asset


# -- start-up -----------------------------------------------------------------------------------

def test_building_the_app_does_not_import_kubernetes() -> None:
    code = (
        "import sys, fakeredis\n"
        "from pystol_api.http.app import create_app\n"
        "from pystol_worker.core.settings import Settings\n"
        "app = create_app(Settings(api_tokens=['t']), redis_client=fakeredis.FakeRedis())\n"
        "app.test_client().get('/api/v1/actions', headers={'Authorization': 'Bearer t'})\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported at start-up'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serve_refuses_to_start_without_tokens() -> None:
    with pytest.raises(SystemExit) as stopped:
        serve(make_settings(api_tokens=[]))
    assert "PYSTOL_API_TOKENS" in str(stopped.value.code)


def test_gunicorn_configuration(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(api_bind="127.0.0.1:18080", api_workers=3)
    built: list[Settings] = []

    def factory(given: Settings) -> Flask:
        built.append(given)
        return create_app(given, redis_client=fake_redis, queue=RecordingQueue())

    server = ApiServer(settings, app_factory=factory)
    assert server.cfg is not None
    assert server.cfg.bind == ["127.0.0.1:18080"]
    assert server.cfg.workers == 3
    assert server.cfg.worker_class_str == "pystol_api.http.gunicorn_worker.DeadlineThreadWorker"
    assert server.cfg.accesslog == "-"
    assert server.cfg.preload_app is False
    assert built == []  # nothing is built in the master: each worker loads its own app
    app = server.load()
    assert built == [settings]
    assert app.test_client().get("/healthz").status_code == 200
    assert gunicorn_options(settings)["worker_class"] == \
        "pystol_api.http.gunicorn_worker.DeadlineThreadWorker"


def test_services_are_the_injected_ones(app: Flask, fake_redis: fakeredis.FakeRedis,
                                        queue: RecordingQueue) -> None:
    services = services_of(app)
    assert services.redis is fake_redis
    assert services.queue is queue
    assert services.registry is default_registry()
