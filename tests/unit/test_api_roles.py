"""Who may do what over HTTP: every role by every job, schedule and halt operation.

One table, read by one test: for each (role, operation) the expected status, and for a
refusal a 403 problem document naming the field or namespace. The tokens are real named
tokens (created in the token store, as `pystol tokens create` does); an operator and a
viewer are scoped to `shop`, and `payments` is another tenant's namespace. Each mutating
operation must leave exactly one audit record, with the caller's identity (kind and exact
name) and outcome; a schedule create or change the API cannot use (422) is recorded as
`invalid`, like a job submission.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from pystol_api.http.app import create_app, services_of
from pystol_api.http.auth import submitter_name
from pystol_worker.actions import default_registry
from pystol_worker.core.access import ActorKind, Role
from pystol_worker.core.settings import Settings
from pystol_worker.kube.fake_cluster import FakeCluster
from tests.support.recording_queue import RecordingQueue

ADMIN_TOKEN = "admin-token-0123456789"


def pod_kill(namespace: str, **extra: Any) -> dict[str, Any]:
    return {"action": "pod-kill", "target": {"namespaces": [namespace],
                                             "label_selector": "app=web"}, **extra}


NODE_DRAIN = {"action": "node-drain", "target": {"names": ["node-1"]}, "dry_run": True}


def schedule(namespace: str, schedule_id: str) -> dict[str, Any]:
    return {"id": schedule_id, "interval": "10m", "template": pod_kill(namespace, dry_run=True)}


@dataclass
class World:
    app: Flask
    client: FlaskClient
    tokens: dict[str, str]  # role name -> bearer secret
    queue: RecordingQueue

    def call(self, who: str, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return self.client.open(path, method=method, json=body, headers=headers)

    def audit(self) -> list[Any]:
        records, _ = services_of(self.app).audit.read(limit=500)
        return records


@pytest.fixture
def world() -> Iterator[World]:
    cluster = FakeCluster()
    for namespace in ("shop", "payments"):
        cluster.add_pod(namespace, "web-1", labels={"app": "web"})
    cluster.add_node("node-1")
    queue = RecordingQueue()
    app = create_app(Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False),
                     redis_client=fakeredis.FakeRedis(), queue=queue,
                     registry=default_registry(), cluster_factory=lambda: cluster)  # type: ignore[arg-type,return-value]
    store = services_of(app).tokens
    tokens = {"admin": ADMIN_TOKEN}
    for role in (Role.OPERATOR, Role.VIEWER):
        _, tokens[role.value] = store.create(f"{role.value}-shop", role, ["shop"], None,
                                             created_by="test")
    _, tokens["payments-operator"] = store.create("operator-payments", Role.OPERATOR,
                                                  ["payments"], None, created_by="test")
    with app.test_client() as client:
        yield World(app, client, tokens, queue)


def job_in(world: World, namespace: str) -> str:
    """A queued job in `namespace`, submitted by the admin."""
    response = world.call("admin", "POST", "/api/v1/jobs", pod_kill(namespace, dry_run=True))
    assert response.status_code == 202, response.json
    job_id: str = response.json["id"]
    return job_id


def schedule_in(world: World, namespace: str, schedule_id: str) -> str:
    response = world.call("admin", "POST", "/api/v1/schedules",
                          schedule(namespace, schedule_id))
    assert response.status_code == 201, response.json
    return schedule_id


def paused_schedule_in(world: World, namespace: str, schedule_id: str) -> str:
    schedule_in(world, namespace, schedule_id)
    response = world.call("admin", "PATCH", f"/api/v1/schedules/{schedule_id}",
                          {"paused": True})
    assert response.status_code == 200, response.json
    return schedule_id


# (operation, (role -> expected status), request builder). Roles: admin; operator and
# viewer of `shop`. Builders get the world and return (method, path, body).
Request = Callable[[World], tuple[str, str, Any]]
CASES: list[tuple[str, dict[str, int], Request]] = [
    ("submit in own namespace", {"admin": 202, "operator": 202, "viewer": 403},
     lambda w: ("POST", "/api/v1/jobs", pod_kill("shop", dry_run=True))),
    ("submit in another tenant's namespace", {"admin": 202, "operator": 403, "viewer": 403},
     lambda w: ("POST", "/api/v1/jobs", pod_kill("payments", dry_run=True))),
    ("submit node-level chaos", {"admin": 202, "operator": 403, "viewer": 403},
     lambda w: ("POST", "/api/v1/jobs", NODE_DRAIN)),
    ("preview in own namespace", {"admin": 200, "operator": 200, "viewer": 403},
     lambda w: ("POST", "/api/v1/preview", pod_kill("shop"))),
    ("preview in another tenant's namespace", {"admin": 200, "operator": 403, "viewer": 403},
     lambda w: ("POST", "/api/v1/preview", pod_kill("payments"))),
    ("read a job in own namespace", {"admin": 200, "operator": 200, "viewer": 200},
     lambda w: ("GET", f"/api/v1/jobs/{job_in(w, 'shop')}", None)),
    ("read a job in another namespace", {"admin": 200, "operator": 404, "viewer": 404},
     lambda w: ("GET", f"/api/v1/jobs/{job_in(w, 'payments')}", None)),
    ("cancel a job in own namespace", {"admin": 200, "operator": 200, "viewer": 403},
     lambda w: ("POST", f"/api/v1/jobs/{job_in(w, 'shop')}/cancel", None)),
    ("cancel a job in another namespace", {"admin": 200, "operator": 404, "viewer": 404},
     lambda w: ("POST", f"/api/v1/jobs/{job_in(w, 'payments')}/cancel", None)),
    ("create a schedule in own namespace", {"admin": 201, "operator": 201, "viewer": 403},
     lambda w: ("POST", "/api/v1/schedules", schedule("shop", "s-own"))),
    ("create a schedule in another namespace", {"admin": 201, "operator": 403, "viewer": 403},
     lambda w: ("POST", "/api/v1/schedules", schedule("payments", "s-other"))),
    ("pause a schedule in own namespace", {"admin": 200, "operator": 200, "viewer": 403},
     lambda w: ("PATCH", f"/api/v1/schedules/{schedule_in(w, 'shop', 's1')}",
                {"paused": True})),
    ("move a schedule to another namespace", {"admin": 200, "operator": 403, "viewer": 403},
     lambda w: ("PATCH", f"/api/v1/schedules/{schedule_in(w, 'shop', 's2')}",
                {"template": pod_kill("payments", dry_run=True)})),
    ("resume a schedule in own namespace", {"admin": 200, "operator": 200, "viewer": 403},
     lambda w: ("PATCH", f"/api/v1/schedules/{paused_schedule_in(w, 'shop', 's4')}",
                {"paused": False})),
    ("update a schedule in own namespace", {"admin": 200, "operator": 200, "viewer": 403},
     lambda w: ("PATCH", f"/api/v1/schedules/{schedule_in(w, 'shop', 's5')}",
                {"interval": "20m"})),
    ("delete a schedule in own namespace", {"admin": 204, "operator": 204, "viewer": 403},
     lambda w: ("DELETE", f"/api/v1/schedules/{schedule_in(w, 'shop', 's6')}", None)),
    ("delete a schedule in another namespace", {"admin": 204, "operator": 404, "viewer": 404},
     lambda w: ("DELETE", f"/api/v1/schedules/{schedule_in(w, 'payments', 's3')}", None)),
    ("engage the halt", {"admin": 200, "operator": 200, "viewer": 403},
     lambda w: ("POST", "/api/v1/halt", {"reason": "test"})),
    ("lift the halt", {"admin": 200, "operator": 403, "viewer": 403},
     lambda w: ("DELETE", "/api/v1/halt", None)),
    ("read the policy", {"admin": 200, "operator": 200, "viewer": 200},
     lambda w: ("GET", "/api/v1/policy", None)),
]
MUTATING = {"POST", "PATCH", "DELETE"}
#: Who each role's audit records must name: the settings token by its stable hash name,
#: the named tokens by the names they were created with.
ACTORS = {"admin": (ActorKind.SETTINGS_TOKEN, submitter_name(ADMIN_TOKEN)),
          "operator": (ActorKind.TOKEN, "operator-shop"),
          "viewer": (ActorKind.TOKEN, "viewer-shop")}


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
@pytest.mark.parametrize(("operation", "expected", "build"), CASES,
                         ids=[case[0] for case in CASES])
def test_role_may_or_may_not(world: World, role: str, operation: str,
                             expected: dict[str, int], build: Request) -> None:
    method, path, body = build(world)
    before = len(world.audit())
    queued = len(world.queue.sent)
    response = world.call(role, method, path, body)
    assert response.status_code == expected[role], (operation, role, response.json)
    if response.status_code == 403:
        problem = response.json
        assert response.mimetype == "application/problem+json"
        assert problem["status"] == 403 and problem["detail"], problem
        if "payments" in operation or "another" in operation:
            assert "payments" in problem["detail"], problem
        assert len(world.queue.sent) == queued  # nothing queued
    if method in MUTATING and path not in ("/api/v1/preview",) and \
            response.status_code in (200, 201, 202, 204, 403):
        new = world.audit()[:len(world.audit()) - before]
        assert len(new) == 1, (operation, role, [r.operation for r in new])
        record = new[0]
        assert record.outcome == ("refused" if response.status_code == 403 else "ok")
        assert (record.actor.kind, record.actor.name) == ACTORS[role], record.actor


def test_lists_show_only_the_callers_namespaces(world: World) -> None:
    own, other = job_in(world, "shop"), job_in(world, "payments")
    schedule_in(world, "shop", "mine")
    schedule_in(world, "payments", "theirs")
    for role in ("operator", "viewer"):
        jobs = [item["id"] for item in world.call(role, "GET", "/api/v1/jobs").json["items"]]
        assert own in jobs and other not in jobs
        schedules = [item["id"] for item in
                     world.call(role, "GET", "/api/v1/schedules").json["items"]]
        assert schedules == ["mine"]
    admin_jobs = [item["id"] for item in world.call("admin", "GET", "/api/v1/jobs").json["items"]]
    assert {own, other} <= set(admin_jobs)


def test_a_refused_job_is_not_stored(world: World) -> None:
    response = world.call("operator", "POST", "/api/v1/jobs", pod_kill("payments"))
    assert response.status_code == 403
    assert response.json["errors"][0]["loc"] == "target.namespaces[0]"
    assert world.call("admin", "GET", "/api/v1/jobs").json["items"] == []


def test_a_job_spanning_two_namespaces_needs_both(world: World) -> None:
    spec = {"action": "pod-kill", "target": {"namespaces": ["shop", "payments"],
                                             "label_selector": "app=web"}}
    response = world.call("operator", "POST", "/api/v1/jobs", spec)
    assert response.status_code == 403
    assert response.json["errors"][0]["loc"] == "target.namespaces[1]"


def test_an_operator_may_cancel_their_own_job_but_not_the_other_tenants(world: World) -> None:
    mine = world.call("operator", "POST", "/api/v1/jobs", pod_kill("shop", dry_run=True))
    assert mine.status_code == 202
    theirs = world.call("payments-operator", "POST", "/api/v1/jobs",
                        pod_kill("payments", dry_run=True))
    assert theirs.status_code == 202
    assert world.call("operator", "POST",
                      f"/api/v1/jobs/{theirs.json['id']}/cancel").status_code == 404
    assert world.call("operator", "POST",
                      f"/api/v1/jobs/{mine.json['id']}/cancel").status_code == 200


def test_the_cluster_view_shows_only_the_callers_namespaces(world: World) -> None:
    # The fake cluster is not the official client: the view's reads are only checked
    # against the sim (integration). Here: the scoping of an already-read topology.
    from pystol_api.http.routes.cluster import ClusterTopology, PodInfo, WorkloadInfo, scoped

    topology = ClusterTopology(
        nodes=[], namespaces=["payments", "shop"], running_jobs=["j-1", "j-2"],
        pods=[PodInfo(namespace=ns, name="web-1", node=None, phase="Running", ready=True,
                      hit=True, hit_by=[job]) for ns, job in (("shop", "j-1"),
                                                              ("payments", "j-2"))],
        workloads=[WorkloadInfo(kind="Deployment", namespace=ns, name="web", desired=1,
                                ready=1) for ns in ("shop", "payments")])
    view = scoped(topology, lambda namespace: namespace == "shop")
    assert view.namespaces == ["shop"]
    assert [pod.namespace for pod in view.pods] == ["shop"]
    assert [w.namespace for w in view.workloads] == ["shop"]
    assert view.running_jobs == ["j-1"]


# (what is wrong, method, path builder, body, the operation, the namespaces recorded)
INVALID_SCHEDULE_REQUESTS: list[tuple[str, str, Callable[[World], str], Any, str,
                                      list[str]]] = [
    ("a template with an unknown action", "POST", lambda w: "/api/v1/schedules",
     {"id": "s-bad", "interval": "10m", "template": {"action": "no-such-action",
                                                     "target": {"namespaces": ["shop"]}}},
     "schedule.create", ["shop"]),
    ("a body the request model refuses", "POST", lambda w: "/api/v1/schedules",
     {**schedule("shop", "s-bad"), "interval": "often"}, "schedule.create", ["shop"]),
    ("a patch whose merged spec is invalid", "PATCH",
     lambda w: f"/api/v1/schedules/{schedule_in(w, 'shop', 's7')}",
     {"interval": None}, "schedule.update", ["shop"]),
    ("a patch whose template fails validation", "PATCH",
     lambda w: f"/api/v1/schedules/{schedule_in(w, 'shop', 's8')}",
     {"template": {"params": {"no_such_param": 1}}}, "schedule.update", ["shop"]),
    ("a patch with a field schedules do not have", "PATCH",
     lambda w: f"/api/v1/schedules/{schedule_in(w, 'shop', 's9')}",
     {"colour": "red"}, "schedule.update", ["shop"]),
]


@pytest.mark.parametrize(("wrong", "method", "path", "body", "operation", "namespaces"),
                         INVALID_SCHEDULE_REQUESTS,
                         ids=[case[0] for case in INVALID_SCHEDULE_REQUESTS])
def test_an_invalid_schedule_change_is_audited_once_as_invalid(
        world: World, wrong: str, method: str, path: Callable[[World], str], body: Any,
        operation: str, namespaces: list[str]) -> None:
    url = path(world)
    before = len(world.audit())
    response = world.call("operator", method, url, body)
    assert response.status_code == 422, (wrong, response.json)
    new = world.audit()[:len(world.audit()) - before]
    assert [(r.operation, r.outcome) for r in new] == [(operation, "invalid")], wrong
    [record] = new
    assert (record.actor.kind, record.actor.name) == ACTORS["operator"]
    assert record.namespaces == namespaces
    assert record.detail == response.json["detail"]  # what the caller was told
