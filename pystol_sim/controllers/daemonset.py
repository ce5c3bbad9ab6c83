"""DaemonSets: one pod on every ready node that matches the nodeSelector and whose
taints the template tolerates; pods on nodes that no longer qualify are deleted. At
most 500 pods are created in one reconcile (kube's MaxPodCreateDeletePerSync)."""

from __future__ import annotations

from typing import Any

from pystol_sim.controllers.manager import MAX_PODS_PER_SYNC, Controller
from pystol_sim.controllers.node import NodeController
from pystol_sim.controllers.objects import pod_is_active, pod_is_ready, tolerates
from pystol_sim.controllers.pod_factory import new_pod
from pystol_sim.resources import ResourceType


class DaemonSetController(Controller):
    resource = "apps/daemonsets"

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        super().observe(rtype, event, obj, old)
        if rtype.key == "/nodes":  # a node came, went or changed: every set may change
            daemonsets = self.manager.type("apps", "v1", "daemonsets")
            for ds_key in list(self.store.table(daemonsets).objects):
                self.manager.mark(daemonsets, *ds_key)

    def reconcile(self, ds: dict[str, Any]) -> None:
        if ds["metadata"].get("deletionTimestamp"):
            return
        pods_t = self.manager.type("", "v1", "pods")
        ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
        template = ds.get("spec", {}).get("template") or {}
        pod_spec = template.get("spec") or {}
        wanted = pod_spec.get("nodeSelector") or {}
        eligible = [n for n in self.manager.get(NodeController).nodes.values()
                    if all(n.labels.get(k) == v for k, v in wanted.items())
                    and all(tolerates(pod_spec, taint) for taint in n.no_schedule_taints)]
        pods = [p for p in self.manager.owned(pods_t, ds) if pod_is_active(p)]
        by_node = {p.get("spec", {}).get("nodeName"): p for p in pods}
        created = 0
        for node in eligible:
            if node.name not in by_node and node.ready:
                if created >= MAX_PODS_PER_SYNC:
                    self.manager.mark(self.manager.type("apps", "v1", "daemonsets"), ns, name)
                    break
                created += 1
                pod = new_pod(self.manager, ds, template, generate_name=f"{name}-",
                              node_name=node.name, component="daemonset-controller")
                if pod is not None:
                    by_node[node.name] = pod
        names = {n.name for n in eligible}
        for node_name, pod in list(by_node.items()):
            if node_name not in names:
                self.store.delete(pods_t, ns, pod["metadata"]["name"])
                del by_node[node_name]
        ready = sum(1 for p in by_node.values() if pod_is_ready(p))
        self.manager.write_status(self.manager.type("apps", "v1", "daemonsets"), ds, {
            "desiredNumberScheduled": len(eligible), "currentNumberScheduled": len(by_node),
            "numberReady": ready, "numberAvailable": ready,
            "updatedNumberScheduled": len(by_node), "numberMisscheduled": 0,
            "observedGeneration": ds["metadata"].get("generation", 1)})
