"""The dashboard's topology: the pure builder on canned objects, and the endpoint's edges
(authenticated, 502 when the cluster is unreachable, the page itself public)."""

from __future__ import annotations

from typing import Any

import fakeredis

from pystol_api.http.app import create_app
from pystol_api.http.routes.cluster import build_topology
from pystol_worker.actions import default_registry
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError

TOKEN = "topology-token"


def node(name: str, ready: bool = True, cordoned: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"zone": "a"}},
            "spec": {"unschedulable": True} if cordoned else {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(namespace: str, name: str, node_name: str | None, phase: str = "Running",
        ready: bool = True, owner: tuple[str, str] | None = None,
        terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "name": name}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node_name} if node_name else {},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_nodes_pods_and_workloads() -> None:
    nodes = [node("n2", ready=False), node("n1", cordoned=True)]
    pods = [pod("shop", "web-abc-1", "n1", owner=("ReplicaSet", "web-abc")),
            pod("shop", "web-abc-2", "n2", ready=False, owner=("ReplicaSet", "web-abc")),
            pod("shop", "db-0", "n1", owner=("StatefulSet", "db")),
            pod("shop", "lonely", None, phase="Pending", ready=False),
            pod("ops", "agent-x", "n2", owner=("DaemonSet", "agent"), terminating=True)]
    replica_sets = [{"metadata": {"namespace": "shop", "name": "web-abc", "ownerReferences": [
        {"kind": "Deployment", "name": "web", "controller": True}]}}]
    workloads = [
        {"kind": "Deployment", "metadata": {"namespace": "shop", "name": "web"},
         "spec": {"replicas": 2}, "status": {"readyReplicas": 1}},
        {"kind": "StatefulSet", "metadata": {"namespace": "shop", "name": "db"},
         "spec": {}, "status": {}},
        {"kind": "DaemonSet", "metadata": {"namespace": "ops", "name": "agent"},
         "spec": {}, "status": {"desiredNumberScheduled": 2, "numberReady": 1}}]
    topology = build_topology(nodes, pods, replica_sets, workloads,
                              hits={("shop", "web-abc-1"): ["j-2", "j-1"]},
                              running_jobs=["j-2", "j-1"])

    assert [(n.name, n.ready, n.cordoned) for n in topology.nodes] == [
        ("n1", True, True), ("n2", False, False)]
    by_name = {p.name: p for p in topology.pods}
    web1 = by_name["web-abc-1"]
    assert web1.workload is not None and (web1.workload.kind, web1.workload.name) == (
        "Deployment", "web")   # ReplicaSet resolved to its Deployment
    assert web1.hit and web1.hit_by == ["j-1", "j-2"]
    assert not by_name["web-abc-2"].ready and not by_name["web-abc-2"].hit
    db = by_name["db-0"].workload
    assert db is not None and (db.kind, db.name) == ("StatefulSet", "db")
    assert by_name["lonely"].node is None and by_name["lonely"].workload is None
    assert by_name["lonely"].phase == "Pending"
    assert by_name["agent-x"].terminating
    assert [(w.kind, w.name, w.desired, w.ready) for w in topology.workloads] == [
        ("DaemonSet", "agent", 2, 1), ("Deployment", "web", 2, 1), ("StatefulSet", "db", 1, 0)]
    assert topology.namespaces == ["ops", "shop"]
    assert topology.running_jobs == ["j-1", "j-2"]


def test_a_replica_set_without_owner_stays_the_workload() -> None:
    topology = build_topology([node("n1")], [pod("a", "p", "n1", owner=("ReplicaSet", "rs"))],
                              replica_sets=[{"metadata": {"namespace": "a", "name": "rs"}}])
    workload = topology.pods[0].workload
    assert workload is not None and (workload.kind, workload.name) == ("ReplicaSet", "rs")


def test_sparse_objects_do_not_break_the_builder() -> None:
    topology = build_topology([{}], [{"metadata": {"namespace": "x", "name": "p"}}],
                              workloads=[{"kind": "Deployment", "metadata": {},
                                          "spec": {"replicas": True}, "status": {}}])
    assert topology.nodes[0].ready is False
    assert topology.pods[0].phase == "Unknown" and not topology.pods[0].ready
    assert topology.workloads[0].desired == 0


def test_large_cluster_builds_quickly() -> None:
    import time

    nodes = [node(f"node-{i}") for i in range(50)]
    pods = [pod("shop", f"web-{i}", f"node-{i % 50}", owner=("ReplicaSet", "web-1"))
            for i in range(2000)]
    started = time.perf_counter()
    topology = build_topology(nodes, pods, [{"metadata": {
        "namespace": "shop", "name": "web-1",
        "ownerReferences": [{"kind": "Deployment", "name": "web"}]}}])
    assert time.perf_counter() - started < 1.0
    assert len(topology.pods) == 2000


class DownCluster(ClusterAccess):
    def __init__(self) -> None:
        raise ClusterError("cannot reach the Kubernetes API")


def test_endpoint_needs_a_token_and_answers_502_without_a_cluster() -> None:
    settings = Settings(api_tokens=[TOKEN], redis_url="redis://127.0.0.1:6379/0")
    app = create_app(settings, redis_client=fakeredis.FakeRedis(), queue=None,
                     registry=default_registry(), cluster_factory=DownCluster)
    client = app.test_client()
    assert client.get("/api/v1/cluster").status_code == 401
    answer = client.get("/api/v1/cluster", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 502
    assert answer.mimetype == "application/problem+json"
    # The page and its assets are public; the OpenAPI document describes the topology.
    page = client.get("/")
    assert page.status_code == 200 and b"Pystol" in page.data
    script = client.get("/dashboard/app.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert client.get("/dashboard/nope.js").status_code == 404
    document = client.get("/api/v1/openapi.json").get_json()
    assert "ClusterTopology" in document["components"]["schemas"]
    assert "/api/v1/cluster" in document["paths"]
