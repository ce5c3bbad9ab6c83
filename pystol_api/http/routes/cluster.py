"""The cluster's topology for the dashboard: nodes, pods, workloads and what chaos touches.

`GET /api/v1/cluster` is read-only. It lists nodes, pods (all namespaces, paged with
`limit`/`continue`), ReplicaSets, Deployments, StatefulSets and DaemonSets through the
raw-JSON path (no typed deserialisation: a 2,000-pod list parses in milliseconds), and
flags the pods that a running job has chosen as targets (read from the job store).

The dashboard polls this about once a second, so one answer is shared by every request
that arrives within `CACHE_SECONDS` of it: several open browser tabs cost the cluster no
more than one.

Reading a large or slow cluster takes a while, and every request arriving meanwhile
waits for that one read, holding an API thread. So at most `MAX_CONCURRENT` requests per
API process are in this view at once; one more is answered 503 (`Retry-After: 1`) at once
instead of queueing a thread, and the dashboard simply draws the next poll.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from pystol_api.http.auth import allows
from pystol_api.http.problems import ApiProblem, problem_doc
from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    UNAUTHORIZED_DOC,
    Services,
)
from pystol_worker.core.access import Permission
from pystol_worker.core.model import JobStatus
from pystol_worker.kube.cluster_access import PAGE_SIZE, ClusterAccess, ClusterError

TAG = Tag(name="cluster", description="The cluster as the dashboard draws it.")
CACHE_SECONDS = 0.5
MAX_RUNNING_JOBS = 200
MAX_CONCURRENT = 4  # requests in the view at once, per API process
BUSY_RETRY_SECONDS = 1


class NodeInfo(BaseModel):
    name: str
    ready: bool = Field(description="The node's Ready condition is True.")
    cordoned: bool = Field(description="spec.unschedulable is set.")
    labels: dict[str, str] = Field(default_factory=dict)


class WorkloadKey(BaseModel):
    kind: str = Field(examples=["Deployment"])
    name: str


class PodInfo(BaseModel):
    namespace: str
    name: str
    node: str | None = None
    phase: str = Field(examples=["Running"])
    ready: bool
    terminating: bool = False
    workload: WorkloadKey | None = Field(None, description="The owning workload; a "
                                                           "ReplicaSet's Deployment when "
                                                           "it has one.")
    hit: bool = Field(False, description="A running job has chosen this pod as a target.")
    hit_by: list[str] = Field(default_factory=list, description="Ids of those jobs.")


class WorkloadInfo(BaseModel):
    kind: str
    namespace: str
    name: str
    desired: int
    ready: int


class ClusterTopology(BaseModel):
    nodes: list[NodeInfo]
    pods: list[PodInfo]
    workloads: list[WorkloadInfo]
    namespaces: list[str]
    running_jobs: list[str] = Field(description="Ids of the jobs running now.")


# -- the pure part: Kubernetes objects (plain dicts) to a topology ----------------------------


def _condition(obj: Mapping[str, Any], kind: str) -> bool:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind:
            return condition.get("status") == "True"
    return False


def _controller(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    refs = meta.get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return ref.get("kind", ""), ref.get("name", "")
    if refs:
        return refs[0].get("kind", ""), refs[0].get("name", "")
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def build_topology(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                   replica_sets: Iterable[Mapping[str, Any]] = (),
                   workloads: Iterable[Mapping[str, Any]] = (),
                   hits: Mapping[tuple[str, str], list[str]] | None = None,
                   running_jobs: Iterable[str] = ()) -> ClusterTopology:
    """The topology of plain Kubernetes objects. `workloads` are Deployments, StatefulSets
    and DaemonSets (each carrying its `kind`); `hits` maps (namespace, pod name) to the
    running jobs that chose the pod."""
    hits = hits or {}
    rs_owner: dict[tuple[str, str], tuple[str, str]] = {}
    for rs in replica_sets:
        meta = rs.get("metadata") or {}
        owner = _controller(meta)
        if owner is not None:
            rs_owner[(meta.get("namespace", ""), meta.get("name", ""))] = owner

    node_infos = []
    for node in nodes:
        meta = node.get("metadata") or {}
        node_infos.append(NodeInfo(
            name=meta.get("name", ""), ready=_condition(node, "Ready"),
            cordoned=bool((node.get("spec") or {}).get("unschedulable")),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()}))
    node_infos.sort(key=lambda info: info.name)

    pod_infos = []
    namespaces: set[str] = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        namespaces.add(namespace)
        owner = _controller(meta)
        if owner is not None and owner[0] == "ReplicaSet":
            owner = rs_owner.get((namespace, owner[1]), owner)
        jobs = sorted(hits.get((namespace, name), ()))
        pod_infos.append(PodInfo(
            namespace=namespace, name=name, node=(pod.get("spec") or {}).get("nodeName"),
            phase=(pod.get("status") or {}).get("phase") or "Unknown",
            ready=_condition(pod, "Ready"),
            terminating=bool(meta.get("deletionTimestamp")),
            workload=WorkloadKey(kind=owner[0], name=owner[1]) if owner else None,
            hit=bool(jobs), hit_by=jobs))
    pod_infos.sort(key=lambda info: (info.namespace, info.name))

    workload_infos = []
    for workload in workloads:
        meta = workload.get("metadata") or {}
        spec, status = workload.get("spec") or {}, workload.get("status") or {}
        kind = workload.get("kind", "")
        namespaces.add(meta.get("namespace", ""))
        if kind == "DaemonSet":
            desired, ready = (_int(status.get("desiredNumberScheduled")),
                              _int(status.get("numberReady")))
        else:
            replicas = spec.get("replicas")
            desired = 1 if replicas is None else _int(replicas)
            ready = _int(status.get("readyReplicas"))
        workload_infos.append(WorkloadInfo(kind=kind, namespace=meta.get("namespace", ""),
                                           name=meta.get("name", ""), desired=desired,
                                           ready=ready))
    workload_infos.sort(key=lambda info: (info.namespace, info.kind, info.name))
    return ClusterTopology(nodes=node_infos, pods=pod_infos, workloads=workload_infos,
                           namespaces=sorted(namespaces - {""}),
                           running_jobs=sorted(running_jobs))


# -- reading the cluster -------------------------------------------------------------------------


def list_all(cluster: ClusterAccess, func: Callable[..., Any], kind: str | None = None
             ) -> list[dict[str, Any]]:
    """Every object of a cluster-wide list, paged, as plain dicts (each with its `kind`)."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        body = json.loads(cluster.call("list", func, **kwargs).data)
        for item in body.get("items") or ():
            if kind:
                item.setdefault("kind", kind)
            items.append(item)
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return items


def read_topology(services: Services) -> ClusterTopology:
    cluster = services.cluster.get()
    core, apps = cluster.core, cluster.apps
    hits: dict[tuple[str, str], list[str]] = {}
    running = services.store.list(status=JobStatus.RUNNING, limit=MAX_RUNNING_JOBS).items
    for record in running:
        for target in record.targets:
            if target.kind == "Pod" and target.namespace:
                hits.setdefault((target.namespace, target.name), []).append(record.id)
    workloads = (list_all(cluster, apps.list_deployment_for_all_namespaces, "Deployment")
                 + list_all(cluster, apps.list_stateful_set_for_all_namespaces, "StatefulSet")
                 + list_all(cluster, apps.list_daemon_set_for_all_namespaces, "DaemonSet"))
    return build_topology(
        nodes=list_all(cluster, core.list_node),
        pods=list_all(cluster, core.list_pod_for_all_namespaces),
        replica_sets=list_all(cluster, apps.list_replica_set_for_all_namespaces),
        workloads=workloads, hits=hits, running_jobs=[record.id for record in running])


def scoped(topology: ClusterTopology, readable: Callable[[str], bool]) -> ClusterTopology:
    """The topology without the pods, workloads and namespaces `readable` refuses."""
    namespaces = [namespace for namespace in topology.namespaces if readable(namespace)]
    allowed = set(namespaces)
    pods = [pod for pod in topology.pods if pod.namespace in allowed]
    hits = {job for pod in pods for job in pod.hit_by}
    return topology.model_copy(update={
        "namespaces": namespaces, "pods": pods,
        "workloads": [w for w in topology.workloads if w.namespace in allowed],
        "running_jobs": [job for job in topology.running_jobs if job in hits]})


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("cluster", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses={401: UNAUTHORIZED_DOC})
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(MAX_CONCURRENT)
    cached: dict[str, Any] = {"at": -1e9, "body": b"", "topology": None}

    @bp.get("/cluster", summary="The cluster's topology: nodes, pods, workloads",
            responses={200: ClusterTopology,
                       502: problem_doc("The Kubernetes API failed or cannot be reached."),
                       503: problem_doc("Too many requests for the topology at once; "
                                        "retry after `Retry-After` seconds.")})
    def cluster_topology() -> Response:
        """Nodes (ready, cordoned), pods (namespace, node, phase, readiness, owning
        workload, and whether a running job has chosen them), and workloads with their
        desired and ready replicas. Read-only; answers are shared for half a second."""
        if not slots.acquire(blocking=False):
            raise ApiProblem(503, "cluster-view-busy", "Cluster view busy",
                             f"{MAX_CONCURRENT} requests for the topology are being answered "
                             f"by this API process already; retry in {BUSY_RETRY_SECONDS} s",
                             headers={"Retry-After": str(BUSY_RETRY_SECONDS)})
        try:
            return topology_response()
        finally:
            slots.release()

    def topology_response() -> Response:
        with lock:
            if time.monotonic() - cached["at"] > CACHE_SECONDS:
                try:
                    topology = read_topology(services)
                except ClusterError as error:
                    raise ApiProblem(502, "cluster-unavailable", "Cluster unavailable",
                                     str(error)) from None
                cached["topology"] = topology
                cached["body"] = topology.model_dump_json()
                cached["at"] = time.monotonic()
            body, topology = cached["body"], cached["topology"]
        if not allows(Permission.JOBS_READ, None):
            # A scoped caller sees the pods and workloads of the namespaces they may read
            # (nodes are shared by everyone's pods, so they stay, without other tenants'
            # pods on them); the cluster was still read once for all callers.
            body = scoped(topology, lambda namespace: allows(Permission.JOBS_READ, namespace)
                          ).model_dump_json()
        response = Response(body, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    return bp
