"""The kubelets of every node at once: a pod's life from scheduled to removed.

A bound pod starts after `sim.pystol.org/start-seconds`, becomes ready after
`ready-seconds`, and on deletion terminates within its grace period. A pod
whose restartPolicy is Never or OnFailure and which carries
`sim.pystol.org/run-seconds` (Job pods get a default) exits after that long
with `sim.pystol.org/exit-code` (default 0): Succeeded, Failed, or (OnFailure
and non-zero) restarted in place, as a kubelet does.

What happened to each pod (created, scheduled, started, ready, deleted) is kept
as ground truth, so benchmarks can compare what Pystol measures with reality.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pystol_sim.controllers.manager import Controller, ControllerManager
from pystol_sim.controllers.node import NODE_EVICTION_SECONDS, NodeController
from pystol_sim.controllers.objects import (
    annotation_seconds,
    controller_of,
    pod_is_ready,
    put_condition,
)
from pystol_sim.controllers.scheduler import Scheduler
from pystol_sim.resources import ResourceType
from pystol_sim.store import now_rfc3339

ANNOTATION_START = "sim.pystol.org/start-seconds"
ANNOTATION_READY = "sim.pystol.org/ready-seconds"
ANNOTATION_TERMINATE = "sim.pystol.org/terminate-seconds"
ANNOTATION_RUN = "sim.pystol.org/run-seconds"
ANNOTATION_EXIT_CODE = "sim.pystol.org/exit-code"
JOB_RUN_SECONDS = 3.0  # how long a Job's pod runs when its template does not say
KUBELET_VERSION = "v1.35.0-pystol-sim"


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


def run_seconds(pod: dict[str, Any]) -> float | None:
    """How long this pod's containers run before exiting, or None for a server that
    runs until stopped. Only pods that are not restarted on success ever finish."""
    if pod.get("spec", {}).get("restartPolicy", "Always") == "Always":
        return None
    ref = controller_of(pod) or {}
    default = JOB_RUN_SECONDS if ref.get("kind") == "Job" else None
    annotations = pod["metadata"].get("annotations") or {}
    if ANNOTATION_RUN not in annotations:
        return default
    return annotation_seconds(pod, ANNOTATION_RUN, default or JOB_RUN_SECONDS)


def exit_code(pod: dict[str, Any]) -> int:
    value = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_EXIT_CODE, "0")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


class Kubelet(Controller):
    resource = "/pods"

    def __init__(self, manager: ControllerManager) -> None:
        super().__init__(manager)
        self.pods = manager.type("", "v1", "pods")
        self.nodes_t = manager.type("", "v1", "nodes")
        self.truth: dict[str, PodTruth] = {}
        self._ip = itertools.count(2)
        self._killed: set[str] = set()  # uids of pods whose kill was already announced
        self._created_images: dict[str, dict[str, str]] = {}  # pod uid -> container -> image

    @property
    def timings(self) -> Any:
        return self.manager.timings

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        if rtype.key != self.resource:
            return
        self._track(event, obj)
        self.manager.mark(rtype, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    def _track(self, event: str, pod: dict[str, Any]) -> None:
        new_node = pod.get("spec", {}).get("nodeName") if event != "DELETED" else None
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

    def reconcile(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        spec = pod.setdefault("spec", {})
        status = pod.setdefault("status", {})
        if meta.get("deletionTimestamp"):
            self._terminate(pod)
            return
        if not spec.get("nodeName"):
            # A finished pod is never scheduled (as kube-scheduler skips terminal pods):
            # binding it would move it back to Pending, past quota admission.
            if status.get("phase") not in ("Succeeded", "Failed"):
                self._schedule(pod)
            return
        node = self.manager.get(NodeController).nodes.get(spec["nodeName"])
        ns, name = meta["namespace"], meta["name"]
        if node is None or not node.ready:
            if status.get("phase") == "Running" and pod_is_ready(pod):
                self.set_ready(pod, False, "NodeNotReady")
                self.store.put(self.pods, pod)
            if node is None:
                self.store.delete(self.pods, ns, name, grace_period=0)
            else:
                self.manager.later(NODE_EVICTION_SECONDS, self.nodes_t, "", spec["nodeName"])
            return
        phase = status.get("phase") or "Pending"
        if phase == "Pending":
            self._start(pod)
        elif phase == "Running":
            self._run(pod)

    def _terminate(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
        ns, name = meta["namespace"], meta["name"]
        if meta["uid"] not in self._killed and spec.get("nodeName"):
            self._killed.add(meta["uid"])
            for container in spec.get("containers") or ():
                self.manager.record_event(pod, "Killing",
                                          f"Stopping container {container.get('name')}",
                                          component="kubelet")
        grace = meta.get("deletionGracePeriodSeconds") or 0
        if grace <= 0 or status.get("phase") in ("Pending", "Succeeded", "Failed") \
                or not spec.get("nodeName"):
            self.store.remove(self.pods, ns, name)
            return
        speed = self.manager.speed
        terminate = min(float(grace), annotation_seconds(pod, ANNOTATION_TERMINATE,
                                                         self.timings.terminate_seconds))
        record = self.truth.get(meta["uid"])
        deleted_at = record.deleted if record and record.deleted else time.time()
        due = deleted_at + terminate / speed
        if self.manager.settling or time.time() + 1e-3 >= due:
            self.store.remove(self.pods, ns, name)
        else:
            if pod_is_ready(pod):
                self.set_ready(pod, False, "ContainersNotReady")
                self.store.put(self.pods, pod)
            self.manager.later((due - time.time()) * speed, self.pods, ns, name)

    def _schedule(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
        ns, name = meta["namespace"], meta["name"]
        if not status.get("phase"):
            status["phase"] = "Pending"
        scheduler = self.manager.get(Scheduler)
        if scheduler.bind(pod):
            self.manager.record_event(pod, "Scheduled",
                                      f"Successfully assigned {ns}/{name} to {spec['nodeName']}",
                                      component="default-scheduler")
            self.fill_pending_status(pod)
            self.store.put(self.pods, pod)
            self.manager.later(annotation_seconds(pod, ANNOTATION_START,
                                                  self.timings.start_seconds),
                               self.pods, ns, name)
        elif pod != self.store.find(self.pods, ns, name):
            self.store.put(self.pods, pod)
            self.manager.record_event(pod, "FailedScheduling", "0/"
                                      f"{len(scheduler.nodes.nodes)} nodes are available: "
                                      "no node fits",
                                      type_="Warning", component="default-scheduler")

    def _start(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
        ns, name = meta["namespace"], meta["name"]
        record = self.truth.get(meta["uid"])
        now = time.time()
        start = annotation_seconds(pod, ANNOTATION_START, self.timings.start_seconds)
        since = record.scheduled if record and record.scheduled else now
        due = since + start / self.manager.speed
        if self.manager.settling or now + 1e-3 >= due:
            self.fill_running_status(pod)
            self.manager.record_event(pod, "Started", "Started container "
                                      + spec.get("containers", [{}])[0].get("name", "app"),
                                      component="kubelet")
            self.store.put(self.pods, pod)
            self.manager.later(annotation_seconds(pod, ANNOTATION_READY,
                                                  self.timings.ready_seconds),
                               self.pods, ns, name)
        else:
            if not status.get("containerStatuses"):
                self.fill_pending_status(pod)
                self.store.put(self.pods, pod)
            self.manager.later((due - now) * self.manager.speed, self.pods, ns, name)

    def _run(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        now = time.time()
        speed = self.manager.speed
        if self._restart_swapped_images(pod):
            self.store.put(self.pods, pod)
            self.manager.later(annotation_seconds(pod, ANNOTATION_READY,
                                                  self.timings.ready_seconds),
                               self.pods, ns, name)
            return
        runs_for = run_seconds(pod)
        if runs_for is not None:
            started = self._last_start(pod) or now
            end = started + runs_for / speed
            if self.manager.settling or now + 1e-3 >= end:
                self._exit(pod, exit_code(pod))
                return
            self.manager.later((end - now) * speed, self.pods, ns, name)
        if not pod_is_ready(pod):
            if self._unusable(pod):
                return  # a pause image where the app was: running, never ready
            ready = annotation_seconds(pod, ANNOTATION_READY, self.timings.ready_seconds)
            since = self._last_start(pod) or now
            due = since + ready / speed
            if self.manager.settling or now + 1e-3 >= due:
                self.set_ready(pod, True)
                self.store.put(self.pods, pod)
            else:
                self.manager.later((due - now) * speed, self.pods, ns, name)

    def _exit(self, pod: dict[str, Any], code: int) -> None:
        """The containers' main processes exited with `code`: finish or restart the pod."""
        if code and pod["spec"].get("restartPolicy") == "OnFailure":
            for cs in pod["status"].get("containerStatuses") or ():
                self.restart_container(pod["metadata"]["namespace"], pod["metadata"]["name"],
                                       cs["name"], code)
            return
        stamp = now_rfc3339()
        status = pod["status"]
        for cs in status.get("containerStatuses") or ():
            running = cs.get("state", {}).get("running", {})
            cs["state"] = {"terminated": {
                "exitCode": code, "reason": "Error" if code else "Completed",
                "startedAt": running.get("startedAt", stamp), "finishedAt": stamp,
                "containerID": cs.get("containerID", "")}}
            cs["ready"] = False
            cs["started"] = False
        status["phase"] = "Failed" if code else "Succeeded"
        put_condition(pod, "ContainersReady", "False", "PodCompleted")
        put_condition(pod, "Ready", "False", "PodCompleted")
        self.store.put(self.pods, pod)
        if code:
            self.manager.record_event(pod, "BackOff", f"container exited with code {code}",
                                      type_="Warning", component="kubelet")

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
            put_condition(pod, "ContainersReady", "False", "ContainersNotReady")
            put_condition(pod, "Ready", "False", "ContainersNotReady")
            record = self.truth.get(pod["metadata"]["uid"])
            if record is not None:
                record.ready = None
            self.manager.record_event(pod, "Pulled", "Container image changed; restarting",
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

    def fill_pending_status(self, pod: dict[str, Any]) -> None:
        status = pod["status"]
        status["phase"] = "Pending"
        status["hostIP"] = self.manager.get(NodeController).node_ip(pod["spec"]["nodeName"])
        status["containerStatuses"] = [
            {"name": c.get("name", "app"), "image": c.get("image", ""), "imageID": "",
             "ready": False, "restartCount": 0, "started": False,
             "state": {"waiting": {"reason": "ContainerCreating"}}}
            for c in pod["spec"].get("containers") or ()]
        for cond in ("Initialized", "ContainersReady", "Ready"):
            put_condition(pod, cond, "True" if cond == "Initialized" else "False",
                          None if cond == "Initialized" else "ContainersNotReady")

    def fill_running_status(self, pod: dict[str, Any]) -> None:
        status = pod["status"]
        status["phase"] = "Running"
        status["hostIP"] = self.manager.get(NodeController).node_ip(pod["spec"]["nodeName"])
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
        put_condition(pod, "Initialized", "True")

    @staticmethod
    def set_ready(pod: dict[str, Any], ready: bool, reason: str | None = None) -> None:
        value = "True" if ready else "False"
        for cs in pod["status"].get("containerStatuses") or ():
            cs["ready"] = ready
        put_condition(pod, "ContainersReady", value, None if ready else reason)
        put_condition(pod, "Ready", value, None if ready else reason)

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
        put_condition(pod, "ContainersReady", "False", "ContainersNotReady")
        put_condition(pod, "Ready", "False", "ContainersNotReady")
        record = self.truth.get(pod["metadata"]["uid"])
        if record is not None:
            record.restarts.append(time.time())
            record.ready = None
        self.store.put(self.pods, pod)
        self.manager.record_event(pod, "Killing", f"Container {container} died; restarting",
                                  type_="Warning", component="kubelet")
        self.manager.later(annotation_seconds(pod, ANNOTATION_READY, self.timings.ready_seconds),
                           self.pods, namespace, pod_name)
