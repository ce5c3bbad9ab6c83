"""`FakeCluster`: an in-process `Cluster` for unit tests, after client-go's fake clientset.

Unit tests of the runner, fault holding and actions need a cluster that answers in
microseconds, in the test's own process, and that a test can bend (a 429 here, an exec
that fails there). pystol_sim is a whole API server behind HTTP; it stays the cluster of
the integration tests. This is the other half, built like client-go's fake clientset:

- an **object tracker** holds objects by (resource, namespace, name) as plain dicts,
  gives each write the next resourceVersion and keeps the write as a watch event, so a
  watch from a list's resourceVersion sees exactly what changed after that list;
  lists filter by label and field selectors;
- every call becomes a `Request` (verb, resource, namespace, name, body, options),
  recorded in `fake.requests`, and runs through the **reactors** registered for its
  verb and resource, newest prepended first. A reactor returns a result (the call
  returns it), raises (the call raises it: `ClusterError(..., 429)` for a PDB refusal),
  or returns `PASS` to let the next reactor, and finally the tracker, handle it;
- a tiny **replica controller** (on unless `controllers=False`): after every write, a
  Deployment's ReplicaSet follows its replicas, and a ReplicaSet has that many pods,
  new ones created running and ready on the schedulable node with the fewest pods. So a
  killed or evicted pod comes back and a workload's recovery can be observed.

What it leaves out, on purpose: graceful deletion (pods go at once, never terminating),
admission, defaulting, PodDisruptionBudgets (use a reactor), a kubelet (readiness
changes only through `set_pod_ready`, `restart_container` or a reactor), StatefulSet
and DaemonSet controllers. Resources are the plural names client-go uses ("pods",
"nodes", "deployments", ...), subresources are "pods/eviction", "pods/exec" and
"deployments/scale" (or "statefulsets/scale"). A list reactor returns the list of
objects (`list_pods` adds the resourceVersion itself).
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pystol_worker.core.model import TargetRef
from pystol_worker.kube.cluster_access import ClusterError, NotFound, event_body
from pystol_worker.kube.objects import selector_requirements

Obj = dict[str, Any]

RESOURCES = {"Pod": "pods", "Node": "nodes", "Deployment": "deployments",
             "ReplicaSet": "replicasets", "StatefulSet": "statefulsets",
             "DaemonSet": "daemonsets", "NetworkPolicy": "networkpolicies", "Event": "events",
             "Service": "services", "Endpoints": "endpoints",
             "PodDisruptionBudget": "poddisruptionbudgets"}
KINDS = {resource: kind for kind, resource in RESOURCES.items()}
API_VERSIONS = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1",
                "DaemonSet": "apps/v1", "NetworkPolicy": "networking.k8s.io/v1",
                "PodDisruptionBudget": "policy/v1"}
CLUSTER_SCOPED = {"nodes"}
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")
#: What `get_object` reads (k8s probes): core_model.K8S_PROBE_KINDS.
OBJECT_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Service",
                "Endpoints", "PodDisruptionBudget", "Node")


class _Pass:
    def __repr__(self) -> str:
        return "PASS"


PASS: Any = _Pass()
"""What a reactor returns to let the next reactor (and finally the tracker) handle a call."""


@dataclass
class Request:
    """One call made to the fake: what reactors see and `fake.requests` records."""

    verb: str  # get, list, watch, create, patch, delete
    resource: str  # pods, nodes, ..., pods/eviction, pods/exec, deployments/scale
    namespace: str | None = None
    name: str | None = None
    body: Any = None  # the object created, the patch, the exec command
    options: dict[str, Any] = field(default_factory=dict)  # selectors, uid, container, ...


Reactor = Callable[[Request], Any]


# -- selectors -----------------------------------------------------------------------------------

_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>.*)\)$")
_EQUALITY = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$")


def labels_match(labels: dict[str, str], selector: str | None) -> bool:
    """Kubernetes label selector semantics (`!=` and `notin` match an absent label)."""
    for requirement in selector_requirements(selector or ""):
        if found := _SET.match(requirement):
            values = {v.strip() for v in found["values"].split(",")}
            if (labels.get(found["key"]) in values) != (found["op"] == "in"):
                return False
        elif found := _EQUALITY.match(requirement):
            equal = labels.get(found["key"]) == found["value"].strip()
            if equal != (found["op"] != "!="):
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def _field(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def fields_match(obj: Obj, selector: str | None) -> bool:
    """Field selectors as the API server takes them: `path=value`, `path!=value`."""
    for requirement in selector_requirements(selector or ""):
        found = _EQUALITY.match(requirement)
        if found is None:
            raise ClusterError(f"invalid field selector {requirement!r}", 400, "BadRequest")
        equal = _field(obj, found["key"]) == found["value"].strip()
        if equal != (found["op"] != "!="):
            return False
    return True


# -- strategic merge patch (the part actions use) ------------------------------------------------

def merge_patch(target: Obj, patch: Obj) -> Obj:
    """Maps merge key by key and None deletes a key; lists of named maps (containers)
    merge element by element on `name`; any other list is replaced."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        elif isinstance(value, list) and _named(value) and _named(result.get(key)):
            merged = {item["name"]: item for item in result[key]}
            for item in value:
                merged[item["name"]] = merge_patch(merged.get(item["name"], {}), item)
            result[key] = list(merged.values())
        else:
            result[key] = copy.deepcopy(value)
    return result


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


# -- the object tracker --------------------------------------------------------------------------

@dataclass
class _Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: str
    obj: Obj


class ObjectTracker:
    """Objects by (resource, namespace, name), a resourceVersion counter, and the log of
    every write as watch events (a watch replays the log from its resourceVersion)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.log: list[_Event] = []
        self.rv = 0  # the resourceVersion of the last write
        self.oldest_rv = 0  # a watch from before this is told 410 Gone

    def _write(self, resource: str, obj: Obj, event: str) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append(_Event(self.rv, event, resource, copy.deepcopy(obj)))
        self.changed.notify_all()
        return copy.deepcopy(obj)

    @staticmethod
    def _key(resource: str, namespace: str | None, name: str) -> tuple[str, str, str]:
        return resource, "" if resource in CLUSTER_SCOPED else namespace or "", name

    @staticmethod
    def _not_found(resource: str, name: str) -> NotFound:
        return NotFound(f"Kubernetes API answered 404: {resource} \"{name}\" not found", 404,
                        "NotFound")

    def get(self, resource: str, namespace: str | None, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get(self._key(resource, namespace, name))
            if obj is None:
                raise self._not_found(resource, name)
            return copy.deepcopy(obj)

    def select(self, resource: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None
             ) -> list[Obj]:
        with self.lock:
            return [copy.deepcopy(obj) for (res, ns, _), obj in sorted(self.objects.items())
                    if res == resource and (namespace is None or ns == namespace)
                    and labels_match(obj["metadata"].get("labels") or {}, label_selector)
                    and fields_match(obj, field_selector)]

    def create(self, resource: str, namespace: str | None, obj: Obj) -> Obj:
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            if resource not in CLUSTER_SCOPED:
                meta["namespace"] = namespace or meta.get("namespace") or "default"
            if not meta.get("name") and meta.get("generateName"):
                # Drawn again while taken, as kube-apiserver does (RetryGenerateName): a
                # 5-character suffix collides often enough to fail a test now and then.
                while True:
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                    if self._key(resource, meta.get("namespace"), meta["name"]) \
                            not in self.objects:
                        break
            key = self._key(resource, meta.get("namespace"), meta["name"])
            if key in self.objects:
                raise ClusterError(f"Kubernetes API answered 409: {resource} "
                                   f"\"{meta['name']}\" already exists", 409, "AlreadyExists")
            kind: str = KINDS.get(resource) or obj.get("kind") or ""
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", API_VERSIONS.get(kind, "v1"))
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp",
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self.objects[key] = obj
            return self._write(resource, obj, "ADDED")

    def update(self, resource: str, obj: Obj) -> Obj:
        with self.lock:
            meta = obj["metadata"]
            key = self._key(resource, meta.get("namespace"), meta["name"])
            if key not in self.objects:
                raise self._not_found(resource, meta["name"])
            obj = copy.deepcopy(obj)
            self.objects[key] = obj
            return self._write(resource, obj, "MODIFIED")

    def delete(self, resource: str, namespace: str | None, name: str) -> Obj:
        with self.lock:
            obj = self.get(resource, namespace, name)
            del self.objects[self._key(resource, namespace, name)]
            return self._write(resource, obj, "DELETED")

    def events_after(self, rv: int, deadline: float) -> list[_Event]:
        """The writes after `rv`, waiting for one until `deadline` (monotonic)."""
        with self.changed:
            while self.rv <= rv:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self.changed.wait(remaining)
            return [event for event in self.log if event.rv > rv]

    def compact(self) -> None:
        """Forget the event log, as etcd compaction does: older watches get 410 Gone."""
        with self.lock:
            self.log.clear()
            self.oldest_rv = self.rv


# -- the fake cluster ----------------------------------------------------------------------------

def _owner(obj: Obj) -> Obj | None:
    return next((ref for ref in obj["metadata"].get("ownerReferences") or ()
                 if ref.get("controller")), None)


def _owner_ref(obj: Obj) -> Obj:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"], "controller": True}


def _container_statuses(containers: list[Obj], ready: bool) -> list[Obj]:
    return [{"name": c["name"], "image": c.get("image", ""), "ready": ready,
             "restartCount": 0, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}
            for c in containers]


def pod_status(containers: list[Obj], ready: bool, phase: str = "Running") -> Obj:
    return {"phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": _container_statuses(containers, ready)}


class FakeCluster:
    """A `Cluster` over an `ObjectTracker`, with per-verb reactors (see the module doc)."""

    def __init__(self, controllers: bool = True, watch_seconds: float = 0.5) -> None:
        self.tracker = ObjectTracker()
        self.controllers = controllers
        # A watch ends after this long at most (a server may end one any time); watchers
        # then watch again, so they notice their stop flag quickly in tests.
        self.watch_seconds = watch_seconds
        self.exec_result: tuple[int, str, str] = (0, "", "")
        self.requests: list[Request] = []
        self._reactors: list[tuple[str, str, Reactor]] = []

    # -- reactors --------------------------------------------------------------------------------

    def prepend_reactor(self, verb: str, resource: str, reactor: Reactor) -> None:
        """Run `reactor` first for calls of `verb` on `resource` ("*" matches any)."""
        self._reactors.insert(0, (verb, resource, reactor))

    def add_reactor(self, verb: str, resource: str, reactor: Reactor) -> None:
        """Run `reactor` after the reactors already registered (before the tracker)."""
        self._reactors.append((verb, resource, reactor))

    def _handle(self, request: Request) -> Any:
        self.requests.append(request)
        for verb, resource, reactor in list(self._reactors):
            if verb in ("*", request.verb) and resource in ("*", request.resource):
                result = reactor(request)
                if result is not PASS:
                    return result
        return self.apply(request)

    def _object(self, request: Request) -> Obj:
        result: Obj = self._handle(request)
        return result

    def _objects(self, request: Request) -> list[Obj]:
        result: list[Obj] = self._handle(request)
        return result

    def called(self, verb: str, resource: str) -> list[Request]:
        """The recorded requests of one verb on one resource, oldest first."""
        return [r for r in self.requests if r.verb == verb and r.resource == resource]

    # -- the tracker's default answers -----------------------------------------------------------

    def apply(self, request: Request) -> Any:
        """What the cluster does with a request when no reactor handled it; a reactor may
        call this itself to act after the default (e.g. make a patched pod unready)."""
        verb, resource, ns, name = request.verb, request.resource, request.namespace, \
            request.name
        options, tracker = request.options, self.tracker
        if verb == "get":
            return tracker.get(resource, ns, name or "")
        if verb == "list":
            return tracker.select(resource, ns, options.get("label_selector"),
                                  options.get("field_selector"))
        if verb == "watch":
            return self._watch(ns or "", options["label_selector"],
                               options["resource_version"], options["timeout_seconds"])
        if resource == "pods/exec":
            pod = tracker.get("pods", ns, name or "")
            names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or ()]
            if options["container"] not in names:
                raise ClusterError(f"Kubernetes API answered 400: container "
                                   f"{options['container']} is not valid for pod {name}",
                                   400, "BadRequest")
            return self.exec_result
        with tracker.lock:
            result = self._write(request)
            if self.controllers:
                self.reconcile()
            return result

    def _write(self, request: Request) -> Any:
        verb, resource, ns, name = request.verb, request.resource, request.namespace, \
            request.name or ""
        tracker = self.tracker
        if verb == "create" and resource == "pods/eviction":
            tracker.delete("pods", ns, name)
            return None
        if verb == "create":
            return tracker.create(resource, ns, request.body)
        if verb == "delete":
            current = tracker.get(resource, ns, name)
            uid = request.options.get("uid")
            if uid and current["metadata"].get("uid") != uid:
                raise ClusterError(f"Kubernetes API answered 409: Precondition failed: UID "
                                   f"in precondition: {uid}, UID in object meta: "
                                   f"{current['metadata'].get('uid')}", 409, "Conflict")
            tracker.delete(resource, ns, name)
            return True
        if verb == "patch" and resource.endswith("/scale"):
            resource = resource.removesuffix("/scale")
            current = tracker.get(resource, ns, name)
            current["spec"]["replicas"] = request.body["spec"]["replicas"]
            return tracker.update(resource, current)
        if verb == "patch":
            current = tracker.get(resource, ns, name)
            body = copy.deepcopy(request.body)
            meta = body.get("metadata") or {}
            for precondition in ("resourceVersion", "uid"):
                wanted = meta.pop(precondition, None)
                if wanted is not None and wanted != current["metadata"].get(precondition):
                    raise ClusterError(f"Kubernetes API answered 409: Operation cannot be "
                                       f"fulfilled on {resource} \"{name}\": the object has "
                                       f"been modified ({precondition})", 409, "Conflict")
            return tracker.update(resource, merge_patch(current, body))
        raise ClusterError(f"the fake cluster cannot {verb} {resource}", 405, "MethodNotAllowed")

    def _watch(self, namespace: str, label_selector: str, resource_version: str,
               timeout_seconds: float) -> Iterator[tuple[str, Obj]]:
        deadline = time.monotonic() + min(timeout_seconds, self.watch_seconds)
        if resource_version in ("", "0"):
            with self.tracker.lock:
                since = self.tracker.rv
                current = self.tracker.select("pods", namespace, label_selector)
            for pod in current:
                yield "ADDED", pod
        else:
            since = int(resource_version)
        if since < self.tracker.oldest_rv:
            yield "ERROR", {"kind": "Status", "code": 410, "reason": "Expired",
                            "message": f"too old resource version: {since}"}
            return
        while True:
            events = self.tracker.events_after(since, deadline)
            if not events:
                return
            for event in events:
                since = event.rv
                meta = event.obj["metadata"]
                if event.resource == "pods" and meta.get("namespace") == namespace \
                        and labels_match(meta.get("labels") or {}, label_selector):
                    yield event.type, copy.deepcopy(event.obj)

    # -- the replica controller ------------------------------------------------------------------

    def reconcile(self) -> None:
        """Deployments -> their ReplicaSet's replicas -> that many pods (see module doc)."""
        tracker = self.tracker
        with tracker.lock:
            for deployment in tracker.select("deployments"):
                for rs in self._owned("replicasets", deployment):
                    if rs["spec"].get("replicas") != deployment["spec"].get("replicas", 1):
                        rs["spec"]["replicas"] = deployment["spec"].get("replicas", 1)
                        tracker.update("replicasets", rs)
            for rs in tracker.select("replicasets"):
                pods = [p for p in self._owned("pods", rs)
                        if not p["metadata"].get("deletionTimestamp")]
                want = int(rs["spec"].get("replicas", 1))
                for _ in range(want - len(pods)):
                    self._create_pod_of(rs)
                newest_first = sorted(pods, key=lambda p: -int(p["metadata"]["resourceVersion"]))
                for pod in newest_first[:max(0, len(pods) - want)]:
                    tracker.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _owned(self, resource: str, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]
        return [obj for obj in self.tracker.select(resource, owner["metadata"]["namespace"])
                if (_owner(obj) or {}).get("uid") == uid]

    def _schedulable_node(self) -> str | None:
        """The schedulable node with the fewest pods (a cordoned node takes none)."""
        nodes: list[str] = [n["metadata"]["name"] for n in self.tracker.select("nodes")
                            if not (n.get("spec") or {}).get("unschedulable")]
        if not nodes:
            return None
        load = {name: 0 for name in nodes}
        for pod in self.tracker.select("pods"):
            node = (pod.get("spec") or {}).get("nodeName")
            if node in load:
                load[node] += 1
        return min(nodes, key=lambda name: (load[name], name))

    def _create_pod_of(self, rs: Obj) -> Obj:
        template = copy.deepcopy(rs["spec"]["template"])
        node = self._schedulable_node()
        spec = template.get("spec") or {}
        containers = spec.get("containers") or []
        if node is not None:
            spec["nodeName"] = node
        return self.tracker.create("pods", rs["metadata"]["namespace"], {
            "metadata": {"generateName": rs["metadata"]["name"] + "-",
                         "labels": (template.get("metadata") or {}).get("labels") or {},
                         "ownerReferences": [_owner_ref(rs)]},
            "spec": spec,
            "status": pod_status(containers, ready=node is not None,
                                 phase="Running" if node else "Pending")})

    # -- building a cluster, and looking at it (for tests) ---------------------------------------

    def add(self, obj: Obj) -> Obj:
        """Store an object as given (its `kind` says where); returns it as stored."""
        resource = RESOURCES[obj["kind"]]
        return self.tracker.create(resource, obj["metadata"].get("namespace"), obj)

    def add_node(self, name: str, labels: dict[str, str] | None = None,
                 unschedulable: bool = False, taints: list[Obj] | None = None) -> Obj:
        spec: Obj = {"taints": taints} if taints else {}
        if unschedulable:
            spec["unschedulable"] = True
        return self.add({"kind": "Node", "metadata": {"name": name, "labels": labels or {}},
                         "spec": spec, "status": {"conditions": [{"type": "Ready",
                                                                  "status": "True"}]}})

    def add_deployment(self, namespace: str, name: str, replicas: int = 3,
                       labels: dict[str, str] | None = None,
                       containers: list[Obj] | None = None) -> Obj:
        """A Deployment, its ReplicaSet and `replicas` running, ready pods."""
        labels = labels or {"app": name}
        containers = containers or [{"name": "app", "image": f"lab/{name}:1"}]
        template = {"metadata": {"labels": labels}, "spec": {"containers": containers}}
        deployment = self.add({"kind": "Deployment",
                               "metadata": {"name": name, "namespace": namespace,
                                            "labels": labels},
                               "spec": {"replicas": replicas,
                                        "selector": {"matchLabels": labels},
                                        "template": template},
                               "status": {"replicas": replicas, "readyReplicas": replicas}})
        rs_labels = {**labels, "pod-template-hash": "5d8f7c"}
        self.add({"kind": "ReplicaSet",
                  "metadata": {"name": f"{name}-5d8f7c", "namespace": namespace,
                               "labels": rs_labels, "ownerReferences": [_owner_ref(deployment)]},
                  "spec": {"replicas": replicas, "selector": {"matchLabels": rs_labels},
                           "template": {**template, "metadata": {"labels": rs_labels}}}})
        with self.tracker.lock:
            self.reconcile()
        return deployment

    def add_pod(self, namespace: str, name: str, labels: dict[str, str] | None = None,
                node: str | None = None, containers: list[Obj] | None = None,
                ready: bool = True) -> Obj:
        """A pod no controller manages."""
        containers = containers or [{"name": "app", "image": "lab/app:1"}]
        spec: Obj = {"containers": containers}
        if node:
            spec["nodeName"] = node
        return self.add({"kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                     "labels": labels or {}},
                         "spec": spec, "status": pod_status(containers, ready)})

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The object as stored now, or None."""
        try:
            return self.tracker.get(RESOURCES[kind], namespace, name)
        except NotFound:
            return None

    def objects(self, kind: str, namespace: str | None = None,
                label_selector: str | None = None) -> list[Obj]:
        """The objects of one kind as stored now (copies), optionally filtered."""
        return self.tracker.select(RESOURCES[kind], namespace, label_selector)

    def events(self, reason: str | None = None) -> list[Obj]:
        """The Events posted (by `post_event`), optionally of one reason."""
        return [e for e in self.objects("Event") if reason is None or e.get("reason") == reason]

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> Obj:
        """What a kubelet's readiness probe would do: flip the pod's and containers' Ready."""
        with self.tracker.lock:
            pod = self.tracker.get("pods", namespace, name)
            status = pod.setdefault("status", {})
            status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
            for container in status.get("containerStatuses") or ():
                container["ready"] = ready
            return self.tracker.update("pods", pod)

    def restart_container(self, namespace: str, name: str, container: str) -> Obj:
        """What a kubelet does after a container's process died: restart it (ready again)."""
        with self.tracker.lock:
            pod = self.tracker.get("pods", namespace, name)
            for status in pod["status"].get("containerStatuses") or ():
                if status["name"] == container:
                    status["restartCount"] = int(status.get("restartCount") or 0) + 1
                    status["ready"] = True
                    status["state"] = {"running": {"startedAt": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            return self.tracker.update("pods", pod)

    # -- the Cluster protocol --------------------------------------------------------------------

    def list_pods(self, namespace: str, label_selector: str | None = None,
                  field_selector: str | None = None, *,
                  project: Callable[[Obj], Obj] | None = None) -> tuple[list[Obj], str]:
        # Under the tracker's lock, so that the resourceVersion is exactly this list's and a
        # watch from it misses no write (reactors run under it too: they must not wait for
        # another thread that writes).
        with self.tracker.lock:
            pods = self._objects(Request("list", "pods", namespace, options={
                "label_selector": label_selector, "field_selector": field_selector}))
            version = str(self.tracker.rv)
        return (pods if project is None else [project(pod) for pod in pods]), version

    def list_all_pods(self, field_selector: str) -> list[Obj]:
        return self._objects(Request("list", "pods", None,
                                     options={"field_selector": field_selector}))

    def get_pod(self, namespace: str, name: str) -> Obj:
        return self._object(Request("get", "pods", namespace, name))

    def watch_pods(self, namespace: str, label_selector: str, resource_version: str,
                   timeout_seconds: int) -> Iterator[tuple[str, Obj]]:
        events: Iterable[tuple[str, Obj]] = self._handle(Request(
            "watch", "pods", namespace, options={"label_selector": label_selector,
                                                 "resource_version": resource_version,
                                                 "timeout_seconds": timeout_seconds}))
        return iter(events)

    def delete_pod(self, namespace: str, name: str, uid: str | None,
                   grace_period: int | None) -> None:
        self._handle(Request("delete", "pods", namespace, name,
                             options={"uid": uid, "grace_period": grace_period}))

    def evict(self, namespace: str, name: str, grace_period: int | None = None) -> None:
        self._handle(Request("create", "pods/eviction", namespace, name,
                             options={"grace_period": grace_period}))

    def exec_in_pod(self, namespace: str, name: str, container: str, command: list[str],
                    timeout: float = 30.0) -> tuple[int, str, str]:
        code, out, err = self._handle(Request("create", "pods/exec", namespace, name,
                                              body=command, options={"container": container,
                                                                     "timeout": timeout}))
        return int(code), str(out), str(err)

    def list_nodes(self, label_selector: str | None = None) -> list[Obj]:
        return self._objects(Request("list", "nodes",
                                     options={"label_selector": label_selector}))

    def get_node(self, name: str) -> Obj:
        return self._object(Request("get", "nodes", None, name))

    def get_workload(self, kind: str, namespace: str, name: str) -> Obj:
        if kind not in WORKLOAD_KINDS:
            raise ClusterError(f"unsupported workload kind {kind}")
        return self._object(Request("get", RESOURCES[kind], namespace, name))

    def list_workloads(self, kind: str, namespace: str, label_selector: str | None
                       ) -> list[Obj]:
        return self._objects(Request("list", RESOURCES[kind], namespace,
                                     options={"label_selector": label_selector}))

    def get_object(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        if kind not in OBJECT_KINDS:
            raise ClusterError(f"unsupported kind {kind}")
        try:
            return self._object(Request("get", RESOURCES[kind], namespace, name))
        except NotFound:
            return None

    def list_pdbs(self, namespace: str) -> list[Obj]:
        return self._objects(Request("list", "poddisruptionbudgets", namespace))

    def set_scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        self._handle(Request("patch", RESOURCES[kind] + "/scale", namespace, name,
                             body={"spec": {"replicas": replicas}}))

    def patch(self, kind: str, namespace: str | None, name: str, body: Any) -> Obj:
        return self._object(Request("patch", RESOURCES[kind], namespace, name, body=body))

    def create(self, kind: str, namespace: str, body: Obj) -> Obj:
        return self._object(Request("create", RESOURCES[kind], namespace, body=body))

    def delete(self, kind: str, namespace: str, name: str, grace_period: int | None = 0
               ) -> bool:
        try:
            self._handle(Request("delete", RESOURCES[kind], namespace, name,
                                 options={"grace_period": grace_period}))
        except NotFound:
            return False
        return True

    def post_event(self, target: TargetRef, api_version: str, reason: str, message: str,
                   event_type: str = "Normal") -> None:
        body = event_body(target, api_version, reason, message, event_type)
        self._handle(Request("create", "events", body["metadata"]["namespace"], body=body))
