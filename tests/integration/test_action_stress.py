"""cpu-stress and memory-stress on pystol-sim: the stress pod is there while held, gone after."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client, config

from tests.integration.conftest import Stack

JOB_LABEL = "chaos.pystol.org/job"


def core_api(stack: Stack) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(stack.sim.kubeconfig)))


def make_workload(stack: Stack, replicas: int = 3) -> tuple[str, str]:
    """A namespace of the test's own with one ready deployment."""
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    namespace = f"stress-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "busy"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "busy"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels,
                                           "annotations": {"sim.pystol.org/start-seconds": "0.5",
                                                           "sim.pystol.org/ready-seconds": "0.5"}},
                              "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
    deadline = time.monotonic() + 30
    while (apps.read_namespaced_deployment("busy", namespace).status.ready_replicas or 0) \
            < replicas:
        assert time.monotonic() < deadline, "deployment never became ready"
        time.sleep(0.1)
    return namespace, "app=busy"


def stress_spec(action: str, namespace: str, selector: str | None = None, **extra: Any
                ) -> dict[str, Any]:
    spec: dict[str, Any] = {"action": action,
                            "target": {"namespaces": [namespace], "mode": "fixed", "value": 2},
                            "duration": "2s"}
    if selector:
        spec["target"]["label_selector"] = selector
    for key, value in extra.items():
        if key in ("mode", "value"):
            spec["target"][key] = value
        else:
            spec[key] = value
    return spec


def wait_for_event(stack: Stack, job_id: str, kind: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = stack.call("GET", f"/api/v1/jobs/{job_id}").json()
        if kind in [event["kind"] for event in record["timeline"]]:
            return record
        assert record["status"] in ("queued", "running"), record
        assert time.monotonic() < deadline, f"no {kind} event: {record}"
        time.sleep(0.05)


def stress_pods(stack: Stack, job_id: str) -> list[Any]:
    return core_api(stack).list_pod_for_all_namespaces(
        label_selector=f"{JOB_LABEL}={job_id}").items


def wait_gone(stack: Stack, job_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while stress_pods(stack, job_id):
        assert time.monotonic() < deadline, "stress pods left behind"
        time.sleep(0.05)


def reasons(stack: Stack, namespace: str, name: str) -> list[str]:
    events = core_api(stack).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return [event.reason for event in events if (event.source and event.source.component
                                                  == "pystol") or event.reason.startswith("Pys")]


def pod_state(stack: Stack, namespace: str, selector: str) -> dict[str, tuple[str, str]]:
    return {p.metadata.uid: (p.metadata.name, p.spec.node_name)
            for p in core_api(stack).list_namespaced_pod(namespace,
                                                         label_selector=selector).items}


def test_cpu_stress_runs_next_to_each_selected_pod_and_is_removed(stack: Stack) -> None:
    namespace, selector = make_workload(stack)
    before = pod_state(stack, namespace, selector)
    job = stack.submit(stress_spec("cpu-stress", namespace, selector, duration="3s",
                                   params={"workers": 2, "load": 40}))
    record = wait_for_event(stack, job["id"], "holding")
    targets = {t["name"]: t for t in record["targets"]}
    assert len(targets) == 2

    held = stress_pods(stack, job["id"])
    assert len(held) == 2
    placed = {}
    for pod in held:
        assert pod.metadata.namespace == namespace
        assert pod.metadata.labels["app.kubernetes.io/managed-by"] == "pystol"
        assert pod.metadata.labels[JOB_LABEL] == job["id"]
        assert pod.spec.restart_policy == "Never"
        container = pod.spec.containers[0]
        assert container.image == "ghcr.io/colinianking/stress-ng:latest"
        assert container.args[:4] == ["--cpu", "2", "--cpu-load", "40"]
        assert "--timeout" in container.args
        assert container.resources.limits["cpu"] == "800m"
        target_name = pod.metadata.annotations["chaos.pystol.org/target"].split("/")[-1]
        placed[target_name] = pod.spec.node_name
    # Each stress pod sits on the node of the pod it was started for.
    assert placed == {name: target["node"] for name, target in targets.items()}

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    wait_gone(stack, job["id"])
    assert pod_state(stack, namespace, selector) == before  # the targets were not touched

    changes = record["result"]["changes"]
    assert len(changes) == 2
    assert all(change["reverted_at"] and change["revert"] == "undo delete-stress-pod"
               for change in changes)
    assert {c["target"]["workload"]["name"] for c in changes} == {"busy"}
    assert record["metrics"]["targets_affected"] == 2
    output = {p["name"]: p for p in record["result"]["output"]["stress_pods"]}
    assert set(output) == {p.metadata.name for p in held}
    for name in targets:
        assert reasons(stack, namespace, name).count("PystolChaos") == 1
        assert reasons(stack, namespace, name).count("PystolRevert") == 1
    kinds = [event["kind"] for event in record["timeline"]]
    assert kinds.count("injected") == 2 and kinds.count("reverted") == 2


def test_memory_stress_pinned_to_a_tainted_node(stack: Stack) -> None:
    core = core_api(stack)
    namespace = f"stress-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    # Control-plane nodes are never chosen under the default admin policy:
    refused = stack.submit(stress_spec("memory-stress", namespace, mode="one", value=None,
                                       params={"node": "control-plane",
                                               "namespace": namespace, "bytes": "64Mi"}))
    refused = stack.wait_for_job(refused["id"])
    assert refused["status"] == "failed"
    assert "control-plane node" in str(refused["result"]) + refused["reason"], refused
    assert stress_pods(stack, refused["id"]) == []
    # A tainted worker node: the stress pod tolerates its taint.
    taint = {"key": "dedicated", "value": "batch", "effect": "NoSchedule"}
    core.patch_node("worker-c", {"spec": {"taints": [taint]}})
    node_before = core.read_node("worker-c").to_dict()
    # target.namespaces is only there because job validation still requires it for
    # pod-targeting actions; a node-pinned stress ignores it.
    job = stack.submit(stress_spec("memory-stress", namespace, mode="one", value=None,
                                   params={"node": "worker-c", "namespace": namespace,
                                           "bytes": "64Mi", "workers": 2}))
    record = wait_for_event(stack, job["id"], "holding")
    assert [t["name"] for t in record["targets"]] == ["worker-c"]
    (pod,) = stress_pods(stack, job["id"])
    assert pod.metadata.namespace == namespace
    assert pod.spec.node_name == "worker-c"
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.containers[0].args[:5] == ["--vm", "2", "--vm-bytes", "64m", "--vm-keep"]
    assert pod.spec.containers[0].resources.limits["memory"] == "192Mi"  # 2 x 64Mi + 64Mi
    tolerations = [(t.key, t.operator, t.effect) for t in pod.spec.tolerations or ()]
    assert ("dedicated", "Exists", "NoSchedule") in tolerations
    # The sim's kubelet runs it even though the node is tainted: it was bound by nodeName.
    deadline = time.monotonic() + 10
    while core.read_namespaced_pod(pod.metadata.name, namespace).status.phase != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    wait_gone(stack, job["id"])
    (change,) = record["result"]["changes"]
    assert change["target"]["kind"] == "Node" and change["reverted_at"]
    events = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=worker-c").items
    mine = [e.reason for e in events if job["id"] in (e.message or "")]
    assert sorted(mine) == ["PystolChaos", "PystolRevert"]
    node_after = core.read_node("worker-c").to_dict()
    core.patch_node("worker-c", {"spec": {"taints": None}})
    for part in ("spec", "metadata"):
        for volatile in ("resource_version", "managed_fields"):
            node_before[part].pop(volatile, None)
            node_after[part].pop(volatile, None)
        assert node_after[part] == node_before[part]


def test_dry_run_and_preview_change_nothing(stack: Stack) -> None:
    namespace, selector = make_workload(stack)
    before = pod_state(stack, namespace, selector)
    spec = stress_spec("cpu-stress", namespace, selector)
    preview = stack.call("POST", "/api/v1/preview", json=spec)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["matched"] == 3 and len(body["chosen"]) == 2
    assert all(c["node"] == before[c["uid"]][1] for c in body["chosen"])

    pinned = stress_spec("memory-stress", namespace, mode="one", value=None,
                         params={"node": "worker-b"})
    preview = stack.call("POST", "/api/v1/preview", json=pinned)
    assert preview.status_code == 200, preview.text
    assert [c["name"] for c in preview.json()["chosen"]] == ["worker-b"]

    job = stack.submit(dict(spec, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    assert len(record["result"]["output"]["would_affect"]) == 2
    assert record["result"]["changes"] == []
    assert stress_pods(stack, job["id"]) == []
    assert core_api(stack).list_namespaced_pod(namespace).items.__len__() == 3
    assert pod_state(stack, namespace, selector) == before


def test_cancel_mid_hold_deletes_the_stress_pod_at_once(stack: Stack) -> None:
    namespace, selector = make_workload(stack, replicas=1)
    job = stack.submit(stress_spec("cpu-stress", namespace, selector, mode="one", value=None,
                                   duration="60s"))
    wait_for_event(stack, job["id"], "holding")
    (held,) = stress_pods(stack, job["id"])
    # A stress pod is never itself picked as a target, even by a selector-less job.
    preview = stack.call("POST", "/api/v1/preview",
                         json=stress_spec("cpu-stress", namespace, mode="all", value=None))
    assert preview.status_code == 200, preview.text
    chosen = [c["name"] for c in preview.json()["chosen"]]
    assert len(chosen) == 1 and held.metadata.name not in chosen
    started = time.monotonic()
    assert stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    record = stack.wait_for_job(job["id"], timeout=10)
    assert time.monotonic() - started < 5
    assert record["status"] == "aborted", record
    wait_gone(stack, job["id"])
    (change,) = record["result"]["changes"]
    assert change["reverted_at"]


@pytest.mark.parametrize(("spec", "field"), [
    ({"action": "cpu-stress", "target": {"namespaces": ["shop"]}}, "duration"),
    ({"action": "cpu-stress", "target": {"namespaces": ["shop"]}, "duration": "5s",
      "params": {"load": 0}}, "params.load"),
    ({"action": "memory-stress", "target": {"namespaces": ["shop"]}, "duration": "5s",
      "params": {"bytes": "lots"}}, "params.bytes"),
    ({"action": "memory-stress", "target": {"namespaces": ["shop"]}, "duration": "5s",
      "params": {"namespace": "shop"}}, "params.namespace"),
])
def test_bad_input_is_refused_with_the_field(stack: Stack, spec: dict[str, Any],
                                             field: str) -> None:
    response = stack.call("POST", "/api/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert field in response.text
