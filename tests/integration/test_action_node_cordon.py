"""node-cordon on pystol-sim: nodes unschedulable while held, exactly as before afterwards.

The `stack` fixture is module-scoped, so this module has a simulated cluster of its own;
every test still leaves the nodes as it found them.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from kubernetes import client, config

from tests.integration.conftest import Stack
from tests.support.kube_helpers import wait_for as poll_until

CORDONED_BY = "chaos.pystol.org/cordoned-by"
WORKERS = ["worker-a", "worker-b", "worker-c"]


def core_api(stack: Stack) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(stack.sim.kubeconfig)))


def node_state(stack: Stack) -> dict[str, Any]:
    """What a cordon may touch on every node."""
    core = core_api(stack)
    return {n.metadata.name: (n.spec.unschedulable, n.metadata.annotations, n.metadata.labels,
                              [t.to_dict() for t in n.spec.taints or ()])
            for n in core.list_node().items}


def unschedulable(stack: Stack, name: str) -> bool:
    return bool(core_api(stack).read_node(name).spec.unschedulable)


# Polls as the shared helper does, with this file's longer default patience.
wait_for = partial(poll_until, timeout=20.0)


def node_reasons(stack: Stack, name: str) -> list[str]:
    events = core_api(stack).list_event_for_all_namespaces(
        field_selector=f"involvedObject.name={name}").items
    return [event.reason for event in events if event.involved_object.kind == "Node"]


def cordon(target: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": "node-cordon", "target": target, "duration": "2s", **extra}


@contextlib.contextmanager
def cordoned_by_hand(stack: Stack, name: str) -> Iterator[None]:
    """An operator's own cordon, in place for the block and lifted after."""
    core = core_api(stack)
    core.patch_node(name, {"spec": {"unschedulable": True}})
    try:
        yield
    finally:
        core.patch_node(name, {"spec": {"unschedulable": False}})


@pytest.fixture(autouse=True)
def nodes_restored(stack: Stack) -> Iterator[dict[str, Any]]:
    before = node_state(stack)
    yield before
    assert node_state(stack) == before


def test_cordon_holds_then_restores_the_node_exactly(stack: Stack) -> None:
    core = core_api(stack)
    before = node_state(stack)
    namespace = f"nc-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    job = stack.submit(cordon({"names": ["worker-a"]}, duration="3s"))

    wait_for(lambda: unschedulable(stack, "worker-a"))
    node = core.read_node("worker-a")
    assert node.metadata.annotations[CORDONED_BY] == job["id"]
    assert not unschedulable(stack, "worker-b") and not unschedulable(stack, "worker-c")
    # The fault has its effect: a pod that may only run on worker-a is not scheduled.
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "pinned"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "worker-a"},
                 "containers": [{"name": "app", "image": "pause"}]}})
    time.sleep(0.5)
    pinned = core.read_namespaced_pod("pinned", namespace)
    assert pinned.spec.node_name is None and pinned.status.phase == "Pending"
    assert stack.call("GET", f"/api/v1/jobs/{job['id']}").json()["status"] == "running"

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert node_state(stack) == before
    wait_for(lambda: core.read_namespaced_pod("pinned", namespace).spec.node_name == "worker-a")

    assert [t["name"] for t in record["targets"]] == ["worker-a"]
    [change] = record["result"]["changes"]
    assert change["target"]["kind"] == "Node" and change["target"]["name"] == "worker-a"
    assert change["action"] == "cordoned node worker-a"
    assert change["reverted_at"] is not None and change["error"] is None
    metrics = record["metrics"]
    assert metrics["targets_selected"] == 1 and metrics["targets_affected"] == 1
    assert metrics["injected_at"] and metrics["reverted_at"]
    assert record["result"]["recovery"] == [] and metrics["recovery_seconds"] is None
    kinds = [event["kind"] for event in record["timeline"]]
    assert {"selected", "injected", "holding", "reverted", "succeeded"} <= set(kinds)
    reasons = node_reasons(stack, "worker-a")
    assert "PystolChaos" in reasons and "PystolRevert" in reasons
    assert "PystolChaos" not in node_reasons(stack, "worker-b")
    core.delete_namespaced_pod("pinned", namespace)


def test_selection_by_selector_amount_and_control_plane(stack: Stack) -> None:
    def preview(target: dict[str, Any], **params: Any) -> dict[str, Any]:
        response = stack.call("POST", "/api/v1/preview",
                              json=cordon(target, params=params))
        assert response.status_code == 200, response.text
        return response.json()

    body = preview({"mode": "all"})
    assert sorted(c["name"] for c in body["chosen"]) == WORKERS
    assert body["matched"] == 3
    assert any("control-plane" in reason for reason in body["excluded"])
    # Control-plane nodes are the admin policy's to allow (include_control_plane, covered
    # in tests/unit/test_actions_on_fake.py), never a job's own switch.
    refused = stack.call("POST", "/api/v1/preview",
                         json=cordon({"mode": "all"}, params={"include_control_plane": True}))
    assert refused.status_code == 422
    assert "params.include_control_plane" in [e["loc"] for e in refused.json()["errors"]]
    # The original Pystol's `amount`: that many, chosen at random among the workers.
    body = preview({"amount": 2})
    assert len(body["chosen"]) == 2 and {c["name"] for c in body["chosen"]} <= set(WORKERS)
    body = preview({"label_selector": "topology.kubernetes.io/zone=zone-a", "mode": "all"})
    assert [c["name"] for c in body["chosen"]] == ["worker-a"]  # control-plane is zone-a too
    # names take precedence: every named node, whatever the selector says.
    body = preview({"names": ["worker-c", "worker-b"], "label_selector": "x=y"})
    assert sorted(c["name"] for c in body["chosen"]) == ["worker-b", "worker-c"]
    body = preview({"names": ["control-plane", "nope"]})
    assert body["chosen"] == [] and len(body["excluded"]) == 2
    # Preview changed nothing.
    assert not any(unschedulable(stack, name) for name in WORKERS)


def test_a_node_cordoned_before_the_job_is_never_touched(stack: Stack) -> None:
    with cordoned_by_hand(stack, "worker-b"):
        before = node_state(stack)
        preview = stack.call("POST", "/api/v1/preview",
                             json=cordon({"names": ["worker-b", "worker-c"]})).json()
        assert [c["name"] for c in preview["chosen"]] == ["worker-c"]
        assert any("worker-b is already cordoned" in reason for reason in preview["excluded"])
        job = stack.submit(cordon({"names": ["worker-b", "worker-c"]}, duration="1s"))
        wait_for(lambda: unschedulable(stack, "worker-c"))
        record = stack.wait_for_job(job["id"])
        assert record["status"] == "succeeded", record
        assert [c["target"]["name"] for c in record["result"]["changes"]] == ["worker-c"]
        # The operator's cordon is still there, the job's is gone.
        assert unschedulable(stack, "worker-b") and not unschedulable(stack, "worker-c")
        assert node_state(stack) == before
        # Only the already-cordoned node: nothing to do, and the job says why.
        job = stack.submit(cordon({"names": ["worker-b"]}))
        record = stack.wait_for_job(job["id"])
        assert record["status"] == "failed" and "already cordoned" in record["reason"]
        assert unschedulable(stack, "worker-b")


def test_dry_run_changes_nothing(stack: Stack) -> None:
    before = node_state(stack)
    job = stack.submit(cordon({"mode": "fixed", "value": 2}, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    would = record["result"]["output"]["would_affect"]
    assert len(would) == 2 and {w["name"] for w in would} <= set(WORKERS)
    assert record["result"]["changes"] == []
    assert node_state(stack) == before


def test_cancel_mid_hold_uncordons_at_once(stack: Stack) -> None:
    before = node_state(stack)
    job = stack.submit(cordon({"names": ["worker-a", "worker-c"]}, duration="60s"))
    wait_for(lambda: unschedulable(stack, "worker-a") and unschedulable(stack, "worker-c"))
    wait_for(lambda: "holding" in [e["kind"] for e in stack.call(
        "GET", f"/api/v1/jobs/{job['id']}").json()["timeline"]])
    asked = time.monotonic()
    response = stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202, response.text
    record = stack.wait_for_job(job["id"], timeout=10)
    assert time.monotonic() - asked < 5
    assert record["status"] == "aborted", record
    assert node_state(stack) == before
    assert all(c["reverted_at"] for c in record["result"]["changes"])
    assert len(record["result"]["changes"]) == 2


def test_bad_input_is_refused_with_the_field(stack: Stack) -> None:
    for body, field in [
        ({"action": "node-cordon", "target": {"names": ["worker-a"]}}, "duration"),
        (cordon({"field_selector": "spec.unschedulable=false"}), "target.field_selector"),
        (cordon({"names": ["worker-a"]}, params={"drain": True}), "params.drain"),
        (cordon({"names": ["worker-a"], "min_available": 1}), "target.min_available"),
    ]:
        response = stack.call("POST", "/api/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        assert field in response.text
