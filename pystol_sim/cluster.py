"""The simulation: the controllers, scheduler and kubelets of a cluster with no real nodes.

Controllers are level-triggered, as in Kubernetes: every store write marks the
objects it may affect as dirty, and one reconcile loop brings each dirty object
towards its desired state. Time in the simulation (a pod taking 3 s to start)
is a timer that marks the pod dirty again when it is due; `speed` shortens
every such delay, so tests can run a 30-second story in three.

What happened to each pod (created, scheduled, started, ready, deleted) is kept
as ground truth, so benchmarks can compare what Pystol measures with reality.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pystol_sim.errors import ApiError
from pystol_sim.resources import Catalogue, PrinterColumn, ResourceType
from pystol_sim.selectors import LabelSelector, SelectorError, label_selector_from_spec
from pystol_sim.store import Store, json_copy, now_rfc3339, random_suffix

ANNOTATION_START = "sim.pystol.org/start-seconds"
ANNOTATION_READY = "sim.pystol.org/ready-seconds"
ANNOTATION_TERMINATE = "sim.pystol.org/terminate-seconds"
NODE_EVICTION_SECONDS = 5.0
KUBELET_VERSION = "v1.35.0-pystol-sim"

Key = tuple[str, str, str]  # (type key, namespace, name)


@dataclass
class Timings:
    start_seconds: float = 1.0
    ready_seconds: float = 1.0
    terminate_seconds: float = 1.0
    schedule_seconds: float = 0.0


@dataclass
class PodTruth:
    uid: str
    namespace: str
    name: str
    owner_kind: str
    owner_name: str
    created: float
    node: str = ""
    scheduled: float | None = None
    started: float | None = None
    ready: float | None = None
    deleted: float | None = None
    removed: float | None = None
    restarts: list[float] = field(default_factory=list)


@dataclass
class NodeInfo:
    name: str
    labels: dict[str, str]
    ready: bool
    unschedulable: bool
    no_schedule_taints: list[dict[str, Any]]
    capacity_pods: int


def _quantity_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return None


def pod_is_ready(pod: dict[str, Any]) -> bool:
    cond = _condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def pod_is_active(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:10]


def tolerates(pod_spec: dict[str, Any], taint: dict[str, Any]) -> bool:
    for tol in pod_spec.get("tolerations") or ():
        if tol.get("operator") == "Exists" and not tol.get("key"):
            return True
        if tol.get("key") != taint.get("key"):
            continue
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" or tol.get("value") == taint.get("value"):
            return True
    return False


class Cluster:
    """Owns the store and runs every controller against it."""

    def __init__(self, store: Store, catalogue: Catalogue, timings: Timings | None = None,
                 speed: float = 1.0) -> None:
        self.store = store
        self.catalogue = catalogue
        self.timings = timings or Timings()
        self.speed = speed
        self.truth: dict[str, PodTruth] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.pods_per_node: dict[str, int] = {}
        self._dirty: dict[Key, None] = {}
        self._wake = asyncio.Event()
        self._settling = False
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._rr = itertools.count()
        self._ip = itertools.count(2)
        self._not_ready_since: dict[str, float] = {}
        self._killed: set[str] = set()  # uids of pods whose kill was already announced
        self._created_images: dict[str, dict[str, str]] = {}  # pod uid -> container -> image
        self.pods = self._type("", "v1", "pods")
        self.nodes_t = self._type("", "v1", "nodes")
        self.namespaces = self._type("", "v1", "namespaces")
        self.events = self._type("", "v1", "events")
        self.services = self._type("", "v1", "services")
        self.endpoints = self._type("", "v1", "endpoints")
        self.deployments = self._type("apps", "v1", "deployments")
        self.replicasets = self._type("apps", "v1", "replicasets")
        self.statefulsets = self._type("apps", "v1", "statefulsets")
        self.daemonsets = self._type("apps", "v1", "daemonsets")
        self.pdbs = self._type("policy", "v1", "poddisruptionbudgets")
        self.crds = self._type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        store.add_listener(self._on_write)

    def _type(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self.catalogue.get(group, version, plural)
        assert rtype is not None
        return rtype

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-controllers")

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def load(self, manifests: Iterable[dict[str, Any]]) -> None:
        """Create a scenario's objects and settle the cluster at once (no simulated delays)."""
        self._settling = True
        try:
            for manifest in manifests:
                rtype = self.catalogue.by_kind(manifest["apiVersion"], manifest["kind"])
                if rtype is None:
                    raise ValueError(f"unknown kind {manifest['apiVersion']}/{manifest['kind']}")
                self.store.create(rtype, manifest, manifest["metadata"].get("namespace", ""))
            self.reconcile_all()
        finally:
            self._settling = False

    def reconcile_all(self) -> None:
        while self._dirty:
            batch = list(self._dirty)
            self._dirty.clear()
            for key in batch:
                self._reconcile(key)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.reconcile_all()
            except Exception:
                import traceback
                traceback.print_exc()
                self._dirty.clear()
            await asyncio.sleep(0)

    def mark(self, rtype: ResourceType, namespace: str, name: str) -> None:
        self._dirty[(rtype.key, namespace, name)] = None
        self._wake.set()

    def later(self, seconds: float, rtype: ResourceType, namespace: str, name: str) -> None:
        if self._settling or seconds <= 0:
            self.mark(rtype, namespace, name)
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self.mark(rtype, namespace, name)

        handle = loop.call_later(seconds / self.speed, fire)
        self._timers.add(handle)

    # -- change notification ------------------------------------------------------------------

    def _on_write(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                  old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        name = meta["name"]
        key = rtype.key
        if key == "/pods":
            self._track_pod(event, obj, old)
            self.mark(rtype, ns, name)
            ref = controller_of(obj)
            if ref is not None:
                owner_type = self._owner_type(ref)
                if owner_type is not None:
                    self.mark(owner_type, ns, ref["name"])
            for pdb_key in list(self.store.table(self.pdbs).objects):
                if pdb_key[0] == ns:
                    self.mark(self.pdbs, ns, pdb_key[1])
            if not self._settling:
                for svc_key in list(self.store.table(self.services).objects):
                    if svc_key[0] == ns:
                        self.mark(self.services, ns, svc_key[1])
        elif key == "/nodes":
            self._track_node(event, obj)
            for ds_key in list(self.store.table(self.daemonsets).objects):
                self.mark(self.daemonsets, *ds_key)
            if event == "DELETED" or not self.nodes.get(name, NodeInfo("", {}, True, False, [],
                                                                         0)).ready:
                self.mark(rtype, "", name)
                for pod_key, item in self.store.select(self.pods):
                    if item.fields.get("spec.nodeName") == name:
                        self.mark(self.pods, *pod_key)
            self._retry_pending()
        elif key in ("apps/replicasets", "apps/deployments", "apps/statefulsets",
                     "apps/daemonsets", "policy/poddisruptionbudgets", "/services",
                     "/namespaces"):
            self.mark(rtype, ns, name)
            if key == "apps/replicasets":
                ref = controller_of(obj)
                if ref is not None and ref.get("kind") == "Deployment":
                    self.mark(self.deployments, ns, ref["name"])
        elif key == "apiextensions.k8s.io/customresourcedefinitions":
            self._sync_crd(event, obj)
        if event == "DELETED":
            self._collect_garbage(meta.get("uid", ""))
        elif meta.get("deletionTimestamp") and meta.get("finalizers"):
            self.mark(rtype, ns, name)

    def _owner_type(self, ref: dict[str, Any]) -> ResourceType | None:
        return self.catalogue.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))

    def _track_pod(self, event: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        old_node = (old or {}).get("spec", {}).get("nodeName") if old else None
        new_node = pod.get("spec", {}).get("nodeName") if event != "DELETED" else None
        if old_node != new_node:
            if old_node:
                self.pods_per_node[old_node] = self.pods_per_node.get(old_node, 1) - 1
            if new_node:
                self.pods_per_node[new_node] = self.pods_per_node.get(new_node, 0) + 1
        uid = pod["metadata"].get("uid", "")
        now = time.time()
        record = self.truth.get(uid)
        if record is None:
            ref = controller_of(pod) or {}
            owner_kind, owner_name = ref.get("kind", ""), ref.get("name", "")
            if owner_kind == "ReplicaSet" and "pod-template-hash" in (pod["metadata"].get(
                    "labels") or {}):
                owner_kind = "Deployment"
                owner_name = owner_name.rsplit("-", 1)[0]
            self._created_images[uid] = {c.get("name"): c.get("image")
                                         for c in pod.get("spec", {}).get("containers") or ()}
            record = self.truth[uid] = PodTruth(uid, pod["metadata"].get("namespace", ""),
                                                pod["metadata"]["name"], owner_kind, owner_name,
                                                now)
        if new_node and record.scheduled is None:
            record.node, record.scheduled = new_node, now
        if pod.get("status", {}).get("phase") == "Running" and record.started is None:
            record.started = now
        if pod_is_ready(pod) and record.ready is None:
            record.ready = now
        if pod["metadata"].get("deletionTimestamp") and record.deleted is None:
            record.deleted = now
        if event == "DELETED":
            self._killed.discard(uid)
            self._created_images.pop(uid, None)
            record.removed = now
            if record.deleted is None:
                record.deleted = now

    def _track_node(self, event: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        if event == "DELETED":
            self.nodes.pop(name, None)
            return
        ready = _condition(node, "Ready")
        self.nodes[name] = NodeInfo(
            name=name,
            labels=dict(node["metadata"].get("labels") or {}),
            ready=bool(ready is None or ready.get("status") == "True"),
            unschedulable=bool(node.get("spec", {}).get("unschedulable")),
            no_schedule_taints=[t for t in node.get("spec", {}).get("taints") or ()
                                if t.get("effect") in ("NoSchedule", "NoExecute")],
            capacity_pods=_quantity_int(node.get("status", {}).get("allocatable", {}).get("pods"),
                                        110),
        )

    def _retry_pending(self) -> None:
        for key, item in self.store.select(self.pods):
            if not item.fields.get("spec.nodeName") and item.fields.get("status.phase") in (
                    "Pending", ""):
                self.mark(self.pods, *key)

    def _collect_garbage(self, uid: str) -> None:
        for type_key, ns, name in list(self.store.dependents.get(uid, ())):
            rtype = self._type_by_key(type_key)
            if rtype is None:
                continue
            dependent = self.store.find(rtype, ns, name)
            if dependent is None:
                continue
            refs = dependent["metadata"].get("ownerReferences") or []
            remaining = [r for r in refs if r.get("uid") != uid]
            if remaining:
                dependent["metadata"]["ownerReferences"] = remaining
                self.store.put(rtype, dependent)
            elif not dependent["metadata"].get("deletionTimestamp"):
                self.store.delete(rtype, ns, name)

    def _type_by_key(self, type_key: str) -> ResourceType | None:
        group, plural = type_key.split("/", 1)
        for rtype in self.catalogue.all():
            if rtype.group == group and rtype.plural == plural:
                return rtype
        return None

    # -- reconcile dispatch -------------------------------------------------------------------

    def _reconcile(self, key: Key) -> None:
        type_key, ns, name = key
        rtype = self._type_by_key(type_key)
        if rtype is None:
            return
        obj = self.store.find(rtype, ns, name)
        if obj is None:
            return
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and meta.get("finalizers"):
            self._finalize(rtype, obj)
            obj = self.store.find(rtype, ns, name)
            if obj is None:
                return
        handler = {
            "/pods": self._reconcile_pod,
            "/nodes": self._reconcile_node,
            "/namespaces": self._reconcile_namespace,
            "/services": self._reconcile_service,
            "apps/replicasets": self._reconcile_replicaset,
            "apps/deployments": self._reconcile_deployment,
            "apps/statefulsets": self._reconcile_statefulset,
            "apps/daemonsets": self._reconcile_daemonset,
            "policy/poddisruptionbudgets": self._reconcile_pdb,
        }.get(type_key)
        if handler is not None:
            handler(obj)

    def _finalize(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """The garbage collector's own finalizers: orphan and foregroundDeletion."""
        meta = obj["metadata"]
        uid = meta["uid"]
        finalizers = list(meta["finalizers"])
        deps = list(self.store.dependents.get(uid, ()))
        if "orphan" in finalizers:
            for type_key, ns, name in deps:
                dep_type = self._type_by_key(type_key)
                dependent = self.store.find(dep_type, ns, name) if dep_type else None
                if dependent is not None and dep_type is not None:
                    dependent["metadata"]["ownerReferences"] = [
                        r for r in dependent["metadata"].get("ownerReferences") or ()
                        if r.get("uid") != uid]
                    self.store.put(dep_type, dependent)
            finalizers.remove("orphan")
        elif "foregroundDeletion" in finalizers:
            if deps:
                for type_key, ns, name in deps:
                    dep_type = self._type_by_key(type_key)
                    if dep_type is not None and self.store.stored(dep_type, ns, name):
                        dependent = self.store.get(dep_type, ns, name)
                        if not dependent["metadata"].get("deletionTimestamp"):
                            self.store.delete(dep_type, ns, name, foreground=True)
                return
            finalizers.remove("foregroundDeletion")
        else:
            return
        meta["finalizers"] = finalizers
        self.store.put(rtype, obj)

    # -- events ---------------------------------------------------------------------------------

    def record_event(self, obj: dict[str, Any], reason: str, message: str,
                     type_: str = "Normal", component: str = "pystol-sim") -> None:
        if self._settling:
            return
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        event = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns},
            "involvedObject": {"kind": obj.get("kind"), "namespace": meta.get("namespace", ""),
                               "name": meta["name"], "uid": meta.get("uid"),
                               "apiVersion": obj.get("apiVersion"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component}, "reportingComponent": component,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        if self.store.stored(self.namespaces, "", ns) is not None:
            self.store.create(self.events, event, ns)

    # -- pods: scheduler and kubelet ------------------------------------------------------------

    def _delay(self, pod: dict[str, Any], annotation: str, default: float) -> float:
        value = (pod["metadata"].get("annotations") or {}).get(annotation)
        if value is None:
            return default
        try:
            return max(0.0, float(value))
        except ValueError:
            return default

    def _pick_node(self, pod: dict[str, Any]) -> str | None:
        spec = pod.get("spec", {})
        wanted = spec.get("nodeSelector") or {}
        names = list(self.nodes)
        if not names:
            return None
        offset = next(self._rr)
        for index in range(len(names)):
            info = self.nodes[names[(offset + index) % len(names)]]
            if not info.ready or info.unschedulable:
                continue
            if self.pods_per_node.get(info.name, 0) >= info.capacity_pods:
                continue
            if any(info.labels.get(k) != v for k, v in wanted.items()):
                continue
            if any(not tolerates(spec, t) for t in info.no_schedule_taints):
                continue
            return info.name
        return None

    def bind(self, pod: dict[str, Any]) -> bool:
        """Scheduler: choose a node and bind the pod in place; False when nothing fits."""
        node = self._pick_node(pod)
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or () if c["type"] != "PodScheduled"]
        stamp = now_rfc3339()
        if node is None:
            existing = _condition(pod, "PodScheduled")
            if existing is not None and existing.get("status") == "False":
                return False  # already marked unschedulable: writing again would loop
            conditions.append({"type": "PodScheduled", "status": "False",
                               "reason": "Unschedulable", "lastTransitionTime": stamp,
                               "message": f"0/{len(self.nodes)} nodes are available."})
            status["conditions"] = conditions
            status["phase"] = "Pending"
            return False
        pod["spec"]["nodeName"] = node
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp})
        status["conditions"] = conditions
        self.pods_per_node[node] = self.pods_per_node.get(node, 0)
        return True

    def _reconcile_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        spec = pod.setdefault("spec", {})
        status = pod.setdefault("status", {})
        if meta.get("deletionTimestamp"):
            if meta["uid"] not in self._killed and spec.get("nodeName"):
                self._killed.add(meta["uid"])
                for container in spec.get("containers") or ():
                    self.record_event(pod, "Killing", f"Stopping container {container.get('name')}",
                                      component="kubelet")
            grace = meta.get("deletionGracePeriodSeconds") or 0
            if grace <= 0:
                self.store.remove(self.pods, ns, name)
                return
            if status.get("phase") in ("Pending", "Succeeded", "Failed") or not spec.get(
                    "nodeName"):
                self.store.remove(self.pods, ns, name)
                return
            terminate = min(float(grace), self._delay(pod, ANNOTATION_TERMINATE,
                                                      self.timings.terminate_seconds))
            record = self.truth.get(meta["uid"])
            deleted_at = record.deleted if record and record.deleted else time.time()
            due = deleted_at + terminate / self.speed
            if self._settling or time.time() + 1e-3 >= due:
                self.store.remove(self.pods, ns, name)
            else:
                if pod_is_ready(pod):
                    self._set_ready(pod, False, "ContainersNotReady")
                    self.store.put(self.pods, pod)
                self.later((due - time.time()) * self.speed, self.pods, ns, name)
            return
        node_name = spec.get("nodeName")
        if not node_name:
            if not status.get("phase"):
                status["phase"] = "Pending"
            if self.bind(pod):
                self.record_event(pod, "Scheduled",
                                  f"Successfully assigned {ns}/{name} to {spec['nodeName']}",
                                  component="default-scheduler")
                self._fill_pending_status(pod)
                self.store.put(self.pods, pod)
                self.later(self._delay(pod, ANNOTATION_START, self.timings.start_seconds),
                           self.pods, ns, name)
            elif pod != self.store.find(self.pods, ns, name):
                self.store.put(self.pods, pod)
                self.record_event(pod, "FailedScheduling", "0/"
                                  f"{len(self.nodes)} nodes are available: no node fits",
                                  type_="Warning", component="default-scheduler")
            return
        node = self.nodes.get(node_name)
        if node is None or not node.ready:
            if status.get("phase") == "Running" and pod_is_ready(pod):
                self._set_ready(pod, False, "NodeNotReady")
                self.store.put(self.pods, pod)
            if node is None:
                self.store.delete(self.pods, ns, name, grace_period=0)
            else:
                self.later(NODE_EVICTION_SECONDS, self.nodes_t, "", node_name)
            return
        phase = status.get("phase") or "Pending"
        record = self.truth.get(meta["uid"])
        now = time.time()
        if phase == "Pending":
            start = self._delay(pod, ANNOTATION_START, self.timings.start_seconds)
            since = record.scheduled if record and record.scheduled else now
            due = since + start / self.speed
            if self._settling or now + 1e-3 >= due:
                self._fill_running_status(pod)
                self.record_event(pod, "Started", "Started container "
                                  + spec.get("containers", [{}])[0].get("name", "app"),
                                  component="kubelet")
                self.store.put(self.pods, pod)
                self.later(self._delay(pod, ANNOTATION_READY, self.timings.ready_seconds),
                           self.pods, ns, name)
            else:
                if not status.get("containerStatuses"):
                    self._fill_pending_status(pod)
                    self.store.put(self.pods, pod)
                self.later((due - now) * self.speed, self.pods, ns, name)
            return
        if phase == "Running" and self._restart_swapped_images(pod):
            self.store.put(self.pods, pod)
            self.later(self._delay(pod, ANNOTATION_READY, self.timings.ready_seconds),
                       self.pods, ns, name)
            return
        if phase == "Running" and not pod_is_ready(pod):
            if self._unusable(pod):
                return  # a pause image where the app was: running, never ready
            ready = self._delay(pod, ANNOTATION_READY, self.timings.ready_seconds)
            since = self._last_start(pod) or now
            due = since + ready / self.speed
            if self._settling or now + 1e-3 >= due:
                self._set_ready(pod, True)
                self.store.put(self.pods, pod)
            else:
                self.later((due - now) * self.speed, self.pods, ns, name)

    def _restart_swapped_images(self, pod: dict[str, Any]) -> bool:
        """A kubelet restarts a container whose image was changed in the pod spec."""
        wanted = {c.get("name"): c.get("image") for c in pod["spec"].get("containers") or ()}
        changed = False
        stamp = now_rfc3339()
        for cs in pod.get("status", {}).get("containerStatuses") or ():
            image = wanted.get(cs["name"])
            if image is None or image == cs.get("image"):
                continue
            running = cs.get("state", {}).get("running", {})
            cs["lastState"] = {"terminated": {"exitCode": 0, "reason": "Completed",
                                              "startedAt": running.get("startedAt", stamp),
                                              "finishedAt": stamp}}
            cs["image"], cs["imageID"] = image, f"sim://{image}"
            cs["restartCount"] = cs.get("restartCount", 0) + 1
            cs["state"] = {"running": {"startedAt": stamp, "startedAtUnix": time.time()}}
            cs["ready"] = False
            changed = True
        if changed:
            self._put_condition(pod, "ContainersReady", "False", "ContainersNotReady")
            self._put_condition(pod, "Ready", "False", "ContainersNotReady")
            record = self.truth.get(pod["metadata"]["uid"])
            if record is not None:
                record.ready = None
            self.record_event(pod, "Pulled", "Container image changed; restarting",
                              component="kubelet")
        return changed

    def _unusable(self, pod: dict[str, Any]) -> bool:
        """True when a container now runs a pause image instead of the one it was created with:
        the process runs but serves nothing, so readiness never passes (Chaos Mesh's
        pod-failure works this way on a real cluster)."""
        created = self._created_images.get(pod["metadata"]["uid"], {})
        for container in pod["spec"].get("containers") or ():
            image = container.get("image", "")
            if image != created.get(container.get("name")) and "pause" in image.rsplit("/", 1)[-1]:
                return True
        return False

    @staticmethod
    def _last_start(pod: dict[str, Any]) -> float | None:
        """When the newest container (re)start happened, as a unix time."""
        latest: float | None = None
        for cs in pod.get("status", {}).get("containerStatuses") or ():
            started = cs.get("state", {}).get("running", {}).get("startedAtUnix")
            if started is not None:
                latest = started if latest is None else max(latest, started)
        return latest

    def _fill_pending_status(self, pod: dict[str, Any]) -> None:
        status = pod["status"]
        status["phase"] = "Pending"
        status["hostIP"] = self._node_ip(pod["spec"]["nodeName"])
        status["containerStatuses"] = [
            {"name": c.get("name", "app"), "image": c.get("image", ""), "imageID": "",
             "ready": False, "restartCount": 0, "started": False,
             "state": {"waiting": {"reason": "ContainerCreating"}}}
            for c in pod["spec"].get("containers") or ()]
        for cond in ("Initialized", "ContainersReady", "Ready"):
            self._put_condition(pod, cond, "True" if cond == "Initialized" else "False",
                                None if cond == "Initialized" else "ContainersNotReady")

    def _fill_running_status(self, pod: dict[str, Any]) -> None:
        status = pod["status"]
        status["phase"] = "Running"
        status["hostIP"] = self._node_ip(pod["spec"]["nodeName"])
        if "podIP" not in status:
            number = next(self._ip)
            status["podIP"] = f"10.244.{number // 250 % 250}.{number % 250 + 1}"
        status["podIPs"] = [{"ip": status["podIP"]}]
        status.setdefault("startTime", now_rfc3339())
        status["qosClass"] = "BestEffort"
        stamp = now_rfc3339()
        unix = time.time()
        status["containerStatuses"] = [
            {"name": c.get("name", "app"), "image": c.get("image", ""),
             "imageID": f"sim://{c.get('image', '')}", "containerID": f"sim://{uuid.uuid4().hex}",
             "ready": False, "restartCount": 0, "started": True,
             "state": {"running": {"startedAt": stamp, "startedAtUnix": unix}}}
            for c in pod["spec"].get("containers") or ()]
        self._put_condition(pod, "Initialized", "True")

    def _set_ready(self, pod: dict[str, Any], ready: bool, reason: str | None = None) -> None:
        value = "True" if ready else "False"
        for cs in pod["status"].get("containerStatuses") or ():
            cs["ready"] = ready
        self._put_condition(pod, "ContainersReady", value, None if ready else reason)
        self._put_condition(pod, "Ready", value, None if ready else reason)

    @staticmethod
    def _put_condition(obj: dict[str, Any], kind: str, value: str, reason: str | None = None
                       ) -> None:
        conditions = obj.setdefault("status", {}).setdefault("conditions", [])
        for cond in conditions:
            if cond["type"] == kind:
                if cond.get("status") != value:
                    cond["status"] = value
                    cond["lastTransitionTime"] = now_rfc3339()
                if reason:
                    cond["reason"] = reason
                else:
                    cond.pop("reason", None)
                return
        cond = {"type": kind, "status": value, "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339()}
        if reason:
            cond["reason"] = reason
        conditions.append(cond)

    def _node_ip(self, node_name: str) -> str:
        item = self.store.stored(self.nodes_t, "", node_name)
        if item is None:
            return ""
        for address in item.load().get("status", {}).get("addresses") or ():
            if address.get("type") == "InternalIP":
                return address.get("address", "")
        return ""

    def restart_container(self, namespace: str, pod_name: str, container: str, exit_code: int
                          ) -> None:
        """The container's main process died: the kubelet restarts it, readiness dips."""
        pod = self.store.get(self.pods, namespace, pod_name)
        now_stamp = now_rfc3339()
        for cs in pod.get("status", {}).get("containerStatuses") or ():
            if cs["name"] != container:
                continue
            running = cs.get("state", {}).get("running", {})
            cs["lastState"] = {"terminated": {
                "exitCode": exit_code, "reason": "Error" if exit_code else "Completed",
                "startedAt": running.get("startedAt", now_stamp), "finishedAt": now_stamp,
                "containerID": cs.get("containerID", "")}}
            cs["restartCount"] = cs.get("restartCount", 0) + 1
            cs["containerID"] = f"sim://{uuid.uuid4().hex}"
            cs["state"] = {"running": {"startedAt": now_stamp, "startedAtUnix": time.time()}}
            cs["ready"] = False
        self._put_condition(pod, "ContainersReady", "False", "ContainersNotReady")
        self._put_condition(pod, "Ready", "False", "ContainersNotReady")
        record = self.truth.get(pod["metadata"]["uid"])
        if record is not None:
            record.restarts.append(time.time())
            record.ready = None
        self.store.put(self.pods, pod)
        self.record_event(pod, "Killing", f"Container {container} died; restarting",
                          type_="Warning", component="kubelet")
        self.later(self._delay(pod, ANNOTATION_READY, self.timings.ready_seconds),
                   self.pods, namespace, pod_name)

    # -- nodes and namespaces -----------------------------------------------------------------

    def _reconcile_node(self, node: dict[str, Any]) -> None:
        """Evict pods from a NotReady node after a grace period, as the node lifecycle
        controller does; they are then recreated elsewhere by their controllers."""
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None or info.ready:
            return
        since = self._not_ready_since.setdefault(name, time.time())
        now = time.time()
        if now < since + NODE_EVICTION_SECONDS / self.speed and not self._settling:
            self.later((since + NODE_EVICTION_SECONDS / self.speed - now) * self.speed,
                       self.nodes_t, "", name)
            return
        for key, item in list(self.store.select(self.pods)):
            if item.fields.get("spec.nodeName") == name:
                pod = item.load()
                if not pod["metadata"].get("deletionTimestamp"):
                    self.store.delete(self.pods, key[0], key[1], grace_period=0)

    def set_node_ready(self, name: str, ready: bool) -> None:
        """Simulate a kubelet that stops (or resumes) reporting: the node's Ready condition."""
        node = self.store.get(self.nodes_t, "", name)
        self._put_condition(node, "Ready", "True" if ready else "Unknown",
                            None if ready else "NodeStatusUnknown")
        if ready:
            self._not_ready_since.pop(name, None)
        else:
            self._not_ready_since[name] = time.time()
        self.store.put(self.nodes_t, node)
        self.record_event(node, "NodeReady" if ready else "NodeNotReady",
                          f"Node {name} status is now: {'NodeReady' if ready else 'NodeNotReady'}",
                          component="node-controller")

    def _reconcile_namespace(self, ns_obj: dict[str, Any]) -> None:
        meta = ns_obj["metadata"]
        status = ns_obj.setdefault("status", {})
        if not meta.get("deletionTimestamp"):
            if status.get("phase") != "Active":
                status["phase"] = "Active"
                self.store.put(self.namespaces, ns_obj)
            return
        name = meta["name"]
        if status.get("phase") != "Terminating":
            status["phase"] = "Terminating"
            self.store.put(self.namespaces, ns_obj)
        remaining = 0
        for rtype in self.catalogue.all():
            if not rtype.namespaced:
                continue
            for key, _ in list(self.store.select(rtype, name)):
                remaining += 1
                with contextlib.suppress(ApiError):
                    self.store.delete(rtype, key[0], key[1], grace_period=0)
        if remaining:
            self.later(0.2, self.namespaces, "", name)
            return
        spec_finalizers = ns_obj.get("spec", {}).get("finalizers") or []
        if spec_finalizers:
            ns_obj["spec"]["finalizers"] = []
        self.store.remove(self.namespaces, "", name)

    # -- workload controllers -----------------------------------------------------------------

    def owned(self, rtype: ResourceType, owner: dict[str, Any]) -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        result = []
        for type_key, ns, name in self.store.dependents.get(uid, ()):
            if type_key != rtype.key:
                continue
            obj = self.store.find(rtype, ns, name)
            if obj is not None:
                ref = controller_of(obj)
                if ref is not None and ref.get("uid") == uid:
                    result.append(obj)
        return result

    @staticmethod
    def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}

    def new_pod(self, owner: dict[str, Any], template: dict[str, Any], name: str,
                extra_labels: dict[str, str] | None = None, node_name: str | None = None
                ) -> dict[str, Any] | None:
        tmpl = json_copy(template or {})
        meta = tmpl.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        labels.update(extra_labels or {})
        ns = owner["metadata"]["namespace"]
        spec = tmpl.get("spec") or {}
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        if node_name:
            spec["nodeName"] = node_name
        pod: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": dict(meta.get("annotations") or {}),
                         "ownerReferences": [self.owner_ref(owner)]},
            "spec": spec, "status": {"phase": "Pending"}}
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        if self._settling:
            if not node_name and not self.bind(pod):
                return self.store.create(self.pods, pod, ns)
            self._fill_running_status(pod)
            self._set_ready(pod, True)
        try:
            return self.store.create(self.pods, pod, ns)
        except ApiError:
            return None

    def _selector(self, obj: dict[str, Any]) -> LabelSelector | None:
        try:
            return label_selector_from_spec(obj.get("spec", {}).get("selector"))
        except SelectorError:
            return None

    def _reconcile_replicaset(self, rs: dict[str, Any]) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            return
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        desired = int(rs.get("spec", {}).get("replicas", 1))
        pods = [p for p in self.owned(self.pods, rs) if pod_is_active(p)]
        template = rs.get("spec", {}).get("template") or {}
        if len(pods) < desired:
            for _ in range(desired - len(pods)):
                pod = self.new_pod(rs, template, f"{name}-{random_suffix()}")
                if pod is not None:
                    pods.append(pod)
                    self.record_event(rs, "SuccessfulCreate", f"Created pod: "
                                      f"{pod['metadata']['name']}",
                                      component="replicaset-controller")
        elif len(pods) > desired:
            pods.sort(key=lambda p: (pod_is_ready(p), bool(p["spec"].get("nodeName")),
                                     p["metadata"]["creationTimestamp"]), reverse=False)
            for victim in pods[: len(pods) - desired]:
                self.store.delete(self.pods, ns, victim["metadata"]["name"])
                self.record_event(rs, "SuccessfulDelete",
                                  f"Deleted pod: {victim['metadata']['name']}",
                                  component="replicaset-controller")
            pods = pods[len(pods) - desired:]
        ready = sum(1 for p in pods if pod_is_ready(p))
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                  "readyReplicas": ready, "availableReplicas": ready,
                  "observedGeneration": rs["metadata"].get("generation", 1)}
        self._write_status(self.replicasets, rs, status)

    def _write_status(self, rtype: ResourceType, obj: dict[str, Any], status: dict[str, Any]
                      ) -> None:
        current = obj.get("status") or {}
        merged = {**current, **status}
        if merged != current:
            fresh = self.store.find(rtype, obj["metadata"].get("namespace", ""),
                                    obj["metadata"]["name"])
            if fresh is None:
                return
            fresh["status"] = {**(fresh.get("status") or {}), **status}
            self.store.put(rtype, fresh)

    def _reconcile_deployment(self, deploy: dict[str, Any]) -> None:
        if deploy["metadata"].get("deletionTimestamp"):
            return
        ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        spec = deploy.get("spec", {})
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        digest = template_hash(template)
        owned = self.owned(self.replicasets, deploy)
        current = next((rs for rs in owned
                        if rs["metadata"].get("labels", {}).get("pod-template-hash") == digest),
                       None)
        if current is None:
            tmpl = json_copy(template)
            tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = digest
            selector = json_copy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
            rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": f"{name}-{digest}", "namespace": ns,
                               "labels": dict(tmpl["metadata"]["labels"]),
                               "annotations": {"deployment.kubernetes.io/revision":
                                               str(len(owned) + 1)},
                               "ownerReferences": [self.owner_ref(deploy)]},
                  "spec": {"replicas": desired, "selector": selector, "template": tmpl}}
            with contextlib.suppress(ApiError):
                current = self.store.create(self.replicasets, rs, ns)
                self.record_event(deploy, "ScalingReplicaSet",
                                  f"Scaled up replica set {name}-{digest} to {desired}",
                                  component="deployment-controller")
            if current is None:
                return
        elif int(current["spec"].get("replicas", 0)) != desired:
            before = int(current["spec"].get("replicas", 0))
            current["spec"]["replicas"] = desired
            self.store.put(self.replicasets, current)
            direction = "up" if desired > before else "down"
            self.record_event(deploy, "ScalingReplicaSet",
                              f"Scaled {direction} replica set {current['metadata']['name']} "
                              f"from {before} to {desired}", component="deployment-controller")
        new_ready = int((current.get("status") or {}).get("readyReplicas", 0))
        old_sets = [rs for rs in owned if rs["metadata"]["uid"] != current["metadata"]["uid"]]
        for old in old_sets:
            replicas = int(old["spec"].get("replicas", 0))
            if replicas and (new_ready >= desired or self._settling):
                old["spec"]["replicas"] = 0
                self.store.put(self.replicasets, old)
        all_sets = [current, *old_sets]
        replicas = sum(int((rs.get("status") or {}).get("replicas", 0)) for rs in all_sets)
        ready = sum(int((rs.get("status") or {}).get("readyReplicas", 0)) for rs in all_sets)
        updated = int((current.get("status") or {}).get("replicas", 0))
        stamp = now_rfc3339()
        available = ready >= desired
        status = {
            "observedGeneration": deploy["metadata"].get("generation", 1),
            "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, desired - ready),
        }
        old_conditions = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions")
                          or ()}
        conditions = []
        for kind, value, reason, message in (
            ("Available", "True" if available else "False",
             "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "Deployment has minimum availability." if available
             else "Deployment does not have minimum availability."),
            ("Progressing", "True",
             "NewReplicaSetAvailable" if updated == desired and available
             else "ReplicaSetUpdated",
             f'ReplicaSet "{current["metadata"]["name"]}" is progressing.'),
        ):
            old_condition = old_conditions.get(kind)
            transition = (old_condition["lastTransitionTime"]
                          if old_condition and old_condition["status"] == value else stamp)
            update_time = (old_condition["lastUpdateTime"]
                           if old_condition and old_condition.get("reason") == reason else stamp)
            conditions.append({"type": kind, "status": value, "reason": reason,
                               "message": message, "lastTransitionTime": transition,
                               "lastUpdateTime": update_time})
        status["conditions"] = conditions
        for key in ("readyReplicas", "availableReplicas", "unavailableReplicas"):
            if not status[key]:
                status.pop(key)
        prior = dict(deploy.get("status") or {})
        for key in ("readyReplicas", "availableReplicas", "unavailableReplicas"):
            prior.pop(key, None)
        fresh = dict(prior, **status)
        if fresh != deploy.get("status"):
            deploy["status"] = fresh
            self.store.put(self.deployments, deploy)

    def _reconcile_statefulset(self, sts: dict[str, Any]) -> None:
        if sts["metadata"].get("deletionTimestamp"):
            return
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        spec = sts.get("spec", {})
        desired = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        template = spec.get("template") or {}
        pods = {p["metadata"]["name"]: p for p in self.owned(self.pods, sts)}
        for ordinal in range(desired):
            pod_name = f"{name}-{ordinal}"
            existing = pods.get(pod_name)
            if existing is None:
                pod = self.new_pod(sts, template, pod_name,
                                   {"statefulset.kubernetes.io/pod-name": pod_name,
                                    "apps.kubernetes.io/pod-index": str(ordinal)})
                if pod is not None:
                    pods[pod_name] = pod
                    self.record_event(sts, "SuccessfulCreate",
                                      f"create Pod {pod_name} in StatefulSet {name} successful",
                                      component="statefulset-controller")
                    if not parallel and not pod_is_ready(pod):
                        break
                elif not parallel:
                    break
            elif not parallel and not pod_is_ready(existing):
                break
        for pod_name, pod in sorted(pods.items(), reverse=True):
            ordinal = pod_name.rsplit("-", 1)[-1]
            if ordinal.isdigit() and int(ordinal) >= desired and pod_is_active(pod):
                self.store.delete(self.pods, ns, pod_name)
        active = [p for p in pods.values() if pod_is_active(p)
                  and int(p["metadata"]["name"].rsplit("-", 1)[-1]) < desired]
        ready = sum(1 for p in active if pod_is_ready(p))
        self._write_status(self.statefulsets, sts, {
            "observedGeneration": sts["metadata"].get("generation", 1), "replicas": len(active),
            "readyReplicas": ready, "currentReplicas": len(active),
            "updatedReplicas": len(active), "availableReplicas": ready})

    def _reconcile_daemonset(self, ds: dict[str, Any]) -> None:
        if ds["metadata"].get("deletionTimestamp"):
            return
        ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
        template = ds.get("spec", {}).get("template") or {}
        pod_spec = template.get("spec") or {}
        wanted = pod_spec.get("nodeSelector") or {}
        eligible = [n for n in self.nodes.values()
                    if all(n.labels.get(k) == v for k, v in wanted.items())
                    and all(tolerates(pod_spec, taint) for taint in n.no_schedule_taints)]
        pods = [p for p in self.owned(self.pods, ds) if pod_is_active(p)]
        by_node = {p.get("spec", {}).get("nodeName"): p for p in pods}
        for node in eligible:
            if node.name not in by_node and node.ready:
                pod = self.new_pod(ds, template, f"{name}-{random_suffix()}",
                                   node_name=node.name)
                if pod is not None:
                    by_node[node.name] = pod
        names = {n.name for n in eligible}
        for node_name, pod in list(by_node.items()):
            if node_name not in names:
                self.store.delete(self.pods, ns, pod["metadata"]["name"])
                del by_node[node_name]
        ready = sum(1 for p in by_node.values() if pod_is_ready(p))
        self._write_status(self.daemonsets, ds, {
            "desiredNumberScheduled": len(eligible), "currentNumberScheduled": len(by_node),
            "numberReady": ready, "numberAvailable": ready,
            "updatedNumberScheduled": len(by_node), "numberMisscheduled": 0,
            "observedGeneration": ds["metadata"].get("generation", 1)})

    # -- disruption budgets and eviction --------------------------------------------------------

    def pdb_numbers(self, pdb: dict[str, Any]) -> dict[str, int]:
        ns = pdb["metadata"]["namespace"]
        selector = self._selector(pdb)
        if selector is None:
            return {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0,
                    "expectedPods": 0}
        pods = [p for p in self.store.list_objects(self.pods, ns, selector) if pod_is_active(p)]
        healthy = sum(1 for p in pods if pod_is_ready(p))
        expected = self._expected_pods(pods)
        spec = pdb.get("spec", {})
        if spec.get("maxUnavailable") is not None:
            unavailable = self._scaled(spec["maxUnavailable"], expected)
            desired = max(0, expected - unavailable)
        else:
            desired = self._scaled(spec.get("minAvailable", 1), expected)
        return {"currentHealthy": healthy, "desiredHealthy": desired,
                "disruptionsAllowed": max(0, healthy - desired), "expectedPods": expected}

    def _expected_pods(self, pods: list[dict[str, Any]]) -> int:
        """Desired replicas of the workloads owning these pods (as the disruption controller)."""
        total = 0
        seen: set[str] = set()
        bare = 0
        for pod in pods:
            ref = controller_of(pod)
            if ref is None:
                bare += 1
                continue
            if ref["uid"] in seen:
                continue
            seen.add(ref["uid"])
            owner_type = self._owner_type(ref)
            owner = self.store.find(owner_type, pod["metadata"]["namespace"], ref["name"]) \
                if owner_type else None
            if owner is None:
                bare += 1
                continue
            if owner["kind"] == "ReplicaSet":
                parent = controller_of(owner)
                if parent is not None and parent.get("kind") == "Deployment":
                    deploy = self.store.find(self.deployments, owner["metadata"]["namespace"],
                                             parent["name"])
                    if deploy is not None and parent["uid"] not in seen:
                        seen.add(parent["uid"])
                        total += int(deploy["spec"].get("replicas", 1))
                    continue
            if owner["kind"] == "DaemonSet":
                total += int((owner.get("status") or {}).get("desiredNumberScheduled", 0))
            else:
                total += int(owner.get("spec", {}).get("replicas", 1))
        return total + bare

    @staticmethod
    def _scaled(value: Any, expected: int) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return math.ceil(expected * float(value[:-1]) / 100)
        return int(value)

    def _reconcile_pdb(self, pdb: dict[str, Any]) -> None:
        numbers = self.pdb_numbers(pdb)
        numbers["observedGeneration"] = pdb["metadata"].get("generation", 1)
        self._write_status(self.pdbs, pdb, numbers)

    def evict(self, namespace: str, name: str, delete_options: dict[str, Any]) -> None:
        """The Eviction API: refuse with 429 when a PodDisruptionBudget would be violated."""
        pod = self.store.get(self.pods, namespace, name)
        if pod["metadata"].get("deletionTimestamp"):
            return
        labels = pod["metadata"].get("labels") or {}
        if pod_is_ready(pod):
            for pdb in self.store.list_objects(self.pdbs, namespace):
                selector = self._selector(pdb)
                if selector is None or selector.empty or not selector.matches(labels):
                    continue
                if self.pdb_numbers(pdb)["disruptionsAllowed"] < 1:
                    raise ApiError(
                        429, "Cannot evict pod as it would violate the pod's disruption budget.",
                        reason="TooManyRequests",
                        details={"causes": [{"reason": "DisruptionBudget",
                                             "message": f"The disruption budget "
                                                        f"{pdb['metadata']['name']} needs "
                                                        f"{self.pdb_numbers(pdb)['desiredHealthy']}"
                                                        " healthy pods"}]},
                        retry_after=1)
        grace = delete_options.get("gracePeriodSeconds")
        self.store.delete(self.pods, namespace, name, grace_period=grace,
                          preconditions=delete_options.get("preconditions"))
        self.record_event(pod, "Killing", "Stopping container (evicted)", component="kubelet")

    # -- services --------------------------------------------------------------------------------

    def _reconcile_service(self, svc: dict[str, Any]) -> None:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        spec = svc.setdefault("spec", {})
        if not spec.get("clusterIP") and spec.get("type", "ClusterIP") != "ExternalName":
            digest = int(hashlib.sha256(f"{ns}/{name}".encode()).hexdigest()[:6], 16)
            spec["clusterIP"] = f"10.96.{digest // 256 % 256}.{digest % 254 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("type", "ClusterIP")
            self.store.put(self.services, svc)
        selector = spec.get("selector")
        if not selector:
            return
        ready: list[dict[str, Any]] = []
        not_ready: list[dict[str, Any]] = []
        for pod in self.store.list_objects(self.pods, ns, LabelSelector.from_labels(selector)):
            ip = pod.get("status", {}).get("podIP")
            if not ip or not pod_is_active(pod):
                continue
            address = {"ip": ip, "nodeName": pod["spec"].get("nodeName"),
                       "targetRef": {"kind": "Pod", "namespace": ns,
                                     "name": pod["metadata"]["name"],
                                     "uid": pod["metadata"]["uid"]}}
            (ready if pod_is_ready(pod) else not_ready).append(address)
        subset: dict[str, Any] = {"ports": [
            {"name": p.get("name", ""), "port": p.get("targetPort", p.get("port")),
             "protocol": p.get("protocol", "TCP")} for p in spec.get("ports") or ()]}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": name, "namespace": ns, "labels": dict(
                         svc["metadata"].get("labels") or {})},
                     "subsets": [subset] if ready or not_ready else []}
        existing = self.store.find(self.endpoints, ns, name)
        if existing is None:
            self.store.create(self.endpoints, endpoints, ns)
        elif existing.get("subsets") != endpoints["subsets"]:
            existing["subsets"] = endpoints["subsets"]
            self.store.put(self.endpoints, existing)

    # -- custom resource definitions ----------------------------------------------------------

    def _sync_crd(self, event: str, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        group = spec.get("group", "")
        names = spec.get("names") or {}
        plural = names.get("plural", "")
        for version in spec.get("versions") or ():
            existing = self.catalogue.get(group, version.get("name", ""), plural)
            if event == "DELETED" or crd["metadata"].get("deletionTimestamp"):
                if existing is not None:
                    self.catalogue.remove(group, version["name"], plural)
                    self.store.drop_type(existing)
                continue
            if not version.get("served", True):
                continue
            subresources = tuple(k for k in ("status", "scale")
                                 if k in (version.get("subresources") or {}))
            columns = tuple(PrinterColumn(name=c.get("name", ""), type=c.get("type", "string"),
                                          json_path=c.get("jsonPath", ""),
                                          description=c.get("description", ""),
                                          priority=int(c.get("priority", 0)),
                                          format=c.get("format", ""))
                            for c in version.get("additionalPrinterColumns") or ())
            self.catalogue.add(ResourceType(
                group=group, version=version["name"], plural=plural, kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", ""),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources, printer_columns=columns,
                schema=(version.get("schema") or {}).get("openAPIV3Schema")))
        if event != "DELETED" and not crd["metadata"].get("deletionTimestamp"):
            status = crd.get("status") or {}
            if not any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in status.get("conditions") or ()):
                asyncio.get_event_loop().call_soon(self._establish_crd, crd["metadata"]["name"])

    def _establish_crd(self, name: str) -> None:
        crd = self.store.find(self.crds, "", name)
        if crd is None:
            return
        stamp = now_rfc3339()
        crd["status"] = {
            "acceptedNames": crd.get("spec", {}).get("names", {}),
            "storedVersions": [v["name"] for v in crd.get("spec", {}).get("versions") or ()
                               if v.get("storage")],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": stamp},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": stamp},
            ],
        }
        self.store.put(self.crds, crd)
