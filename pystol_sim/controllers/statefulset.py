"""StatefulSets: pods named `<set>-<ordinal>`, created in order (each waits for the one
before it to be ready) unless podManagementPolicy is Parallel; scaled down from the top.
At most 500 pods are created in one reconcile (kube's MaxPodCreateDeletePerSync); the
set is requeued for the rest."""

from __future__ import annotations

from typing import Any

from pystol_sim.controllers.manager import MAX_PODS_PER_SYNC, Controller
from pystol_sim.controllers.objects import count_of, pod_is_active, pod_is_ready
from pystol_sim.controllers.pod_factory import new_pod

COMPONENT = "statefulset-controller"


class StatefulSetController(Controller):
    resource = "apps/statefulsets"

    def reconcile(self, sts: dict[str, Any]) -> None:
        if sts["metadata"].get("deletionTimestamp"):
            return
        pods_t = self.manager.type("", "v1", "pods")
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        spec = sts.get("spec", {})
        desired = count_of(spec.get("replicas"), 1)
        parallel = spec.get("podManagementPolicy") == "Parallel"
        template = spec.get("template") or {}
        pods = {p["metadata"]["name"]: p for p in self.manager.owned(pods_t, sts)}
        created = 0
        for ordinal in range(desired):
            pod_name = f"{name}-{ordinal}"
            existing = pods.get(pod_name)
            if existing is None and created >= MAX_PODS_PER_SYNC:
                self.manager.mark(self.manager.type("apps", "v1", "statefulsets"), ns, name)
                break
            if existing is None:
                created += 1
                pod = new_pod(self.manager, sts, template, pod_name,
                              {"statefulset.kubernetes.io/pod-name": pod_name,
                               "apps.kubernetes.io/pod-index": str(ordinal)},
                              component=COMPONENT)
                if pod is not None:
                    pods[pod_name] = pod
                    self.manager.record_event(
                        sts, "SuccessfulCreate",
                        f"create Pod {pod_name} in StatefulSet {name} successful",
                        component=COMPONENT)
                    if not parallel and not pod_is_ready(pod):
                        break
                elif not parallel:
                    break
            elif not parallel and not pod_is_ready(existing):
                break
        for pod_name, pod in sorted(pods.items(), reverse=True):
            ordinal = pod_name.rsplit("-", 1)[-1]
            if ordinal.isdigit() and int(ordinal) >= desired and pod_is_active(pod):
                self.store.delete(pods_t, ns, pod_name)
        active = [p for p in pods.values() if pod_is_active(p)
                  and int(p["metadata"]["name"].rsplit("-", 1)[-1]) < desired]
        ready = sum(1 for p in active if pod_is_ready(p))
        self.manager.write_status(self.manager.type("apps", "v1", "statefulsets"), sts, {
            "observedGeneration": sts["metadata"].get("generation", 1), "replicas": len(active),
            "readyReplicas": ready, "currentReplicas": len(active),
            "updatedReplicas": len(active), "availableReplicas": ready})
