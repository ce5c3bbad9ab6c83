"""Callers the API must not trust with more than they may do now.

A token name is not an identity for life: whoever holds a re-created token of a revoked
token's name (or a Kubernetes user whose RoleBinding in a namespace was removed) must not
reach the jobs and schedules submitted under that name, in namespaces they may no longer
touch. What a caller may see and cancel is decided by what they may do now, in every
namespace the job or schedule touches, never by a matching submitter string.

The hooks that audit a refused create (schedules, tokens) read the request body again to
name what was asked. A hostile body must still get its 4xx, never a 500, and still leave
exactly one `invalid` record: deep nesting (a RecursionError in the JSON parser) and a body
over the size limit (413) are the two ways to trip a second read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from pystol_api.http.app import create_app, services_of
from pystol_worker.actions import default_registry
from pystol_worker.core.access import Role
from pystol_worker.store.token_store import TokenStore
from tests.unit.test_api_tokens_audit import (
    ADMIN,
    SIGNING_KEY,
    RecordingQueue,
    bearer,
    make_settings,
)


@pytest.fixture
def app() -> Flask:
    return create_app(make_settings(), redis_client=fakeredis.FakeRedis(),
                      queue=RecordingQueue(), registry=default_registry())


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


def job(namespace: str) -> dict[str, Any]:
    return {"action": "pod-kill", "dry_run": True,
            "target": {"namespaces": [namespace], "label_selector": "app=web"}}


def schedule(namespace: str) -> dict[str, Any]:
    return {"id": "nightly", "interval": "1h", "template": job(namespace)}


def token(app: Flask, role: Role, *namespaces: str) -> dict[str, str]:
    store = TokenStore(services_of(app).redis, SIGNING_KEY.encode())
    _, secret = store.create("ci", role, list(namespaces), None, "test")
    return bearer(secret)


def test_a_recreated_token_name_reaches_none_of_the_old_holders_jobs(
        app: Flask, client: FlaskClient) -> None:
    old = token(app, Role.OPERATOR, "shop", "payments")
    submitted = client.post("/api/v1/jobs", json=job("payments"), headers=old)
    assert submitted.status_code == 202, submitted.get_json()
    job_id = submitted.get_json()["id"]
    created = client.post("/api/v1/schedules", json=schedule("payments"), headers=old)
    assert created.status_code == 201, created.get_json()
    schedule_id = created.get_json()["id"]
    assert client.delete("/api/v1/tokens/ci", headers=ADMIN).status_code == 204

    new = token(app, Role.OPERATOR, "shop")  # the same name, for someone else, in shop
    listed = client.get("/api/v1/jobs", headers=new).get_json()
    assert job_id not in [item["id"] for item in listed["items"]]
    assert client.get(f"/api/v1/jobs/{job_id}", headers=new).status_code == 404
    cancel = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=new)
    assert cancel.status_code == 404
    status = client.get(f"/api/v1/jobs/{job_id}", headers=ADMIN).get_json()["status"]
    assert status == "queued"  # the old holder's job is untouched
    assert client.get(f"/api/v1/schedules/{schedule_id}", headers=new).status_code == 404
    assert client.delete(f"/api/v1/schedules/{schedule_id}", headers=new).status_code == 404
    assert client.get(f"/api/v1/schedules/{schedule_id}", headers=ADMIN).status_code == 200


def test_a_node_level_job_probing_a_namespace_stays_an_admins_job(
        app: Flask, client: FlaskClient) -> None:
    """A node-cordon names no namespace, so only cluster-scope callers may see or cancel
    it; its probe reading `shop` must not make it a `shop` job an operator of shop can
    list, read or cancel."""
    body = {"action": "node-cordon", "duration": "5m", "target": {"names": ["node-1"]},
            "probes": [{"type": "k8s", "namespace": "shop",
                        "object": {"kind": "Deployment", "name": "web"}}]}
    submitted = client.post("/api/v1/jobs", json=body, headers=ADMIN)
    assert submitted.status_code == 202, submitted.get_json()
    job_id = submitted.get_json()["id"]
    operator = token(app, Role.OPERATOR, "shop")
    assert client.get("/api/v1/jobs", headers=operator).get_json()["items"] == []
    assert client.get(f"/api/v1/jobs/{job_id}", headers=operator).status_code == 404
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=operator).status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}", headers=ADMIN).get_json()["status"] == "queued"


def test_an_idempotency_key_of_the_old_holder_names_no_job_to_the_new_one(
        app: Flask, client: FlaskClient) -> None:
    old = token(app, Role.OPERATOR, "shop", "payments")
    earlier = client.post("/api/v1/jobs", json={**job("payments"), "idempotency_key": "k1"},
                          headers=old)
    assert earlier.status_code == 202
    job_id = earlier.get_json()["id"]
    conflict = client.post("/api/v1/jobs", json={**job("payments"), "idempotency_key": "k1",
                                                 "duration": "30s"}, headers=old)
    assert conflict.status_code == 409 and job_id in conflict.get_json()["detail"]
    assert client.delete("/api/v1/tokens/ci", headers=ADMIN).status_code == 204

    new = token(app, Role.OPERATOR, "shop")
    reused = client.post("/api/v1/jobs", json={**job("shop"), "idempotency_key": "k1"},
                         headers=new)
    assert reused.status_code == 409, reused.get_json()
    assert job_id not in reused.get_json()["detail"]


JSON = {**ADMIN, "Content-Type": "application/json"}


@pytest.mark.parametrize("path", ["/api/v1/schedules", "/api/v1/tokens"])
@pytest.mark.parametrize(("body", "status"), [
    (b"[" * 2000, 400),                                   # nesting deeper than the parser
    (b'{"id": "' + b"x" * (70 * 1024) + b'"}', 413),      # over max_request_bytes (64 KiB)
], ids=["deep", "huge"])
def test_a_hostile_body_gets_its_4xx_and_one_invalid_record(
        app: Flask, client: FlaskClient, path: str, body: bytes, status: int) -> None:
    response = client.post(path, data=body, headers=JSON)
    assert response.status_code == status, response.get_data()[:300]
    records, _ = services_of(app).audit.read()
    assert [record.outcome for record in records] == ["invalid"]
