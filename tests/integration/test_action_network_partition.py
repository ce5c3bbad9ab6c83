"""network-partition on pystol-sim: a NetworkPolicy while held, nothing of it afterwards.

The sim has no real network, so the fault is checked where Kubernetes keeps it: the
NetworkPolicy object (podSelector, policyTypes, rules) and the pods' labels.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Stack
from tests.support.kube_helpers import wait_for as poll_until

LABEL = "chaos.pystol.org/partition"


def apis(stack: Stack) -> tuple[client.CoreV1Api, client.AppsV1Api, client.NetworkingV1Api]:
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client), \
        client.NetworkingV1Api(api_client)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


# Polls as the shared helper does, with this file's longer default patience.
wait_for = partial(poll_until, timeout=20.0)


def make_workload(stack: Stack, replicas: int = 3) -> str:
    """A namespace of the test's own with deployment `svc` (app=svc, tier=backend)."""
    core, apps, _ = apis(stack)
    namespace = f"np-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "svc", "tier": "backend"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "svc"}},
                 "template": {"metadata": {"labels": labels, "annotations": {
                     "sim.pystol.org/start-seconds": "0.5",
                     "sim.pystol.org/ready-seconds": "1"}},
                     "spec": {"containers": [{"name": "app", "image": "pause"}]}}}})
    wait_for(lambda: len(pods(stack, namespace)) == replicas
             and all(ready(p) for p in pods(stack, namespace)))
    return namespace


def pods(stack: Stack, namespace: str) -> list[Any]:
    core, _, _ = apis(stack)
    return core.list_namespaced_pod(namespace, label_selector="app=svc").items


def pod_state(stack: Stack, namespace: str) -> dict[str, Any]:
    """What the partition may touch on the pods: which exist, their labels, node, readiness."""
    return {p.metadata.uid: (p.metadata.name, p.metadata.labels, p.spec.node_name, ready(p))
            for p in pods(stack, namespace)}


def policies(stack: Stack, namespace: str) -> list[Any]:
    _, _, net = apis(stack)
    return net.list_namespaced_network_policy(namespace).items


def partition(namespace: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "network-partition",
                            "target": {"namespaces": [namespace], "label_selector": "app=svc",
                                       "mode": "fixed", "value": 2},
                            "duration": "2s"}
    body.update(extra)
    return body


def running_policy(stack: Stack, namespace: str) -> Any:
    found = wait_for(lambda: policies(stack, namespace))
    assert len(found) == 1
    return found[0]


def test_chosen_pods_are_labelled_and_isolated_both_ways(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = pod_state(stack, namespace)
    job = stack.submit(partition(namespace))
    suffix = job["id"].rsplit("-", 1)[-1]

    policy = running_policy(stack, namespace)
    assert policy.metadata.name == f"pystol-partition-{suffix}"
    assert policy.spec.pod_selector.match_labels == {LABEL: job["id"]}
    assert policy.spec.pod_selector.match_expressions is None
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    assert not policy.spec.ingress and not policy.spec.egress  # deny all, both ways
    assert policy.metadata.labels["chaos.pystol.org/job"] == job["id"]

    def labelled_now() -> list[Any]:
        hit = [p for p in pods(stack, namespace)
               if (p.metadata.labels or {}).get(LABEL) == job["id"]]
        return hit if len(hit) == 2 else []
    labelled = wait_for(labelled_now)
    # The pods themselves are the same pods, still running; only the label was added.
    assert {p.metadata.uid for p in labelled} <= set(before)
    assert all(ready(p) for p in pods(stack, namespace))
    assert stack.call("GET", f"/api/v1/jobs/{job['id']}").json()["status"] == "running"

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert policies(stack, namespace) == []
    _, _, net = apis(stack)
    with pytest.raises(ApiException) as gone:
        net.read_namespaced_network_policy(policy.metadata.name, namespace)
    assert gone.value.status == 404
    assert pod_state(stack, namespace) == before

    changes = record["result"]["changes"]
    assert len(changes) == 3 and all(c["reverted_at"] and not c["error"] for c in changes)
    kinds = sorted(c["target"]["kind"] for c in changes)
    assert kinds == ["NetworkPolicy", "Pod", "Pod"]
    assert {c["target"]["uid"] for c in changes if c["target"]["kind"] == "Pod"} == \
        {p.metadata.uid for p in labelled}
    assert record["metrics"]["targets_selected"] == 2
    assert record["metrics"]["injected_at"] and record["metrics"]["reverted_at"]
    assert {"partitioning", "injected", "holding", "reverted"} <= \
        {e["kind"] for e in record["timeline"]}
    on_policy = stack.event_reasons(namespace, policy.metadata.name)
    assert "PystolChaos" in on_policy and "PystolRevert" in on_policy
    for pod in labelled:
        on_pod = stack.event_reasons(namespace, pod.metadata.name)
        assert "PystolChaos" in on_pod and "PystolRevert" in on_pod


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_mode_all_uses_the_job_selector_and_allows_peers(stack: Stack, direction: str) -> None:
    namespace = make_workload(stack)
    before = pod_state(stack, namespace)
    allow = [{"label_selector": "app=client"},
             {"namespace": "monitoring", "label_selector": "app in (prometheus),!canary"}]
    job = stack.submit(partition(namespace, target={
        "namespaces": [namespace], "label_selector": "app=svc,tier=backend", "mode": "all"},
        params={"direction": direction, "allow": allow}))
    policy = running_policy(stack, namespace)
    spec = policy.to_dict()["spec"]
    assert spec["pod_selector"] == {"match_labels": {"app": "svc", "tier": "backend"},
                                    "match_expressions": None}
    peers = [
        {"pod_selector": {"match_labels": {"app": "client"}, "match_expressions": None},
         "namespace_selector": None, "ip_block": None},
        {"pod_selector": {"match_labels": None, "match_expressions": [
            {"key": "app", "operator": "In", "values": ["prometheus"]},
            {"key": "canary", "operator": "DoesNotExist", "values": None}]},
         "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": "monitoring"},
                                "match_expressions": None},
         "ip_block": None}]
    if direction == "ingress":
        assert spec["policy_types"] == ["Ingress"] and spec["egress"] is None
        assert spec["ingress"] == [{"_from": peers, "ports": None}]
    else:
        assert spec["policy_types"] == ["Egress"] and spec["ingress"] is None
        assert spec["egress"] == [{"to": peers, "ports": None}]
    # The job's own selector picks the pods: none of them is labelled.
    assert not any(LABEL in (p.metadata.labels or {}) for p in pods(stack, namespace))

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert policies(stack, namespace) == []
    assert pod_state(stack, namespace) == before
    [change] = record["result"]["changes"]
    assert change["target"]["kind"] == "NetworkPolicy" and change["reverted_at"]
    assert record["metrics"]["targets_selected"] == 3


def test_min_available_leaves_pods_out_so_the_chosen_ones_are_labelled(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = pod_state(stack, namespace)
    target = {"namespaces": [namespace], "label_selector": "app=svc", "mode": "all",
              "min_available": 2}
    preview = stack.call("POST", "/api/v1/preview", json=partition(namespace, target=target))
    assert preview.status_code == 200, preview.text
    assert len(preview.json()["chosen"]) == 1
    job = stack.submit(partition(namespace, target=target, duration="1s"))
    policy = running_policy(stack, namespace)
    # mode all, but not every matching pod: the selector would hit too many, so a label.
    assert policy.spec.pod_selector.match_labels == {LABEL: job["id"]}
    labelled = [p for p in pods(stack, namespace) if LABEL in (p.metadata.labels or {})]
    assert len(labelled) == 1
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert policies(stack, namespace) == [] and pod_state(stack, namespace) == before


def test_dry_run_and_preview_change_nothing(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = pod_state(stack, namespace)
    response = stack.call("POST", "/api/v1/preview", json=partition(namespace))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched"] == 3 and len(body["chosen"]) == 2
    assert {c["uid"] for c in body["chosen"]} <= set(before)
    job = stack.submit(partition(namespace, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    assert len(record["result"]["output"]["would_affect"]) == 2
    assert record["result"]["changes"] == []
    assert policies(stack, namespace) == [] and pod_state(stack, namespace) == before


def test_cancel_mid_hold_removes_policy_and_labels_at_once(stack: Stack) -> None:
    namespace = make_workload(stack)
    before = pod_state(stack, namespace)
    job = stack.submit(partition(namespace, duration="60s"))
    running_policy(stack, namespace)
    wait_for(lambda: "holding" in [e["kind"] for e in stack.call(
        "GET", f"/api/v1/jobs/{job['id']}").json()["timeline"]])
    asked = time.monotonic()
    assert stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    record = stack.wait_for_job(job["id"], timeout=10)
    assert time.monotonic() - asked < 5
    assert record["status"] == "aborted", record
    assert policies(stack, namespace) == []
    assert pod_state(stack, namespace) == before
    assert all(c["reverted_at"] for c in record["result"]["changes"])


def test_bad_input_is_refused_with_the_field(stack: Stack) -> None:
    namespace = "shop"
    no_duration = partition(namespace)
    del no_duration["duration"]
    for body, field in [
        (no_duration, "duration"),
        (partition(namespace, params={"direction": "sideways"}), "params.direction"),
        (partition(namespace, params={"allow": [{"label_selector": "=x"}]}),
         "params.allow.0.label_selector"),
        (partition(namespace, params={"allow": [{"namespace": "Bad_NS",
                                                 "label_selector": ""}]}),
         "params.allow.0.namespace"),
    ]:
        response = stack.call("POST", "/api/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        assert field in response.text
