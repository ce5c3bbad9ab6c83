"""Submit over HTTP → Redis → Celery worker → simulated cluster → results back."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from tests.integration.conftest import Stack

START_SECONDS, READY_SECONDS = 2.0, 3.0  # simulated; the sim runs 10x faster




def make_workload(stack: Stack, replicas: int = 3, start: float = START_SECONDS,
                  ready: float = READY_SECONDS) -> tuple[str, str]:
    """A namespace of the test's own with one deployment whose timings the test knows."""
    core, apps = stack.kube_clients()
    namespace = f"lab-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "timed"}
    annotations = {"sim.pystol.org/start-seconds": str(start),
                   "sim.pystol.org/ready-seconds": str(ready)}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "timed"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": annotations},
                              "spec": {"containers": [{"name": "app", "image": "pause"}]}}}})
    deadline = time.monotonic() + 30
    while (apps.read_namespaced_deployment(namespace=namespace, name="timed").status
           .ready_replicas or 0) < replicas:
        assert time.monotonic() < deadline, "deployment never became ready"
        time.sleep(0.1)
    return namespace, "app=timed"


def pods(stack: Stack, namespace: str, selector: str) -> list[Any]:
    core, _ = stack.kube_clients()
    return core.list_namespaced_pod(namespace, label_selector=selector).items


def pod_kill(namespace: str, selector: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"action": "pod-kill",
                            "target": {"namespaces": [namespace], "label_selector": selector,
                                       "mode": "fixed", "value": 1}}
    for key, value in extra.items():
        if key == "target_extra":
            spec["target"].update(value)
        elif key in ("mode", "value"):
            spec["target"][key] = value
        else:
            spec[key] = value
    return spec


def test_pod_kill_kills_heals_and_measures_recovery(stack: Stack) -> None:
    namespace, selector = make_workload(stack)
    before = {p.metadata.uid: p.metadata.name for p in pods(stack, namespace, selector)}
    accepted = stack.call("POST", "/api/v1/jobs", json=pod_kill(namespace, selector))
    assert accepted.status_code == 202
    job = accepted.json()
    assert accepted.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["source"] == "api"

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    killed = record["result"]["changes"]
    assert len(killed) == 1 and killed[0]["action"] == "deleted"
    victim = killed[0]["target"]
    assert victim["uid"] in before
    assert victim["workload"] == {"kind": "Deployment", "namespace": namespace, "name": "timed"}

    after = pods(stack, namespace, selector)
    assert victim["uid"] not in {p.metadata.uid for p in after}
    assert len(after) == 3
    assert all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)
               for p in after)

    # recovery_seconds: first kill → all 3 ready again, against the sim's ground truth.
    measured = record["result"]["recovery"][0]["recovery_seconds"]
    assert record["metrics"]["recovery_seconds"] == measured
    truth = {p["uid"]: p for p in stack.sim.truth(namespace)}
    killed_truth = truth[victim["uid"]]
    replacement = next(p for p in truth.values() if p["uid"] not in before)
    true_recovery = replacement["ready"] - killed_truth["deleted"]
    expected = (START_SECONDS + READY_SECONDS) / stack.sim.speed
    assert abs(true_recovery - expected) < 0.15
    assert abs(measured - true_recovery) < 0.1, (measured, true_recovery)

    metrics = record["metrics"]
    assert metrics["targets_selected"] == 1 and metrics["targets_affected"] == 1
    assert metrics["injected_at"] is not None
    kinds = [event["kind"] for event in record["timeline"]]
    assert kinds[:3] == ["queued", "started", "selected"]
    assert {"injected", "recovered", "succeeded"} <= set(kinds)


def test_fixed_percent_and_all_modes(stack: Stack) -> None:
    namespace, selector = make_workload(stack, replicas=4, start=0.5, ready=0.5)
    job = stack.submit(pod_kill(namespace, selector, mode="fixed-percent", value=50))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded"
    assert record["metrics"]["targets_affected"] == 2
    job = stack.submit(pod_kill(namespace, selector, mode="all", value=None))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and record["metrics"]["targets_affected"] == 4


def test_dry_run_changes_nothing(stack: Stack) -> None:
    namespace, selector = make_workload(stack)
    before = sorted(p.metadata.uid for p in pods(stack, namespace, selector))
    job = stack.submit(pod_kill(namespace, selector, mode="fixed", value=2, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded"
    assert "dry run" in record["reason"]
    would = record["result"]["output"]["would_affect"]
    assert len(would) == 2 and {w["uid"] for w in would} <= set(before)
    assert record["result"]["changes"] == []
    assert sorted(p.metadata.uid for p in pods(stack, namespace, selector)) == before


def test_preview_answers_at_once(stack: Stack) -> None:
    namespace, selector = make_workload(stack)
    response = stack.call("POST", "/api/v1/preview",
                          json=pod_kill(namespace, selector, mode="fixed", value=2))
    assert response.status_code == 200, response.text
    body = response.json()
    names = {p.metadata.name for p in pods(stack, namespace, selector)}
    assert body["matched"] == 3
    assert len(body["chosen"]) == 2 and {c["name"] for c in body["chosen"]} <= names


def test_idempotency_key_returns_the_same_job(stack: Stack) -> None:
    namespace, selector = make_workload(stack)
    spec = pod_kill(namespace, selector, idempotency_key=f"key-{uuid.uuid4().hex}")
    first = stack.submit(spec)
    again = stack.call("POST", "/api/v1/jobs", json=spec)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    stack.wait_for_job(first["id"])
    listed = stack.call("GET", f"/api/v1/jobs?namespace={namespace}").json()["items"]
    assert [job["id"] for job in listed] == [first["id"]]


def test_cancel_queued_and_abort_running(stack: Stack) -> None:
    # Two long jobs on two workloads occupy both worker slots, so a third stays queued.
    workloads = [make_workload(stack, replicas=3, start=0.5, ready=0.5) for _ in range(2)]
    running = [stack.submit(pod_kill(namespace, selector, mode="fixed", value=3,
                                     duration="60s", params={"distribution": "uniform"}))
               for namespace, selector in workloads]
    namespace, selector = workloads[0]
    for job in running:
        stack.wait_for_job(job["id"], until=("running",))
    deadline = time.monotonic() + 10
    while not all(any(e["kind"] == "injected" for e in stack.call(
            "GET", f"/api/v1/jobs/{job['id']}").json()["timeline"]) for job in running):
        assert time.monotonic() < deadline, "the long jobs never made their first kill"
        time.sleep(0.1)
    queued = stack.submit(pod_kill(namespace, selector))
    time.sleep(0.3)
    assert stack.call("GET", f"/api/v1/jobs/{queued['id']}").json()["status"] == "queued"

    response = stack.call("POST", f"/api/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert stack.call("POST", f"/api/v1/jobs/{queued['id']}/cancel").status_code == 409

    for job in running:
        response = stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202
    for job in running:
        record = stack.wait_for_job(job["id"], timeout=10)
        assert record["status"] == "aborted"
        assert "cancelled by" in record["reason"]
        # The uniform spread had time for its first kill only (next one at 20 s).
        assert record["metrics"]["targets_affected"] == 1
    # The cancelled job never ran: still exactly one terminal state, no start event.
    record = stack.wait_for_job(queued["id"])
    assert record["status"] == "cancelled"
    assert "started" not in [event["kind"] for event in record["timeline"]]


def test_workload_that_never_recovers_fails_with_reason(stack: Stack) -> None:
    core, apps = stack.kube_clients()
    namespace = f"lab-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    pin = f"pin-{namespace}"
    core.patch_node("worker-c", {"metadata": {"labels": {pin: "yes"}}})
    labels = {"app": "pinned"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "pinned"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"nodeSelector": {pin: "yes"},
                                       "containers": [{"name": "app", "image": "pause"}]}}}})
    deadline = time.monotonic() + 30
    while (apps.read_namespaced_deployment("pinned", namespace).status.ready_replicas or 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The only node the pods may run on loses its label: a killed pod cannot come back.
    core.patch_node("worker-c", {"metadata": {"labels": {pin: None}}})
    job = stack.submit(pod_kill(namespace, "app=pinned", recovery_timeout="1s",
                                params={"grace_period_seconds": 0}))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed"
    assert "did not recover within 1s (1/2 ready)" in record["reason"]
    assert record["result"]["recovery"][0]["recovered"] is False
    assert record["metrics"]["targets_affected"] == 1


def test_no_matching_pods_fails_clearly(stack: Stack) -> None:
    namespace, _ = make_workload(stack, replicas=1, start=0.5, ready=0.5)
    job = stack.submit(pod_kill(namespace, "app=nothing-here"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed" and record["reason"].startswith("no targets")


@pytest.mark.parametrize(("spec", "loc"), [
    ({"action": "no-such", "target": {"namespaces": ["shop"]}}, "action"),
    ({"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app in (x"}},
     "target.label_selector"),
    ({"action": "pod-kill", "target": {"namespaces": ["shop"], "mode": "fixed"}}, "target.value"),
    ({"action": "pod-kill", "target": {"namespaces": ["kube-system"]}}, "target.namespaces[0]"),
    ({"action": "pod-kill", "target": {"namespaces": ["shop"]}, "params": {"bogus": 1}},
     "params.bogus"),
    ({"action": "pod-kill", "target": {"namespaces": ["shop"]}, "dry_run": "maybe"}, "dry_run"),
])
def test_bad_jobs_are_problem_json(stack: Stack, spec: dict[str, Any], loc: str) -> None:
    response = stack.call("POST", "/api/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert any(error["loc"] == loc for error in body["errors"]), body


def test_auth_and_oversized_body(stack: Stack) -> None:
    assert stack.call("GET", "/api/v1/jobs", token="wrong").status_code == 401
    response = requests.get(stack.url + "/api/v1/jobs", timeout=10)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/problem+json")
    huge = {"action": "pod-kill", "target": {"namespaces": ["shop"]},
            "params": {"x": "y" * 200_000}}
    assert stack.call("POST", "/api/v1/jobs", json=huge).status_code == 413
    assert stack.call("GET", "/readyz").status_code == 200
