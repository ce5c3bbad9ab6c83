"""Tokens, the audit trail, the policy and whoami over HTTP, against fakeredis and a
recording queue (apps built by `create_app`, nothing patched).

The role table at the top is the contract: for each identity and each operation of these
routes, the status the API answers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from pystol_api.http.app import create_app, services_of
from pystol_api.http.auth import submitter_name
from pystol_api.http.problems import PROBLEM_JSON, PROBLEM_TYPE_BASE
from pystol_worker.actions import default_registry
from pystol_worker.core.access import Role
from pystol_worker.core.settings import Settings
from pystol_worker.store.token_store import SECRET_PREFIX, TokenStore
from tests.support.recording_queue import RecordingQueue

ADMIN_TOKEN = "unit-test-admin-token"
SIGNING_KEY = "unit-test-signing-key-0123456789"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_tokens": [ADMIN_TOKEN], "signing_key": SIGNING_KEY,
                              "redis_url": "redis://127.0.0.1:6379/0",
                              "kubernetes_auth": False, "max_request_bytes": 64 * 1024}
    values.update(overrides)
    return Settings(**values)


class Harness:
    def __init__(self) -> None:
        self.redis = fakeredis.FakeRedis()
        self.app = create_app(make_settings(), redis_client=self.redis, queue=RecordingQueue(),
                              registry=default_registry())


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


@pytest.fixture
def app(harness: Harness) -> Flask:
    harness.redis.flushall()
    return harness.app


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


ADMIN = bearer(ADMIN_TOKEN)


def named(app: Flask, name: str, role: Role, namespaces: list[str],
          expires: float | None = None) -> dict[str, str]:
    """Headers for a named token made directly in the store."""
    _, secret = services_of(app).tokens.create(name, role, namespaces, expires, "test")
    return bearer(secret)


def assert_problem(response: Any, status: int, locs: list[str] | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body: dict[str, Any] = json.loads(response.get_data(as_text=True))
    assert body["status"] == status and body["type"].startswith(PROBLEM_TYPE_BASE)
    assert body["detail"]
    if locs is not None:
        assert [error["loc"] for error in body["errors"]] == locs, body
    return body


def audit_items(client: FlaskClient, **query: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/audit", query_string=query, headers=ADMIN)
    assert response.status_code == 200, response.get_data(as_text=True)
    items: list[dict[str, Any]] = response.get_json()["items"]
    return items


# -- who may do what -------------------------------------------------------------------------

OPERATIONS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "tokens.list": ("GET", "/api/v1/tokens", None),
    "tokens.create": ("POST", "/api/v1/tokens",
                      {"name": "made", "role": "viewer", "namespaces": ["shop"]}),
    "tokens.revoke": ("DELETE", "/api/v1/tokens/victim", None),
    "audit.read": ("GET", "/api/v1/audit", None),
    "policy.read": ("GET", "/api/v1/policy", None),
    "whoami": ("GET", "/api/v1/whoami", None),
}
ROLE_TABLE: dict[str, dict[str, int]] = {
    #            tokens.list create revoke audit.read policy whoami
    "anonymous": dict(zip(OPERATIONS, (401, 401, 401, 401, 401, 401), strict=True)),
    "viewer":    dict(zip(OPERATIONS, (403, 403, 403, 403, 200, 200), strict=True)),
    "operator":  dict(zip(OPERATIONS, (403, 403, 403, 403, 200, 200), strict=True)),
    "admin":     dict(zip(OPERATIONS, (200, 201, 204, 200, 200, 200), strict=True)),
    "settings":  dict(zip(OPERATIONS, (200, 201, 204, 200, 200, 200), strict=True)),
}


@pytest.mark.parametrize("role", list(ROLE_TABLE))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_role_table(app: Flask, client: FlaskClient, role: str, operation: str) -> None:
    services_of(app).tokens.create("victim", Role.VIEWER, ["shop"], None, "test")
    headers = {
        "anonymous": {},
        "viewer": named(app, "v", Role.VIEWER, ["shop"]),
        "operator": named(app, "o", Role.OPERATOR, ["shop", "cart"]),
        "admin": named(app, "a", Role.ADMIN, []),
        "settings": ADMIN,
    }[role]
    method, path, body = OPERATIONS[operation]
    response = client.open(path, method=method, json=body, headers=headers)
    expected = ROLE_TABLE[role][operation]
    if expected >= 400:
        problem = assert_problem(response, expected)
        if expected == 403:
            assert "may not" in problem["detail"]
    else:
        assert response.status_code == expected, response.get_data(as_text=True)
    if operation == "tokens.revoke" and expected == 403:
        assert [t.name for t in services_of(app).tokens.list()].count("victim") == 1


def test_a_refused_invalid_body_is_still_403(app: Flask, client: FlaskClient) -> None:
    operator = named(app, "o", Role.OPERATOR, ["shop"])
    response = client.post("/api/v1/tokens", json={"name": "BAD NAME"}, headers=operator)
    assert_problem(response, 403)


# -- tokens ------------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_it_authenticates(app: Flask,
                                                           client: FlaskClient) -> None:
    response = client.post("/api/v1/tokens", headers=ADMIN,
                           json={"name": "ci-shop", "role": "operator",
                                 "namespaces": ["shop", "cart"], "expires": "30d"})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Location"] == "/api/v1/tokens/ci-shop"
    assert response.headers["Cache-Control"] == "no-store"
    created = response.get_json()
    secret = created["token"]
    assert secret.startswith(SECRET_PREFIX)
    assert created["name"] == "ci-shop" and created["role"] == "operator"
    assert created["namespaces"] == ["cart", "shop"]
    assert created["created_by"] == submitter_name(ADMIN_TOKEN)
    lifetime = (datetime.fromisoformat(created["expires_at"])
                - datetime.fromisoformat(created["created_at"]))
    assert lifetime == timedelta(days=30)

    listed = client.get("/api/v1/tokens", headers=ADMIN)
    assert listed.status_code == 200
    assert secret not in listed.get_data(as_text=True)
    [item] = listed.get_json()["items"]
    assert "token" not in item and item["name"] == "ci-shop" and item["intact"] is True

    who = client.get("/api/v1/whoami", headers=bearer(secret))
    assert who.status_code == 200, who.get_data(as_text=True)
    assert who.get_json()["actor"]["name"] == "ci-shop"
    assert who.get_json()["actor"]["kind"] == "token"


def test_revoked_and_expired_tokens_get_401(app: Flask, client: FlaskClient) -> None:
    created = client.post("/api/v1/tokens", headers=ADMIN,
                          json={"name": "short", "role": "viewer", "namespaces": ["shop"]})
    secret = created.get_json()["token"]
    assert client.get("/api/v1/policy", headers=bearer(secret)).status_code == 200
    assert client.delete("/api/v1/tokens/short", headers=ADMIN).status_code == 204
    assert_problem(client.get("/api/v1/policy", headers=bearer(secret)), 401)
    assert_problem(client.delete("/api/v1/tokens/short", headers=ADMIN), 404)

    # made two hours ago for one hour, by a store whose clock says so
    past = TokenStore(services_of(app).redis, SIGNING_KEY.encode(),
                      clock=lambda: time.time() - 7200)
    _, old = past.create("old", Role.ADMIN, [], 3600, "test")
    assert_problem(client.get("/api/v1/policy", headers=bearer(old)), 401)
    assert_problem(client.get("/api/v1/policy", headers=bearer(SECRET_PREFIX + "nope")), 401)


def test_a_token_forged_in_redis_gets_401(app: Flask, client: FlaskClient) -> None:
    other_key = TokenStore(services_of(app).redis, b"not-the-signing-key-000")
    _, forged = other_key.create("forged", Role.ADMIN, [], None, "intruder")
    assert_problem(client.get("/api/v1/tokens", headers=bearer(forged)), 401)
    [item] = client.get("/api/v1/tokens", headers=ADMIN).get_json()["items"]
    assert item["name"] == "forged" and item["intact"] is False


@pytest.mark.parametrize(("body", "locs"), [
    ({"name": "Bad_Name", "role": "viewer", "namespaces": ["shop"]}, ["name"]),
    ({"name": "x" * 64, "role": "viewer", "namespaces": ["shop"]}, ["name"]),
    ({"name": "v", "role": "viewer"}, ["namespaces"]),
    ({"name": "a", "role": "admin", "namespaces": ["shop"]}, ["namespaces"]),
    ({"name": "o", "role": "operator", "namespaces": ["Shop!"]}, ["namespaces[0]"]),
    ({"name": "r", "role": "root", "namespaces": ["shop"]}, ["role"]),
    ({"name": "e", "role": "admin", "expires": "soon"}, ["expires"]),
    ({"name": "e", "role": "admin", "expires": "0s"}, ["expires"]),
    ({"name": "e", "role": "admin", "expires": "99999d"}, ["expires"]),
    ({"name": "e", "role": "admin", "token": "pst_mine"}, ["token"]),
    ({"role": "admin"}, ["name"]),
])
def test_invalid_tokens_are_422_with_field_paths(client: FlaskClient, body: dict[str, Any],
                                                 locs: list[str]) -> None:
    assert_problem(client.post("/api/v1/tokens", json=body, headers=ADMIN), 422, locs)


@pytest.mark.parametrize(("expires", "seconds"), [
    ("12h", 12 * 3600), ("1d12h", 36 * 3600), (3600, 3600), ("90d", 90 * 86400), (None, None)])
def test_expiry_formats(client: FlaskClient, expires: Any, seconds: int | None) -> None:
    created = client.post("/api/v1/tokens", headers=ADMIN,
                          json={"name": "t", "role": "admin", "expires": expires}).get_json()
    if seconds is None:
        assert created["expires_at"] is None
    else:
        lifetime = (datetime.fromisoformat(created["expires_at"])
                    - datetime.fromisoformat(created["created_at"]))
        assert lifetime.total_seconds() == seconds


def test_a_taken_name_is_409(client: FlaskClient) -> None:
    body = {"name": "ci", "role": "viewer", "namespaces": ["shop"]}
    assert client.post("/api/v1/tokens", json=body, headers=ADMIN).status_code == 201
    problem = assert_problem(client.post("/api/v1/tokens", json=body, headers=ADMIN), 409)
    assert "revoke it first" in problem["detail"]


# -- the audit trail of token operations ---------------------------------------------------


def test_token_operations_are_audited_whatever_the_outcome(app: Flask,
                                                           client: FlaskClient) -> None:
    operator = named(app, "op", Role.OPERATOR, ["shop"])
    body = {"name": "ci", "role": "operator", "namespaces": ["shop"]}
    client.post("/api/v1/tokens", json=body, headers=ADMIN)                        # ok
    client.post("/api/v1/tokens", json=body, headers=ADMIN)                        # failed
    client.post("/api/v1/tokens", json={**body, "name": "Bad!"}, headers=ADMIN)   # invalid
    client.post("/api/v1/tokens", json=body, headers=operator)                     # refused
    client.delete("/api/v1/tokens/ci", headers=operator)                           # refused
    client.delete("/api/v1/tokens/ci", headers=ADMIN)                              # ok
    client.delete("/api/v1/tokens/ci", headers=ADMIN)                              # failed
    client.get("/api/v1/tokens", headers=operator)                       # a read: not audited
    items = audit_items(client)
    seen = [(i["operation"], i["outcome"], i["actor"]["name"], i["targets"]) for i in items]
    admin = submitter_name(ADMIN_TOKEN)
    assert seen == [
        ("token.revoke", "failed", admin, ["ci"]),
        ("token.revoke", "ok", admin, ["ci"]),
        ("token.revoke", "refused", "op", ["ci"]),
        ("token.create", "refused", "op", ["ci"]),
        ("token.create", "invalid", admin, ["Bad!"]),
        ("token.create", "failed", admin, ["ci"]),
        ("token.create", "ok", admin, ["ci"]),
    ]
    assert items[-1]["namespaces"] == ["shop"]
    assert "role operator" in items[-1]["detail"]
    assert "may not tokens.manage" in items[3]["detail"]
    assert items[-1]["actor"]["address"] == "127.0.0.1"
    assert "pst_" not in json.dumps(items)


# -- reading the audit trail ---------------------------------------------------------------


def test_audit_filters_and_paging(app: Flask, client: FlaskClient) -> None:
    for name in ("a1", "a2", "a3"):
        client.post("/api/v1/tokens", headers=ADMIN,
                    json={"name": name, "role": "viewer", "namespaces": [name]})
    client.delete("/api/v1/tokens/a2", headers=ADMIN)
    assert [i["targets"] for i in audit_items(client, operation="token.create")] == [
        ["a3"], ["a2"], ["a1"]]
    assert [i["operation"] for i in audit_items(client, namespace="a2")] == [
        "token.revoke", "token.create"]
    assert len(audit_items(client, operation="token")) == 4
    assert audit_items(client, outcome="refused") == []
    assert len(audit_items(client, actor=submitter_name(ADMIN_TOKEN))) == 4
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert audit_items(client, since=future) == []
    assert len(audit_items(client, until=future)) == 4

    first = client.get("/api/v1/audit?limit=3", headers=ADMIN).get_json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = client.get("/api/v1/audit", query_string={"limit": 3,
                                                     "cursor": first["next_cursor"]},
                      headers=ADMIN).get_json()
    assert [i["targets"] for i in rest["items"]] == [["a1"]] and rest["next_cursor"] is None


@pytest.mark.parametrize(("query", "loc"), [
    ("limit=0", "limit"), ("limit=501", "limit"), ("outcome=maybe", "outcome"),
    ("since=yesterday", "since"), ("cursor=abc", "cursor"), ("bogus=1", "bogus")])
def test_audit_query_validation(client: FlaskClient, query: str, loc: str) -> None:
    body = assert_problem(client.get(f"/api/v1/audit?{query}", headers=ADMIN), 422)
    assert [error["loc"] for error in body["errors"]] == [loc]


# -- policy and whoami ---------------------------------------------------------------------


def test_policy_is_readable_by_anyone_signed_in(app: Flask, client: FlaskClient) -> None:
    viewer = named(app, "v", Role.VIEWER, ["shop"])
    answer = client.get("/api/v1/policy", headers=viewer)
    assert answer.status_code == 200
    assert answer.get_json() == json.loads(services_of(app).policy.model_dump_json())
    assert answer.get_json()["max_targets_per_job"] >= 1


def test_whoami_for_an_operator(app: Flask, client: FlaskClient) -> None:
    operator = named(app, "op", Role.OPERATOR, ["shop"])
    answer = client.get("/api/v1/whoami?namespace=cart&namespace=shop", headers=operator)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    who = answer.get_json()
    assert who["actor"]["kind"] == "token" and who["role"] == "operator"
    assert who["namespaces"] == ["shop"]
    assert who["cluster"] == {"cluster.chaos": False, "halt.engage": True,
                              "halt.lift": False, "tokens.manage": False,
                              "audit.read": False}
    assert who["namespace_permissions"]["cart"] == []
    assert set(who["namespace_permissions"]["shop"]) == {
        "jobs.read", "jobs.submit", "jobs.cancel", "schedules.read", "schedules.create",
        "schedules.update", "schedules.delete", "experiments.read", "experiments.write"}


def test_whoami_for_a_viewer_and_an_admin(app: Flask, client: FlaskClient) -> None:
    viewer = client.get("/api/v1/whoami", headers=named(app, "v", Role.VIEWER, ["shop"]))
    assert viewer.get_json()["namespace_permissions"] == {
        "shop": ["jobs.read", "schedules.read", "experiments.read"]}
    assert not any(viewer.get_json()["cluster"].values())
    admin = client.get("/api/v1/whoami?namespace=anything", headers=ADMIN).get_json()
    assert admin["actor"]["kind"] == "settings-token" and admin["role"] == "admin"
    assert admin["namespaces"] is None
    assert all(admin["cluster"].values())
    assert len(admin["namespace_permissions"]["anything"]) == 9


def test_whoami_validates_namespaces(client: FlaskClient) -> None:
    body = assert_problem(client.get("/api/v1/whoami?namespace=Not_Valid", headers=ADMIN), 422)
    assert re.fullmatch(r"namespace(\[0\])?", body["errors"][0]["loc"])
    # At most 100: a request line of 100 names of 63 characters still fits gunicorn's limit.
    many = "&".join(f"namespace=n{i}" for i in range(101))
    assert_problem(client.get(f"/api/v1/whoami?{many}", headers=ADMIN), 422)
    ok = "&".join(f"namespace=n{i}" for i in range(100))
    assert client.get(f"/api/v1/whoami?{ok}", headers=ADMIN).status_code == 200


class ReviewingCluster:
    """The two review calls of `ClusterAccess`: `kube-token` is a service account that
    RBAC lets do everything in `shop`; every SubjectAccessReview asked is recorded."""

    ROBOT = "system:serviceaccount:shop:robot"

    def __init__(self) -> None:
        self.asked: list[str | None] = []  # the namespace of each SubjectAccessReview

    def review_token(self, token: str) -> dict[str, Any]:
        if token != "kube-token":
            return {"authenticated": False}
        return {"authenticated": True, "user": {"username": self.ROBOT, "uid": "u-1",
                                                "groups": ["system:serviceaccounts"]}}

    def review_access(self, user: str, groups: list[str], uid: str | None, verb: str,
                      group: str, resource: str, namespace: str | None) -> bool:
        self.asked.append(namespace)
        return namespace == "shop"


def test_whoami_for_a_kubernetes_identity_asks_rbac_about_30_namespaces_at_most() -> None:
    """Each namespace asked for a Kubernetes identity costs SubjectAccessReviews: one
    request must not make the API send the cluster thousands of them."""
    cluster = ReviewingCluster()
    app = create_app(make_settings(kubernetes_auth=True), redis_client=fakeredis.FakeRedis(),
                     queue=RecordingQueue(), registry=default_registry(),
                     cluster_factory=lambda: cluster)  # type: ignore[arg-type,return-value]
    kube = bearer("kube-token")

    with app.test_client() as client:
        too_many = "&".join(f"namespace=team-{i}" for i in range(31))
        body = assert_problem(client.get(f"/api/v1/whoami?{too_many}", headers=kube), 422,
                              ["namespace"])
        assert "at most 30 namespaces" in body["detail"]
        assert not any(namespace and namespace.startswith("team-")
                       for namespace in cluster.asked)

        thirty = "&".join(f"namespace=team-{i}" for i in range(29))
        answer = client.get(f"/api/v1/whoami?{thirty}&namespace=shop&namespace=shop",
                            headers=kube)  # 30 distinct, one of them twice
        assert answer.status_code == 200, answer.get_data(as_text=True)
        who = answer.get_json()
        assert who["actor"]["kind"] == "kubernetes"
        assert len(who["namespace_permissions"]) == 30
        assert len(who["namespace_permissions"]["shop"]) == 9
        assert who["namespace_permissions"]["team-0"] == []
        assert len([n for n in cluster.asked if n is not None]) <= 30 * 9
        # Pystol's own tokens are not asked of the cluster: they keep the higher limit.
        many = "&".join(f"namespace=team-{i}" for i in range(100))
        assert client.get(f"/api/v1/whoami?{many}", headers=ADMIN).status_code == 200


def test_the_routes_are_in_the_openapi_document(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    paths = document["paths"]
    assert set(paths["/api/v1/tokens"]) == {"get", "post"}
    assert "delete" in paths["/api/v1/tokens/{name}"]
    for path in ("/api/v1/audit", "/api/v1/policy", "/api/v1/whoami"):
        assert "get" in paths[path]
    assert "403" in paths["/api/v1/tokens"]["post"]["responses"]
    assert "TokenCreated" in document["components"]["schemas"]
