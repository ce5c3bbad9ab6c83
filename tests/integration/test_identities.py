"""Identities end to end: a real API and worker, a real Redis, the simulated cluster.

- A Kubernetes service-account token (made as `kubectl create token` makes one) signs in
  to the API; the sim's TokenReview says who it is and its RBAC (SubjectAccessReviews)
  decides what it may do, namespace by namespace; the audit trail records each of its
  submissions once, as the cluster named it (user, groups) and from where.
- A named Pystol token (made with `pystol tokens create`) holds its role and namespaces
  through the CLI as through the API.
- A job record edited in Redis after submission (a wider namespace, another image) is
  refused by the worker before it touches the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from kubernetes import client

from pystol_worker.actions import default_registry
from pystol_worker.core.access import Actor, ActorKind, Identity, Role, RoleAuthority
from pystol_worker.core.model import JobSpec, Source
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import grant_for, sealed
from pystol_worker.jobs.validation import validate_job
from pystol_worker.process.celery_app import CeleryJobQueue
from pystol_worker.store.job_store import JobStore
from tests.integration.conftest import Stack


def _pod_kill(namespace: str, dry_run: bool = True) -> dict[str, Any]:
    return {"action": "pod-kill", "target": {"namespaces": [namespace],
                                             "label_selector": "app=web"},
            "dry_run": dry_run}


def _rbac(stack: Stack) -> tuple[client.CoreV1Api, client.RbacAuthorizationV1Api]:
    core, _ = stack.kube_clients()
    return core, client.RbacAuthorizationV1Api(core.api_client)


def _service_account_token(core: client.CoreV1Api, namespace: str, name: str) -> str:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}})
    token: str = request.status.token
    return token


def _grant_operator(rbac: client.RbacAuthorizationV1Api, namespace: str, account: str) -> None:
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "pystol-operator"},
        "rules": [{"apiGroups": ["pystol.org"], "resources": ["pystolactions"],
                   "verbs": ["get", "list", "create", "delete"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": f"pystol-operator-{account}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pystol-operator"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]})


ROBOT = "system:serviceaccount:shop:chaos-robot"


def test_a_service_account_token_signs_in_and_rbac_decides(stack: Stack) -> None:
    core, rbac = _rbac(stack)
    token = _service_account_token(core, "shop", "chaos-robot")

    # Known to the cluster, but no RBAC yet: signed in, allowed nothing.
    who = stack.call("GET", "/api/v1/whoami", token=token, params={"namespace": "shop"})
    assert who.status_code == 200, who.text
    assert who.json()["actor"]["kind"] == "kubernetes"
    assert who.json()["actor"]["name"] == ROBOT
    refused = stack.call("POST", "/api/v1/jobs", token=token, json=_pod_kill("shop"))
    assert refused.status_code == 403, refused.text
    assert "shop" in refused.json()["detail"]

    _grant_operator(rbac, "shop", "chaos-robot")
    time.sleep(11)  # the API caches a "no" for 10 s
    accepted = stack.call("POST", "/api/v1/jobs", token=token, json=_pod_kill("shop"))
    assert accepted.status_code == 202, accepted.text
    record = stack.wait_for_job(accepted.json()["id"])
    assert record["status"] == "succeeded", record
    assert record["actor"]["name"] == ROBOT

    # The Role is in `shop` only: `payments` stays closed, and so does node-level chaos.
    other = stack.call("POST", "/api/v1/jobs", token=token, json=_pod_kill("payments"))
    assert other.status_code == 403
    assert other.json()["errors"][0]["loc"] == "target.namespaces[0]"
    drain = stack.call("POST", "/api/v1/jobs", token=token, json={
        "action": "node-drain", "target": {"names": ["worker-a"]}, "dry_run": True})
    assert drain.status_code == 403
    # It reads its own namespace's jobs and no one else's.
    admin_job = stack.submit(_pod_kill("payments"))
    listed = [item["id"] for item in
              stack.call("GET", "/api/v1/jobs", token=token).json()["items"]]
    assert accepted.json()["id"] in listed and admin_job["id"] not in listed
    assert stack.call("GET", f"/api/v1/jobs/{admin_job['id']}", token=token).status_code == 404

    # The audit trail, read by an admin, has each of its submissions once, under the
    # identity the cluster's TokenReview gave: user, groups, and where the call came from.
    trail = stack.call("GET", "/api/v1/audit", params={"actor": ROBOT,
                                                       "operation": "job.submit"})
    assert trail.status_code == 200, trail.text
    oldest_first = list(reversed(trail.json()["items"]))
    assert [(item["outcome"], item["job_id"], item["namespaces"])
            for item in oldest_first] == [
        ("refused", None, ["shop"]),  # before the RoleBinding
        ("ok", accepted.json()["id"], ["shop"]),
        ("refused", None, ["payments"]),
        ("refused", None, []),  # node-drain: a node, no namespace
    ]
    for item in oldest_first:
        actor = item["actor"]
        assert (actor["kind"], actor["name"]) == ("kubernetes", ROBOT), actor
        assert "system:serviceaccounts:shop" in actor["groups"], actor
        assert actor["address"], actor


def test_a_token_the_cluster_does_not_know_is_refused(stack: Stack) -> None:
    response = stack.call("GET", "/api/v1/jobs", token="not-a-real-token")
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"


def test_a_named_token_holds_its_scope_through_the_cli(stack: Stack) -> None:
    env = dict(os.environ, PYSTOL_API_URL=stack.url, PYSTOL_TOKEN=stack.token, NO_COLOR="1",
               PYSTOL_CONFIG="")
    made = subprocess.run([sys.executable, "-m", "pystol_api.cli", "tokens", "create",
                           "cli-operator", "--role", "operator", "--namespace", "shop"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    as_operator = dict(env, PYSTOL_TOKEN=secret)
    run = subprocess.run([sys.executable, "-m", "pystol_api.cli", "run", "pod-kill", "-n",
                          "payments", "-l", "app=web", "--dry-run", "--output", "json"],
                         env=as_operator, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "payments" in run.stderr and "403" not in run.stdout
    audit = subprocess.run([sys.executable, "-m", "pystol_api.cli", "audit", "--actor",
                            "cli-operator", "--output", "json"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert audit.returncode == 0, audit.stderr
    records = json.loads(audit.stdout)
    items = records["items"] if isinstance(records, dict) else records
    assert any(item["operation"] == "job.submit" and item["outcome"] == "refused"
               for item in items), items


@pytest.mark.parametrize("edit", ["namespace", "image", "no-grant"])
def test_a_record_edited_in_redis_is_refused_by_the_worker(stack: Stack, edit: str) -> None:
    """Someone who can write Redis widens a stored job before a worker takes it (another
    tenant's namespace, their own image, or a record with no grant at all) and queues it
    as any Redis client can; the worker refuses it before it touches the cluster."""
    settings = Settings(redis_url=stack.redis.url)
    store = JobStore(stack.redis.client())
    operator = Identity(Actor(kind=ActorKind.TOKEN, name="shop-op", role=Role.OPERATOR,
                              namespaces=["shop"]),
                        RoleAuthority(Role.OPERATOR, frozenset({"shop"})))
    spec = JobSpec.model_validate({
        "action": "pod-failure", "target": {"namespaces": ["shop"],
                                            "label_selector": "app=web"},
        "duration": "2s"})
    registry = default_registry()
    action, params = validate_job(spec, registry, settings)
    grant = grant_for(spec, action, params, operator)
    record, _ = store.create(spec, Source.API, operator.actor.submitter, actor=operator.actor,
                             grant=lambda job_id: sealed(grant, job_id, spec,
                                                         settings.signing_key_bytes))
    key = f"pystol:job:{record.id}"
    stored = json.loads(stack.redis.client().get(key))
    if edit == "namespace":
        stored["spec"]["target"]["namespaces"] = ["payments"]
        stored["grant"]["namespaces"] = ["payments"]
    elif edit == "image":
        stored["spec"]["params"] = {"image": "attacker/shell:1"}
    else:
        stored["grant"] = None
    stack.redis.client().set(key, json.dumps(stored))
    core, _ = stack.kube_clients()
    before = {pod.metadata.uid: [c.image for c in pod.spec.containers]
              for ns in ("shop", "payments") for pod in core.list_namespaced_pod(ns).items}

    CeleryJobQueue(settings).send(record.id)
    done = stack.wait_for_job(record.id)

    assert done["status"] == "failed", done
    assert "grant" in done["reason"], done["reason"]
    after = {pod.metadata.uid: [c.image for c in pod.spec.containers]
             for ns in ("shop", "payments") for pod in core.list_namespaced_pod(ns).items}
    assert after == before
