"""node-drain on pystol-sim: cordon + evictions while held, nodes restored and workloads healed.

The `stack` fixture is module-scoped, so this module has a simulated cluster of its own;
every test leaves the nodes as it found them and waits for the workloads to be whole.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from typing import Any

import pytest
from kubernetes import client, config

from tests.integration.conftest import Stack
from tests.support.kube_helpers import wait_for as poll_until
from tests.support.recovery_truth import assert_matches_truth, whole_again_at

WORKERS = ["worker-a", "worker-b", "worker-c"]


def apis(stack: Stack) -> tuple[client.CoreV1Api, client.AppsV1Api, client.PolicyV1Api]:
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client), \
        client.PolicyV1Api(api_client)


def node_state(stack: Stack) -> dict[str, Any]:
    core, _, _ = apis(stack)
    return {n.metadata.name: (n.spec.unschedulable, n.metadata.annotations, n.metadata.labels,
                              [t.to_dict() for t in n.spec.taints or ()])
            for n in core.list_node().items}


def unschedulable(stack: Stack, name: str) -> bool:
    core, _, _ = apis(stack)
    return bool(core.read_node(name).spec.unschedulable)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


def pods_on(stack: Stack, node: str) -> list[Any]:
    core, _, _ = apis(stack)
    return [p for p in core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}").items if not p.metadata.deletion_timestamp]


def owner_kind(pod: Any) -> str | None:
    return next((ref.kind for ref in pod.metadata.owner_references or () if ref.controller),
                None)


# Polls as the shared helper does, with this file's longer default patience.
wait_for = partial(poll_until, timeout=30.0)


def workloads_whole(stack: Stack) -> bool:
    _, apps, _ = apis(stack)
    for item in [*apps.list_deployment_for_all_namespaces().items,
                 *apps.list_stateful_set_for_all_namespaces().items]:
        if (item.status.ready_replicas or 0) != item.spec.replicas:
            return False
    return True


def pod_reasons(stack: Stack, namespace: str, name: str) -> list[str]:
    core, _, _ = apis(stack)
    return [e.reason for e in core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items]


def node_reasons(stack: Stack, name: str) -> list[str]:
    core, _, _ = apis(stack)
    return [e.reason for e in core.list_event_for_all_namespaces(
        field_selector=f"involvedObject.name={name}").items if e.involved_object.kind == "Node"]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def drain(target: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": "node-drain", "target": target, "duration": "1s", **extra}


def namespace_with(stack: Stack, name: str, replicas: int, node: str | None = None,
                   min_available: int | None = None) -> str:
    """A namespace of the test's own with deployment `name`, optionally pinned and guarded."""
    core, apps, policy = apis(stack)
    namespace = f"nd-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": name}
    pod_spec: dict[str, Any] = {"containers": [{"name": "app", "image": "pause"}]}
    if node:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": {
                     "sim.pystol.org/start-seconds": "0.5",
                     "sim.pystol.org/ready-seconds": "1"}}, "spec": pod_spec}}})
    if min_available is not None:
        policy.create_namespaced_pod_disruption_budget(namespace, {
            "metadata": {"name": name},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels}}})
    wait_for(lambda: workloads_whole(stack))
    return namespace


@pytest.fixture(autouse=True)
def cluster_restored(stack: Stack) -> Iterator[None]:
    wait_for(lambda: workloads_whole(stack))
    before = node_state(stack)
    yield
    assert node_state(stack) == before
    wait_for(lambda: workloads_whole(stack))


def test_drain_evicts_holds_uncordons_and_measures_recovery(stack: Stack) -> None:
    core, _, _ = apis(stack)
    namespace = f"nd-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    container = [{"name": "app", "image": "pause"}]
    # A bare pod (nothing would recreate it) and a mirror pod are left where they are.
    for name, notes in [("bare", {}), ("static", {"kubernetes.io/config.mirror": "x"})]:
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "annotations": notes},
            "spec": {"nodeName": "worker-a", "containers": container}})
    wait_for(lambda: all(ready(p) for p in core.list_namespaced_pod(namespace).items))
    on_node = pods_on(stack, "worker-a")
    daemon = {p.metadata.uid for p in on_node if owner_kind(p) == "DaemonSet"}
    expected = {(p.metadata.namespace, p.metadata.name) for p in on_node
                if owner_kind(p) not in (None, "DaemonSet")}
    assert daemon and expected
    before = node_state(stack)

    job = stack.submit(drain({"names": ["worker-a"]}, duration="2s"))
    wait_for(lambda: unschedulable(stack, "worker-a"))
    # While held: only the DaemonSet pod, the bare pod and the mirror pod are left.
    wait_for(lambda: {(p.metadata.namespace, p.metadata.name) for p in pods_on(
        stack, "worker-a")}.isdisjoint(expected))
    left = pods_on(stack, "worker-a")
    assert {p.metadata.uid for p in left if owner_kind(p) == "DaemonSet"} == daemon
    assert {p.metadata.name for p in left if p.metadata.namespace == namespace} == \
        {"bare", "static"}
    assert unschedulable(stack, "worker-a")
    assert stack.call("GET", f"/api/v1/jobs/{job['id']}").json()["status"] == "running"

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert node_state(stack) == before
    output = record["result"]["output"]
    assert {(e["namespace"], e["pod"]) for e in output["evicted"]} == expected
    assert output["not_evicted"] == []
    skipped = {e["pod"]: e["reason"] for e in output["skipped"]}
    assert "no controller" in skipped["bare"] and "mirror" in skipped["static"]
    assert any(reason == "DaemonSet pod" for reason in skipped.values())

    changes = record["result"]["changes"]
    [cordon] = [c for c in changes if c["target"]["kind"] == "Node"]
    assert cordon["action"] == "cordoned node worker-a" and cordon["reverted_at"]
    evictions = [c for c in changes if c["target"]["kind"] == "Pod"]
    assert {(c["target"]["namespace"], c["target"]["name"]) for c in evictions} == expected
    assert all(c["action"] == "evicted from node worker-a" for c in evictions)

    # Recovery of every workload that lost a pod, measured by watch.
    recovery = record["result"]["recovery"]
    workloads = {c["target"]["workload"]["name"] for c in evictions}
    assert {r["workload"]["name"] for r in recovery} == workloads
    assert all(r["recovered"] for r in recovery)
    # Each from its first pod's eviction (the sim's deletion stamp) to its last pod ready
    # again, per the sim's truth.
    truth = stack.sim.truth()
    by_uid = {p["uid"]: p for p in truth}
    for item in recovery:
        ref = item["workload"]
        evicted = [by_uid[c["target"]["uid"]] for c in evictions
                   if c["target"]["workload"] == ref]
        assert_matches_truth(item["recovery_seconds"], min(p["deleted"] for p in evicted),
                             whole_again_at(truth, ref["kind"], ref["namespace"], ref["name"]),
                             f"{ref['kind']}/{ref['namespace']}/{ref['name']}")
    assert record["metrics"]["recovery_seconds"] == max(r["recovery_seconds"] for r in recovery)
    wait_for(lambda: workloads_whole(stack))

    kinds = [e["kind"] for e in record["timeline"]]
    assert {"draining", "evicted", "injected", "holding", "reverted", "observing",
            "recovered"} <= set(kinds)
    assert kinds.index("holding") > max(i for i, k in enumerate(kinds) if k == "evicted")
    reasons = node_reasons(stack, "worker-a")
    assert "PystolChaos" in reasons and "PystolRevert" in reasons
    victim = evictions[0]["target"]
    assert "PystolChaos" in pod_reasons(stack, victim["namespace"], victim["name"])
    # The bare and mirror pods are still there, never evicted.
    assert {p.metadata.name for p in core.list_namespaced_pod(namespace).items} == \
        {"bare", "static"}


def test_a_pdb_that_never_allows_it_is_reported_and_the_cordon_still_held(
        stack: Stack) -> None:
    namespace = namespace_with(stack, "guarded", replicas=2, node="worker-b", min_available=2)
    guarded = {p.metadata.name for p in pods_on(stack, "worker-b")
               if p.metadata.namespace == namespace}
    assert len(guarded) == 2
    before = node_state(stack)
    job = stack.submit(drain({"names": ["worker-b"]}, duration="1s",
                             params={"eviction_timeout": "1s"}))
    wait_for(lambda: unschedulable(stack, "worker-b"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert node_state(stack) == before
    blocked = record["result"]["output"]["not_evicted"]
    assert {e["pod"] for e in blocked} == guarded
    assert all("disruption budget" in e["reason"] and e["namespace"] == namespace
               for e in blocked)
    kinds = [e["kind"] for e in record["timeline"]]
    assert "eviction-blocked" in kinds and "not-evicted" in kinds
    assert kinds.index("holding") > kinds.index("not-evicted")
    [cordon] = [c for c in record["result"]["changes"] if c["target"]["kind"] == "Node"]
    assert cordon["reverted_at"]
    assert guarded <= {p.metadata.name for p in pods_on(stack, "worker-b")}

    # Asked to, the job fails over it; the node is uncordoned all the same.
    wait_for(lambda: workloads_whole(stack))
    job = stack.submit(drain({"names": ["worker-b"]}, duration="0.5s",
                             params={"eviction_timeout": "0.5s",
                                     "fail_on_blocked_eviction": True}))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed", record
    assert "could not be evicted" in record["reason"]
    assert node_state(stack) == before


def test_min_available_evicts_fewer_and_recovery_is_observed_after_uncordon(
        stack: Stack) -> None:
    namespace = namespace_with(stack, "pinned", replicas=3, node="worker-c")
    before_uids = {p.metadata.uid for p in pods_on(stack, "worker-c")
                   if p.metadata.namespace == namespace}
    job = stack.submit(drain({"names": ["worker-c"], "min_available": 2}, duration="1s"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    output = record["result"]["output"]
    mine = [e for e in output["evicted"] if e["namespace"] == namespace]
    kept = [e for e in output["kept_for_min_available"] if e["namespace"] == namespace]
    assert len(mine) == 1 and len(kept) == 2
    assert "min-available" in [e["kind"] for e in record["timeline"]]
    # The evicted pod could only come back on worker-c: after the uncordon.
    [outcome] = [r for r in record["result"]["recovery"] if r["workload"]["namespace"]
                 == namespace]
    assert outcome["recovered"] and outcome["desired_replicas"] == 3
    injected = min(when(c["at"]) for c in record["result"]["changes"])
    reverted = next(when(c["reverted_at"]) for c in record["result"]["changes"]
                    if c["target"]["kind"] == "Node")
    assert when(outcome["recovered_at"]) > reverted > injected
    after = {p.metadata.uid for p in pods_on(stack, "worker-c")
             if p.metadata.namespace == namespace}
    assert len(after) == 3 and len(after & before_uids) == 2

    # A percent: 67% of 3 is 3 (rounded up, as a PodDisruptionBudget does): nothing goes.
    wait_for(lambda: workloads_whole(stack))
    job = stack.submit(drain({"names": ["worker-c"], "min_available": "67%"}, duration="0.5s"))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    output = record["result"]["output"]
    assert not [e for e in output["evicted"] if e["namespace"] == namespace]
    assert len([e for e in output["kept_for_min_available"]
                if e["namespace"] == namespace]) == 3


def test_original_pystol_inputs_preview_and_dry_run(stack: Stack) -> None:
    def preview(target: dict[str, Any]) -> dict[str, Any]:
        response = stack.call("POST", "/api/v1/preview", json=drain(target))
        assert response.status_code == 200, response.text
        return response.json()

    body = preview({"amount": 2})
    assert len(body["chosen"]) == 2 and {c["name"] for c in body["chosen"]} <= set(WORKERS)
    assert body["matched"] == 3  # the control-plane node is never a candidate
    body = preview({"names": ["worker-b"], "amount": 2})  # names take precedence
    assert [c["name"] for c in body["chosen"]] == ["worker-b"]

    before_nodes = node_state(stack)
    before_pods = {p.metadata.uid for node in WORKERS for p in pods_on(stack, node)}
    job = stack.submit(drain({"amount": 1}, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    [would] = record["result"]["output"]["would_affect"]
    assert would["kind"] == "Node" and would["name"] in WORKERS
    assert record["result"]["changes"] == []
    assert node_state(stack) == before_nodes
    assert {p.metadata.uid for node in WORKERS for p in pods_on(stack, node)} == before_pods


def test_cancel_mid_hold_uncordons_at_once(stack: Stack) -> None:
    before = node_state(stack)
    job = stack.submit(drain({"names": ["worker-a"]}, duration="60s"))
    wait_for(lambda: "holding" in [e["kind"] for e in stack.call(
        "GET", f"/api/v1/jobs/{job['id']}").json()["timeline"]])
    assert unschedulable(stack, "worker-a")
    asked = time.monotonic()
    assert stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    record = stack.wait_for_job(job["id"], timeout=10)
    assert time.monotonic() - asked < 5
    assert record["status"] == "aborted", record
    assert node_state(stack) == before
    [cordon] = [c for c in record["result"]["changes"] if c["target"]["kind"] == "Node"]
    assert cordon["reverted_at"]


def test_bad_input_is_refused_with_the_field(stack: Stack) -> None:
    for body, field in [
        (drain({"names": ["worker-a"]}, params={"eviction_timeout": "2h"}),
         "params.eviction_timeout"),
        (drain({"field_selector": "spec.unschedulable=false"}), "target.field_selector"),
        (drain({"names": ["worker-a"], "min_available": "150%"}), "target.min_available"),
        (drain({"amount": 0}), "target.amount"),
    ]:
        response = stack.call("POST", "/api/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        assert field in response.text
