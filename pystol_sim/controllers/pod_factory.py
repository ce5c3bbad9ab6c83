"""Creating a pod from a workload's template, as every workload controller does.

A create the API server refuses (a ResourceQuota's 403 "exceeded quota", say)
is what kube-controller-manager reports as a `FailedCreate` Warning event on
the owner and retries later; a name collision (409) is only retried.
"""

from __future__ import annotations

from typing import Any

from pystol_sim.controllers.kubelet import Kubelet
from pystol_sim.controllers.manager import ControllerManager
from pystol_sim.controllers.objects import owner_ref
from pystol_sim.controllers.scheduler import Scheduler
from pystol_sim.errors import ApiError
from pystol_sim.store import json_copy

CREATE_RETRY_SECONDS = 5.0  # simulated seconds before a refused create is tried again


def new_pod(manager: ControllerManager, owner: dict[str, Any], template: dict[str, Any],
            name: str = "", extra_labels: dict[str, str] | None = None,
            node_name: str | None = None, component: str = "pystol-sim",
            generate_name: str = "") -> dict[str, Any] | None:
    """Create the pod (bound and running at once while a scenario loads); None if refused.

    A controller that names its pods `<owner>-<random>` passes `generate_name`, as
    kube's controllers do, so the store draws a name no pod has: a collision is not a
    refusal, and treating it as one once cost a ReplicaSet 73 of its 500 pods."""
    pods = manager.type("", "v1", "pods")
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
        "metadata": {"name": name, "generateName": generate_name, "namespace": ns,
                     "labels": labels,
                     "annotations": dict(meta.get("annotations") or {}),
                     "ownerReferences": [owner_ref(owner)]},
        "spec": spec, "status": {"phase": "Pending"}}
    if not pod["metadata"]["annotations"]:
        del pod["metadata"]["annotations"]
    if not generate_name:
        del pod["metadata"]["generateName"]
    if manager.settling and (node_name or manager.get(Scheduler).bind(pod)):
        kubelet = manager.get(Kubelet)
        kubelet.fill_running_status(pod)
        kubelet.set_ready(pod, True)
    try:
        return manager.store.create(pods, pod, ns)
    except ApiError as error:
        owner_type = manager.owner_type(owner_ref(owner))
        if owner_type is not None:
            manager.later(CREATE_RETRY_SECONDS, owner_type, ns, owner["metadata"]["name"])
        if error.code != 409:
            manager.record_event(owner, "FailedCreate", f"Error creating: {error.message}",
                                 type_="Warning", component=component)
        return None
