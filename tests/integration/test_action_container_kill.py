"""container-kill on pystol-sim: containers restart in place, and their return is timed."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from tests.integration.conftest import Stack
from tests.support.kube_helpers import wait_for as poll_until
from tests.support.recovery_truth import assert_matches_truth, whole_again_at

READY_SECONDS = 2.0  # simulated; the sim runs 10x faster


def make_workload(stack: Stack, replicas: int = 3) -> str:
    """A namespace of the test's own with a two-container deployment `svc` (app=svc)."""
    core, apps = stack.kube_clients()
    namespace = f"ck-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "svc"}
    annotations = {"sim.pystol.org/start-seconds": "0.5",
                   "sim.pystol.org/ready-seconds": str(READY_SECONDS)}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": annotations},
                              "spec": {"containers": [{"name": "app", "image": "lab/app:1"},
                                                      {"name": "sidecar",
                                                       "image": "lab/proxy:1"}]}}}})
    wait_for(lambda: len(pods(stack, namespace)) == replicas
             and all(ready(p) for p in pods(stack, namespace)), timeout=30)
    return namespace


def pods(stack: Stack, namespace: str) -> list[Any]:
    core, _ = stack.kube_clients()
    return core.list_namespaced_pod(namespace, label_selector="app=svc").items


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


def restarts(stack: Stack, namespace: str) -> dict[str, dict[str, int]]:
    return {p.metadata.uid: {cs.name: cs.restart_count for cs in p.status.container_statuses}
            for p in pods(stack, namespace)}


def snapshot(stack: Stack, namespace: str) -> dict[str, Any]:
    """What container-kill must leave as it was: the same pods, where they were, ready."""
    return {p.metadata.uid: (p.metadata.name, p.spec.node_name, p.status.pod_ip, ready(p))
            for p in pods(stack, namespace)}


# Polls as the shared helper does, with this file's longer default patience.
wait_for = partial(poll_until, timeout=20.0)


def spec(namespace: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "container-kill",
                            "target": {"namespaces": [namespace], "label_selector": "app=svc",
                                       "mode": "fixed", "value": 2}}
    body.update(extra)
    return body


def test_killed_containers_restart_in_place_and_are_timed(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = snapshot(stack, namespace)
    counts_before = restarts(stack, namespace)
    job = stack.submit(spec(namespace))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", (record["reason"], record["error"])

    # Same pods on the same nodes with the same IPs, all ready: only restart counts moved.
    assert snapshot(stack, namespace) == before
    changes = record["result"]["changes"]
    killed = {c["target"]["uid"] for c in changes}
    assert len(killed) == 2 and killed <= set(before)
    counts_after = restarts(stack, namespace)
    for uid, counts in counts_before.items():
        expected = {"app": counts["app"] + 1, "sidecar": counts["sidecar"]} \
            if uid in killed else counts
        assert counts_after[uid] == expected
    for change in changes:  # nothing to revert: no journal entry, no reverted_at
        assert change["reverted_at"] is None
        assert change["action"].startswith("killed container app of pod")
        assert change["target"]["workload"] == {"kind": "Deployment", "namespace": namespace,
                                                "name": "svc"}
    assert stack.redis.client().hlen("pystol:journal") == 0

    truth = {p["uid"]: p for p in stack.sim.truth(namespace)}
    entries = record["result"]["output"]["pods"]
    assert {e["uid"] for e in entries} == killed
    for entry in entries:
        assert entry["container"] == "app" and entry["signal"] == "SIGTERM"
        assert entry["exit_code"] == 0 and entry["error"] is None
        assert entry["restart_count_before"] == counts_before[entry["uid"]]["app"]
        assert entry["restart_count_after"] == entry["restart_count_before"] + 1
        true_seconds = truth[entry["uid"]]["ready"] - truth[entry["uid"]]["restarts"][-1]
        # the sim's own timer (its event loop may run late on a loaded machine)
        assert abs(true_seconds - READY_SECONDS / stack.sim.speed) < 0.3
        assert abs(entry["ready_again_seconds"] - true_seconds) < 0.3, (entry, true_seconds)
    [recovery] = record["result"]["recovery"]
    assert recovery["recovered"] and recovery["desired_replicas"] == 3
    assert recovery["ready_replicas"] == 3
    # The workload's: from the first container's death to the last pod ready again.
    assert_matches_truth(recovery["recovery_seconds"],
                         min(truth[uid]["restarts"][-1] for uid in killed),
                         whole_again_at(list(truth.values()), "Deployment", namespace, "svc"),
                         "container-kill")
    assert record["metrics"]["recovery_seconds"] == recovery["recovery_seconds"]
    assert record["metrics"]["targets_affected"] == 2
    kinds = [event["kind"] for event in record["timeline"]]
    assert kinds.count("injected") == 2 and kinds.count("recovered") == 2
    core, _ = stack.kube_clients()
    for change in changes:
        events = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={change['target']['name']}").items
        assert "PystolChaos" in {event.reason for event in events}


def test_named_container_and_signal(stack: Stack) -> None:
    namespace = make_workload(stack, replicas=2)
    counts_before = restarts(stack, namespace)
    job = stack.submit(spec(namespace, target={"namespaces": [namespace],
                                               "label_selector": "app=svc", "mode": "all"},
                            params={"container": "sidecar", "signal": "SIGKILL"}))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", (record["reason"], record["error"])
    for pod in pods(stack, namespace):
        counts = {cs.name: cs.restart_count for cs in pod.status.container_statuses}
        assert counts == {"app": counts_before[pod.metadata.uid]["app"],
                          "sidecar": counts_before[pod.metadata.uid]["sidecar"] + 1}
        sidecar = next(cs for cs in pod.status.container_statuses if cs.name == "sidecar")
        assert sidecar.last_state.terminated.exit_code == 137  # SIGKILL
    assert all(e["container"] == "sidecar" for e in record["result"]["output"]["pods"])


def test_a_container_that_survives_its_signal_fails_the_job(stack: Stack) -> None:
    namespace = make_workload(stack, replicas=2)
    counts_before = restarts(stack, namespace)
    # SIGCONT: the kill goes through (exit 0), but the process lives on and never restarts.
    job = stack.submit(spec(namespace, params={"signal": "SIGCONT"}, recovery_timeout="1s"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed"
    assert "did not restart within 1s of the kill (restart count still 0)" in record["reason"]
    assert restarts(stack, namespace) == counts_before


def test_a_command_is_refused_and_nothing_runs(stack: Stack) -> None:
    """The confused-deputy attack: a job that wants to run its own command in another
    workload's container (here, to read its service-account token back) is refused at
    the door, whoever sends it, and no exec happens."""
    namespace = make_workload(stack, replicas=2)
    counts_before = restarts(stack, namespace)
    steal = ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token >&2; exit 7"]
    response = stack.call("POST", "/api/v1/jobs", json=spec(namespace,
                                                            params={"command": steal}))
    assert response.status_code == 422, response.text
    assert "params.command" in [error["loc"] for error in response.json()["errors"]]
    assert restarts(stack, namespace) == counts_before
    disallowed = stack.call("POST", "/api/v1/jobs",
                            json=spec(namespace, params={"signal": "SIGSEGV"}))
    assert disallowed.status_code == 422
    assert "params.signal" in [error["loc"] for error in disallowed.json()["errors"]]


def test_dry_run_preview_and_exclusions(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = snapshot(stack, namespace)
    counts_before = restarts(stack, namespace)
    response = stack.call("POST", "/api/v1/preview", json=spec(namespace))
    assert response.status_code == 200, response.text
    assert response.json()["matched"] == 3 and len(response.json()["chosen"]) == 2

    job = stack.submit(spec(namespace, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    assert len(record["result"]["output"]["would_affect"]) == 2
    assert snapshot(stack, namespace) == before and restarts(stack, namespace) == counts_before

    body = stack.call("POST", "/api/v1/preview",
                      json=spec(namespace, params={"container": "db"})).json()
    assert body["chosen"] == []
    assert any("has no container named db" in reason for reason in body["excluded"])


def test_takes_the_no_overlap_locks(stack: Stack) -> None:
    namespace = make_workload(stack, replicas=2)
    holder = stack.submit({"action": "pod-failure",
                           "target": {"namespaces": [namespace], "label_selector": "app=svc"},
                           "duration": "30s"})
    wait_for(lambda: any(e["kind"] == "holding" for e in stack.call(
        "GET", f"/api/v1/jobs/{holder['id']}").json()["timeline"]))
    counts_before = restarts(stack, namespace)
    job = stack.submit(spec(namespace, on_conflict="reject"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed"
    assert "another running job holds a fault" in record["reason"]
    assert holder["id"] in record["reason"]
    assert restarts(stack, namespace) == counts_before
    assert stack.call("POST", f"/api/v1/jobs/{holder['id']}/cancel").status_code == 202
    assert stack.wait_for_job(holder["id"], timeout=10)["status"] == "aborted"
