"""A pod that fits nowhere waits quietly as Pending, then lands when room appears."""

from __future__ import annotations

import time

from kubernetes import client, config

from tests.support.sim_process import SimProcess

NODES = ("control-plane", "worker-a", "worker-b", "worker-c")


def test_unschedulable_pod_waits_without_churn_then_schedules(fresh_sim: SimProcess) -> None:
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(fresh_sim.kubeconfig)))
    for node in NODES:
        core.patch_node(node, {"spec": {"unschedulable": True}})
    core.create_namespaced_pod("shop", {
        "metadata": {"name": "stuck"},
        "spec": {"containers": [{"name": "app", "image": "pause"}]}})
    time.sleep(0.3)
    pod = core.read_namespaced_pod("stuck", "shop")
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    # Nothing changes while nothing fits: the scheduler does not rewrite the pod in a loop.
    before = core.list_namespaced_pod("shop").metadata.resource_version
    time.sleep(0.5)
    assert core.list_namespaced_pod("shop").metadata.resource_version == before
    events = core.list_namespaced_event("shop", field_selector="involvedObject.name=stuck")
    assert [e.reason for e in events.items] == ["FailedScheduling"]

    core.patch_node("worker-b", {"spec": {"unschedulable": False}})
    deadline = time.monotonic() + 10
    while core.read_namespaced_pod("stuck", "shop").status.phase != "Running":
        assert time.monotonic() < deadline, "pod never scheduled after uncordon"
        time.sleep(0.05)
    assert core.read_namespaced_pod("stuck", "shop").spec.node_name == "worker-b"
