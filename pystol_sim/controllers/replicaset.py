"""ReplicaSets: keep `spec.replicas` active pods from the template, deleting the
least useful (unready, unscheduled, youngest) first when there are too many. At most
500 pods are created or deleted in one reconcile (kube's MaxPodCreateDeletePerSync);
the set is requeued for the rest."""

from __future__ import annotations

from typing import Any

from pystol_sim.controllers.manager import MAX_PODS_PER_SYNC, Controller
from pystol_sim.controllers.objects import count_of, pod_is_active, pod_is_ready
from pystol_sim.controllers.pod_factory import new_pod

COMPONENT = "replicaset-controller"


class ReplicaSetController(Controller):
    resource = "apps/replicasets"

    def reconcile(self, rs: dict[str, Any]) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            return
        pods_t = self.manager.type("", "v1", "pods")
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        desired = count_of(rs.get("spec", {}).get("replicas"), 1)
        pods = [p for p in self.manager.owned(pods_t, rs) if pod_is_active(p)]
        template = rs.get("spec", {}).get("template") or {}
        if abs(desired - len(pods)) > MAX_PODS_PER_SYNC:
            self.manager.mark(self.manager.type("apps", "v1", "replicasets"), ns, name)
        if len(pods) < desired:
            for _ in range(min(desired - len(pods), MAX_PODS_PER_SYNC)):
                pod = new_pod(self.manager, rs, template, generate_name=f"{name}-",
                              component=COMPONENT)
                if pod is None:
                    break  # refused (quota): retried later, as kube-controller-manager does
                pods.append(pod)
                self.manager.record_event(rs, "SuccessfulCreate",
                                          f"Created pod: {pod['metadata']['name']}",
                                          component=COMPONENT)
        elif len(pods) > desired:
            pods.sort(key=lambda p: (pod_is_ready(p), bool(p["spec"].get("nodeName")),
                                     p["metadata"]["creationTimestamp"]), reverse=False)
            victims = pods[: min(len(pods) - desired, MAX_PODS_PER_SYNC)]
            for victim in victims:
                self.store.delete(pods_t, ns, victim["metadata"]["name"])
                self.manager.record_event(rs, "SuccessfulDelete",
                                          f"Deleted pod: {victim['metadata']['name']}",
                                          component=COMPONENT)
            pods = pods[len(victims):]
        ready = sum(1 for p in pods if pod_is_ready(p))
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                  "readyReplicas": ready, "availableReplicas": ready,
                  "observedGeneration": rs["metadata"].get("generation", 1)}
        self.manager.write_status(self.manager.type("apps", "v1", "replicasets"), rs, status)
