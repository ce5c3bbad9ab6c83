"""Rehearsing on a copy: a 200-workload kubectl List, loaded with `pystol-sim --snapshot`,
then a pod-kill through Pystol (API, Redis, a real worker) whose recovery matches the
delays the snapshot's pod timestamps showed.

The List is written here the way `kubectl get ... -o yaml` prints a cluster: Deployments
with their ReplicaSets and pods (ownerReferences, status timestamps in whole seconds),
nodes, Services and their Endpoints. Two kinds of workloads: "quick" ones whose pods took 4 s from
scheduled to running and 2 s more to become Ready, and "slow" ones (9 s and 6 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Stack, running_stack
from tests.support.recovery_truth import TOLERANCE
from tests.support.redis_server import RedisServer

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
# Start and ready seconds the workloads' pods showed. Both far from the sim's defaults
# (1 s + 1 s), so a copy that ignored the timestamps would recover measurably faster.
QUICK = (4.0, 2.0)
SLOW = (9.0, 6.0)
WORKLOADS = 200
REPLICAS = 3
NAMESPACES = ("shop", "payments", "search", "media")


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def workload(index: int) -> tuple[str, str, tuple[float, float]]:
    """(namespace, name, delays) of workload `index`: every fourth one is slow."""
    delays = SLOW if index % 4 == 0 else QUICK
    kind = "slow" if delays is SLOW else "quick"
    return NAMESPACES[index % len(NAMESPACES)], f"{kind}-{index}", delays


def pod(namespace: str, deployment: str, number: int, delays: tuple[float, float]
        ) -> dict[str, Any]:
    template_hash = "7c9f8d6b5a"
    start, ready = delays
    # The pods were created at different moments; in some workloads one pod took a second
    # longer to start (an image pull): the median over the workload's pods is still `delays`.
    created = 60.0 * number
    took = start + (1 if number == 1 and deployment.endswith("3") else 0)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"{deployment}-{template_hash}-{number:05d}", "namespace": namespace,
            "uid": f"pod-{deployment}-{number}", "resourceVersion": "100",
            "creationTimestamp": stamp(created),
            "labels": {"app": deployment, "pod-template-hash": template_hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": f"{deployment}-{template_hash}",
                                 "uid": f"rs-{deployment}", "controller": True,
                                 "blockOwnerDeletion": True}]},
        "spec": {"nodeName": f"node-{number % 6}",
                 "containers": [{"name": "app", "image": f"registry.example/{deployment}:1"}]},
        "status": {
            "phase": "Running", "startTime": stamp(created),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(created)},
                {"type": "Initialized", "status": "True", "lastTransitionTime": stamp(created)},
                {"type": "ContainersReady", "status": "True",
                 "lastTransitionTime": stamp(created + took + ready)},
                {"type": "Ready", "status": "True",
                 "lastTransitionTime": stamp(created + took + ready)}],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                   "image": f"registry.example/{deployment}:1",
                                   "state": {"running": {"startedAt": stamp(created + took)}}}]},
    }


def hand_written_list() -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for number in range(6):
        items.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": f"node-{number}", "labels": {
                          "kubernetes.io/hostname": f"node-{number}",
                          "topology.kubernetes.io/zone": f"zone-{number % 3}"}},
                      "spec": {},
                      "status": {"capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                                 "conditions": [{"type": "Ready", "status": "True"}]}})
    for namespace in NAMESPACES:
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for index in range(WORKLOADS):
        namespace, name, delays = workload(index)
        labels = {"app": name}
        items.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": f"deploy-{name}",
                         "generation": 3, "labels": labels},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{
                                      "name": "app", "image": f"registry.example/{name}:1"}]}}},
            "status": {"replicas": REPLICAS, "readyReplicas": REPLICAS}})
        items.append({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{name}-7c9f8d6b5a", "namespace": namespace,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": name, "uid": f"deploy-{name}",
                                              "controller": True}]},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels}}})
        items += [pod(namespace, name, number, delays) for number in range(REPLICAS)]
        items.append({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": name, "namespace": namespace},
                      "spec": {"selector": labels, "ports": [{"port": 80}],
                               "clusterIP": f"10.43.{index // 250}.{index % 250 + 1}"}})
        items.append({"apiVersion": "v1", "kind": "Endpoints",
                      "metadata": {"name": name, "namespace": namespace},
                      "subsets": [{"addresses": [{"ip": f"10.244.9.{n}"}
                                                 for n in range(REPLICAS)],
                                   "ports": [{"port": 80}]}]})
    return {"apiVersion": "v1", "kind": "List", "items": items}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
              ) -> Iterator[Stack]:
    """The `stack` fixture's processes, with the sim started from the hand-written List."""
    workdir: Path = tmp_path_factory.mktemp("rehearsal")
    snapshot = workdir / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump(hand_written_list(), sort_keys=False))
    with running_stack(workdir, redis_server, ("--snapshot", str(snapshot))) as running:
        yield running


def wait_ready(stack: Stack, namespace: str, name: str, replicas: int = REPLICAS) -> None:
    _, apps = stack.kube_clients()
    deadline = time.monotonic() + 30
    while (apps.read_namespaced_deployment(name, namespace).status.ready_replicas or 0) \
            < replicas:
        assert time.monotonic() < deadline, f"{namespace}/{name} never became ready"
        time.sleep(0.1)


def test_all_200_workloads_run_with_the_delays_their_pods_showed(rehearsal: Stack) -> None:
    core, apps = rehearsal.kube_clients()
    deployments = apps.list_deployment_for_all_namespaces().items
    assert len(deployments) == WORKLOADS
    assert all(d.status.ready_replicas == REPLICAS for d in deployments)
    pods = core.list_pod_for_all_namespaces().items
    assert len(pods) == WORKLOADS * REPLICAS
    assert {p.spec.node_name for p in pods} == {f"node-{n}" for n in range(6)}
    for index in range(WORKLOADS):
        namespace, name, (start, ready) = workload(index)
        deployment = next(d for d in deployments if d.metadata.name == name)
        assert deployment.metadata.namespace == namespace
        assert deployment.spec.template.metadata.annotations == {
            "sim.pystol.org/start-seconds": str(int(start)),
            "sim.pystol.org/ready-seconds": str(int(ready))}, name
    service = core.read_namespaced_service("quick-1", "payments")
    assert service.spec.cluster_ip == "10.43.0.2"


@pytest.mark.parametrize("index", [1, 4], ids=["quick", "slow"])
def test_a_pod_kill_recovers_in_the_inferred_start_plus_ready_time(rehearsal: Stack,
                                                                   index: int) -> None:
    namespace, name, (start, ready) = workload(index)
    wait_ready(rehearsal, namespace, name)
    core, _ = rehearsal.kube_clients()
    before = {p.metadata.uid for p in core.list_namespaced_pod(
        namespace, label_selector=f"app={name}").items}
    job = rehearsal.submit({"action": "pod-kill",
                            "target": {"namespaces": [namespace], "label_selector": f"app={name}",
                                       "mode": "fixed", "value": 1}})
    record = rehearsal.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    [killed] = record["result"]["changes"]
    assert killed["target"]["workload"] == {"kind": "Deployment", "namespace": namespace,
                                            "name": name}
    [recovery] = record["result"]["recovery"]
    assert recovery["recovered"] and recovery["desired_replicas"] == REPLICAS

    # The sim's ground truth: the replacement became ready start + ready simulated
    # seconds after the kill, as the snapshot's timestamps said.
    truth = {p["uid"]: p for p in rehearsal.sim.truth(namespace) if p["owner_name"] == name}
    replacement = next(p for p in truth.values() if p["uid"] not in before)
    true_recovery = replacement["ready"] - truth[killed["target"]["uid"]]["deleted"]
    expected = (start + ready) / rehearsal.sim.speed
    assert abs(true_recovery - expected) < TOLERANCE, (true_recovery, expected)
    # And what Pystol measured is that recovery.
    assert abs(recovery["recovery_seconds"] - true_recovery) < TOLERANCE, \
        (recovery["recovery_seconds"], true_recovery)
