"""Kubernetes object helpers: one rule each for readiness, owners, selectors and times.

Pods, workloads and nodes travel through Pystol as the plain dicts the API returns.
Whatever reads them for a decision (is this pod up? whose is it? which pods does this
selector mean?) reads them here, so that a preview, the blast-radius guard, the drain
and the recovery observers can never disagree about the same object.

Readiness, one rule: a pod is ready when it is not being deleted and its `Ready`
condition says `True`. Before this module there were three rules. The recovery observers
and node-drain read the first `Ready` condition and ignored deletion; the `min_available`
guard also refused a pod that was being deleted, and took any `Ready` condition that said
`True`. The rule kept:
- the first `Ready` condition decides, as Kubernetes' own `podutil.IsPodReady` reads it
  (a pod has one; "any" and "first" only differ on a malformed object);
- a pod being deleted is not ready, whatever its condition still says: it is leaving,
  EndpointSlices mark it not ready, and Services stop sending it traffic. So the guard
  does not count it among the pods that keep a workload up, and a recovery observer does
  not count it as a replica back (the observers tracked terminating pods separately and
  left them out of the ready count already; node-drain never evicts a terminating pod).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pystol_worker.core.model import WorkloadRef
from pystol_worker.core.selector_syntax import split_requirements
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import ClusterError, NotFound

_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>.*)\)$")
_EQUALITY = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$")


# -- time -----------------------------------------------------------------------------------------

def utc(timestamp: float) -> datetime:
    """A `time.time()` reading as an aware UTC datetime, as job records store times."""
    return datetime.fromtimestamp(timestamp, UTC)


# -- state ----------------------------------------------------------------------------------------

CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


def is_control_plane(node: dict[str, Any]) -> bool:
    """A control-plane node (by its role label): never a chaos target unless the admin
    policy's `include_control_plane` says so."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(label in labels for label in CONTROL_PLANE_LABELS)


def is_terminating(obj: dict[str, Any]) -> bool:
    """The object is being deleted (it has a deletionTimestamp)."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_ready(pod: dict[str, Any]) -> bool:
    """Not being deleted, and the first `Ready` condition is `True` (see the module doc)."""
    if is_terminating(pod):
        return False
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            status: object = condition.get("status")
            return status == "True"
    return False


# -- owners ---------------------------------------------------------------------------------------

def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference marked `controller: true` (the one that recreates the object)."""
    return next((ref for ref in (obj.get("metadata") or {}).get("ownerReferences") or ()
                 if ref.get("controller")), None)


@dataclass
class Workload:
    """A pod's top controller, with how many pods it wants and the selector that finds them."""

    ref: WorkloadRef
    desired: int
    selector: str


WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")


def workload_of(obj: dict[str, Any], kind: str, namespace: str) -> Workload:
    """A workload object (as read) as a `Workload`: its ref, desired pods and selector."""
    kind = obj.get("kind") or kind
    spec = obj.get("spec") or {}
    if kind == "DaemonSet":
        desired = int((obj.get("status") or {}).get("desiredNumberScheduled", 0))
    else:
        desired = int(spec.get("replicas", 1))
    return Workload(WorkloadRef(kind=kind, namespace=namespace, name=obj["metadata"]["name"]),
                    desired, selector_string(spec.get("selector") or {}))


def read_workload(cluster: Cluster, ref: WorkloadRef) -> Workload | None:
    """The workload `ref` names, read now (one GET); None when it is gone (404)."""
    try:
        return workload_of(cluster.get_workload(ref.kind, ref.namespace, ref.name), ref.kind,
                           ref.namespace)
    except NotFound:
        return None


_MISSING: Any = object()


class OwnerCache:
    """ReplicaSet uid -> the (kind, name) of the workload that owns it, or None; LRU.

    A pod's controller is usually a ReplicaSet, and what the no-overlap locks are taken on
    is the ReplicaSet's own controller, the Deployment: one GET of the ReplicaSet. A uid
    names one object for its whole life, and its controller reference is set when the
    ReplicaSet is created, so the answer is kept per process, keyed by uid: a pod-kill of
    a workload already seen costs no read before its DELETE. (Kubernetes can orphan a
    ReplicaSet and let another Deployment adopt it; the rare stale answer then names the
    old Deployment, whose lock is taken and whose read after the kill finds it gone.)
    Bounded, so that a long-lived worker that sees many rollouts keeps `size` entries, and
    each answer is kept `max_age` seconds, so an adoption is seen within that time (two
    workers disagreeing about a ReplicaSet's owner would lock different workloads).
    Keyed by namespace, name and uid together: a pod's ownerReference is written by whoever
    created the pod, and one naming another namespace's ReplicaSet uid must not be given
    that ReplicaSet's owner."""

    def __init__(self, size: int = 4096, max_age: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.max_age = max_age
        self._clock = clock
        self._entries: OrderedDict[str, tuple[tuple[str, str] | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The cached owner, None for "no Deployment owns it / it is gone", or _MISSING."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._clock() - entry[1] > self.max_age:
                self._entries.pop(key, None)
                return _MISSING
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, owner: tuple[str, str] | None) -> None:
        with self._lock:
            self._entries[key] = (owner, self._clock())
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


OWNERS = OwnerCache()
"""This process's ReplicaSet -> owner answers (see `OwnerCache`)."""


def workload_ref(cluster: Cluster, pod: dict[str, Any], owners: OwnerCache = OWNERS
                 ) -> WorkloadRef | None:
    """The top workload a pod belongs to, as a ref only: what the no-overlap lock needs.

    Unlike `resolve_workload` it reads neither the workload's size nor its selector (a
    recovery observer reads them after the kill), and the ReplicaSet -> Deployment hop is
    read once per ReplicaSet uid per process (`owners`). None for a pod no controller
    owns, or whose ReplicaSet is gone (404). A controller of another kind (a Job, a
    Node for a static pod) raises ClusterError, as `resolve_workload` does."""
    owner = controller_ref(pod)
    if owner is None:
        return None
    namespace = pod["metadata"].get("namespace", "")
    if owner["kind"] not in WORKLOAD_KINDS:
        raise ClusterError(f"unsupported workload kind {owner['kind']}")
    if owner["kind"] != "ReplicaSet":
        return WorkloadRef(kind=owner["kind"], namespace=namespace, name=owner["name"])
    uid = owner.get("uid") or ""
    cache_key = f"{namespace}/{owner['name']}/{uid}"
    found = owners.get(cache_key) if uid else _MISSING
    if found is _MISSING:
        found, same = None, True  # None: no ReplicaSet by that name (404)
        try:
            replica_set = cluster.get_workload("ReplicaSet", namespace, owner["name"])
        except NotFound:
            pass
        else:
            parent = controller_ref(replica_set)
            found = (("Deployment", parent["name"])
                     if parent is not None and parent.get("kind") == "Deployment"
                     else ("ReplicaSet", owner["name"]))
            # Another ReplicaSet by the same name: answered as before, but not kept.
            same = (replica_set.get("metadata") or {}).get("uid", uid) == uid
        if uid and same:
            owners.put(cache_key, found)
    if found is None:
        return None
    return WorkloadRef(kind=found[0], namespace=namespace, name=found[1])


def resolve_workload(cluster: Cluster, pod: dict[str, Any],
                     cache: dict[tuple[str, str, str], Workload | None]) -> Workload | None:
    """The top workload a pod belongs to (ReplicaSet -> Deployment), through ownerReferences.

    None for a pod no controller owns, or whose owner is gone (404). Any other failure to
    read the owner (a 403 for a missing RBAC rule, an API server that keeps failing)
    raises ClusterError: a workload's size decides `min_available`, the no-overlap locks
    and recovery, and guessing "no owner" would let a job hit more pods than allowed.
    `cache` is keyed by (owner kind, namespace, owner name), so a selection of many pods
    of one workload costs one or two reads."""
    namespace = pod["metadata"].get("namespace", "")
    owner = controller_ref(pod)
    if owner is None:
        return None
    key = (owner["kind"], namespace, owner["name"])
    if key in cache:
        return cache[key]
    workload: Workload | None = None
    try:
        obj = cluster.get_workload(owner["kind"], namespace, owner["name"])
        if owner["kind"] == "ReplicaSet":
            parent = controller_ref(obj)
            if parent is not None and parent.get("kind") == "Deployment":
                obj = cluster.get_workload("Deployment", namespace, parent["name"])
        workload = workload_of(obj, owner["kind"], namespace)
    except NotFound:
        workload = None
    cache[key] = workload
    return workload


# -- selectors ------------------------------------------------------------------------------------

def selector_string(selector: dict[str, Any]) -> str:
    """A LabelSelector object (matchLabels, matchExpressions) as a selector string."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def selector_requirements(text: str) -> list[str]:
    """A selector's requirements, without empty ones (see `split_requirements`)."""
    return [part for part in split_requirements(text) if part]


def label_selector_object(text: str | None) -> dict[str, Any]:
    """A selector string (`app=web,tier in (a,b),!canary`) as a LabelSelector object.

    The string is assumed valid (`core.selector_syntax` checked it at submission)."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for requirement in selector_requirements(text or ""):
        if found := _SET.match(requirement):
            values = [v.strip() for v in found["values"].split(",") if v.strip()]
            expressions.append({"key": found["key"],
                                "operator": "In" if found["op"] == "in" else "NotIn",
                                "values": values})
        elif found := _EQUALITY.match(requirement):
            if found["op"] == "!=":
                expressions.append({"key": found["key"], "operator": "NotIn",
                                    "values": [found["value"].strip()]})
            else:
                match_labels[found["key"]] = found["value"].strip()
        elif requirement.startswith("!"):
            expressions.append({"key": requirement[1:].strip(), "operator": "DoesNotExist"})
        else:
            expressions.append({"key": requirement, "operator": "Exists"})
    selector: dict[str, Any] = {}
    if match_labels:
        selector["matchLabels"] = match_labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector
