"""pod-failure on pystol-sim: pause images while held, the original images back afterwards."""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from tests.integration.conftest import Stack
from tests.support.kube_helpers import wait_for as poll_until
from tests.support.recovery_truth import assert_matches_truth, unix, whole_again_at

PAUSE = "registry.k8s.io/pause:3.9"
IMAGES = {"app": "shop/app:1.4.2", "sidecar": "envoyproxy/envoy:v1.29"}


def make_workload(stack: Stack, replicas: int = 3) -> str:
    """A namespace of the test's own with a two-container deployment `svc` (app=svc)."""
    core, apps = stack.kube_clients()
    namespace = f"pf-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "svc"}
    annotations = {"sim.pystol.org/start-seconds": "0.5", "sim.pystol.org/ready-seconds": "1"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": annotations},
                              "spec": {"containers": [{"name": name, "image": image}
                                                      for name, image in IMAGES.items()]}}}})
    wait_all_ready(stack, namespace, replicas)
    return namespace


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


def pods(stack: Stack, namespace: str) -> list[Any]:
    core, _ = stack.kube_clients()
    return core.list_namespaced_pod(namespace, label_selector="app=svc").items


def wait_all_ready(stack: Stack, namespace: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        current = pods(stack, namespace)
        if len(current) == count and all(ready(p) for p in current):
            return
        assert time.monotonic() < deadline, "the workload never became ready"
        time.sleep(0.05)


def snapshot(stack: Stack, namespace: str) -> dict[str, Any]:
    """What pod-failure may touch: which pods exist, where, with which images, ready or not."""
    return {p.metadata.uid: (p.metadata.name, p.spec.node_name,
                             {c.name: c.image for c in p.spec.containers}, ready(p))
            for p in pods(stack, namespace)}


def images(pod: Any) -> dict[str, str]:
    return {c.name: c.image for c in pod.spec.containers}


def spec(namespace: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "pod-failure",
                            "target": {"namespaces": [namespace], "label_selector": "app=svc",
                                       "mode": "fixed", "value": 2},
                            "duration": "2s"}
    body.update(extra)
    return body


# Polls as the shared helper does, with this file's longer default patience.
wait_for = partial(poll_until, timeout=20.0)


def test_pods_run_pause_images_while_held_and_get_theirs_back(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = snapshot(stack, namespace)
    restarts_before = {p.metadata.uid: {cs.name: cs.restart_count
                                        for cs in p.status.container_statuses}
                       for p in pods(stack, namespace)}
    job = stack.submit(spec(namespace))

    # While held: two pods (same uids: nothing was deleted) run pause in both containers
    # and are not ready; the third is untouched.
    def faulty() -> list[Any]:
        hit = [p for p in pods(stack, namespace)
               if images(p) == {"app": PAUSE, "sidecar": PAUSE} and not ready(p)]
        return hit if len(hit) == 2 else []
    hit = wait_for(faulty)
    assert {p.metadata.uid for p in hit} <= set(before)
    others = [p for p in pods(stack, namespace) if p.metadata.uid not in
              {h.metadata.uid for h in hit}]
    assert len(others) == 1 and images(others[0]) == IMAGES and ready(others[0])
    time.sleep(0.5)  # still held: a pause image never becomes ready
    assert all(not ready(p) for p in pods(stack, namespace) if p.metadata.uid in
               {h.metadata.uid for h in hit})
    assert stack.call("GET", f"/api/v1/jobs/{job['id']}").json()["status"] == "running"

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", (record["reason"], record["error"])
    wait_all_ready(stack, namespace, 3)
    assert snapshot(stack, namespace) == before  # same pods, same nodes, same images, ready
    for pod in pods(stack, namespace):
        counts = {cs.name: cs.restart_count for cs in pod.status.container_statuses}
        if pod.metadata.uid in {h.metadata.uid for h in hit}:
            # restarted for the swap and again for the restore
            assert all(counts[name] >= restarts_before[pod.metadata.uid][name] + 2
                       for name in IMAGES)
        else:
            assert counts == restarts_before[pod.metadata.uid]

    changes = record["result"]["changes"]
    assert len(changes) == 2
    assert {c["target"]["uid"] for c in changes} == {h.metadata.uid for h in hit}
    for change in changes:
        assert change["reverted_at"] is not None and change["error"] is None
        assert change["revert"] == "undo restore-container-images"
        assert PAUSE in change["action"]
        assert change["target"]["workload"] == {"kind": "Deployment", "namespace": namespace,
                                                "name": "svc"}
    metrics = record["metrics"]
    assert metrics["targets_selected"] == 2 and metrics["targets_affected"] == 2
    assert metrics["injected_at"] and metrics["reverted_at"]
    [recovery] = record["result"]["recovery"]
    assert recovery["recovered"] and recovery["desired_replicas"] == 3
    # Counted from the revert (the job's own stamp) to the last restored pod ready again.
    assert metrics["reverted_at"] == max(c["reverted_at"] for c in changes)
    assert_matches_truth(recovery["recovery_seconds"], unix(metrics["reverted_at"]),
                         whole_again_at(stack.sim.truth(namespace), "Deployment", namespace,
                                        "svc"), "pod-failure")
    assert metrics["recovery_seconds"] == recovery["recovery_seconds"]
    output = record["result"]["output"]
    assert all(item["not_ready_while_held"] for item in output["pods"])
    assert all(item["original_images"] == IMAGES for item in output["pods"])
    assert output["lowest_ready_while_held"] == {f"Deployment/{namespace}/svc": 1}
    kinds = [event["kind"] for event in record["timeline"]]
    assert kinds.count("injected") == 2 and kinds.count("reverted") == 2
    assert {"holding", "observing", "recovered"} <= set(kinds)
    for pod in hit:
        assert {"PystolChaos", "PystolRevert"} <= set(stack.event_reasons(namespace,
                                                              pod.metadata.name))
    assert stack.redis.client().hlen("pystol:journal") == 0


def test_only_the_named_containers_are_swapped(stack: Stack) -> None:
    namespace = make_workload(stack, replicas=2)
    before = snapshot(stack, namespace)
    job = stack.submit(spec(namespace, target={"namespaces": [namespace],
                                               "label_selector": "app=svc", "mode": "all"},
                            params={"containers": ["sidecar"],
                                    "image": "registry.k8s.io/pause:3.9"}))
    wait_for(lambda: all(images(p) == {"app": IMAGES["app"],
                                       "sidecar": "registry.k8s.io/pause:3.9"}
                         and not ready(p) for p in pods(stack, namespace)))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", (record["reason"], record["error"])
    assert [item["original_images"] for item in record["result"]["output"]["pods"]] == \
        [{"sidecar": IMAGES["sidecar"]}] * 2
    wait_all_ready(stack, namespace, 2)
    assert snapshot(stack, namespace) == before


def test_an_image_the_policy_does_not_allow_is_refused_and_nothing_changes(stack: Stack
                                                                           ) -> None:
    """The confused-deputy attack: a job that would run its own image inside another
    workload's pods. The admin policy's `images` (default: the pause image only) refuses
    it before anything is stored."""
    namespace = make_workload(stack, replicas=2)
    before = snapshot(stack, namespace)
    response = stack.call("POST", "/api/v1/jobs", json=spec(
        namespace, params={"image": "attacker/shell:1"}))
    assert response.status_code == 403, response.text
    assert response.json()["errors"][0]["loc"] == "params.image"
    assert "attacker/shell:1" in response.json()["detail"]
    assert snapshot(stack, namespace) == before


def test_dry_run_and_preview_change_nothing(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = snapshot(stack, namespace)
    response = stack.call("POST", "/api/v1/preview", json=spec(namespace))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched"] == 3 and len(body["chosen"]) == 2
    assert {c["uid"] for c in body["chosen"]} <= set(before)

    job = stack.submit(spec(namespace, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    assert len(record["result"]["output"]["would_affect"]) == 2
    assert record["result"]["changes"] == []
    assert snapshot(stack, namespace) == before

    # A container name no pod has: every pod is left out, saying why.
    response = stack.call("POST", "/api/v1/preview",
                          json=spec(namespace, params={"containers": ["nope"]}))
    assert response.status_code == 200
    assert response.json()["chosen"] == []
    assert any("no container named nope" in reason for reason in response.json()["excluded"])


def test_cancel_mid_hold_reverts_at_once(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = snapshot(stack, namespace)
    job = stack.submit(spec(namespace, duration="60s"))
    wait_for(lambda: sum(images(p)["app"] == PAUSE for p in pods(stack, namespace)) == 2)
    cancelled = time.monotonic()
    response = stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    record = stack.wait_for_job(job["id"], timeout=10)
    assert record["status"] == "aborted", record
    assert time.monotonic() - cancelled < 5
    assert all(change["reverted_at"] for change in record["result"]["changes"])
    assert all(images(p) == IMAGES for p in pods(stack, namespace))
    wait_all_ready(stack, namespace, 3)
    assert snapshot(stack, namespace) == before
    assert stack.redis.client().hlen("pystol:journal") == 0


def test_a_duration_is_required(stack: Stack) -> None:
    body = spec("shop")
    del body["duration"]
    response = stack.call("POST", "/api/v1/jobs", json=body)
    assert response.status_code == 422
    assert "duration" in [error["loc"] for error in response.json()["errors"]]
    response = stack.call("POST", "/api/v1/jobs",
                          json=spec("shop", params={"containers": ["app", "app"]}))
    assert response.status_code == 422
    assert "params.containers" in [error["loc"] for error in response.json()["errors"]]
    catalogue = stack.call("GET", "/api/v1/actions").json()
    entry = next(a for a in catalogue["items"] if a["name"] == "pod-failure")
    assert entry["params_schema"]["properties"]["image"]["default"] == PAUSE
