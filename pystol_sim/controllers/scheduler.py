"""The scheduler: binds a pending pod to a ready node that fits it.

Round-robin over nodes that are ready, schedulable, below their pod capacity,
match the pod's nodeSelector and whose NoSchedule/NoExecute taints it
tolerates. The kubelet controller calls `bind` for an unbound pod it is given.
"""

from __future__ import annotations

import itertools
from typing import Any

from pystol_sim.controllers.manager import Controller, ControllerManager
from pystol_sim.controllers.node import NodeController
from pystol_sim.controllers.objects import condition, tolerates
from pystol_sim.resources import ResourceType
from pystol_sim.store import now_rfc3339


class Scheduler(Controller):
    def __init__(self, manager: ControllerManager) -> None:
        super().__init__(manager)
        self.pods = manager.type("", "v1", "pods")
        self.pods_per_node: dict[str, int] = {}
        self._rr = itertools.count()

    @property
    def nodes(self) -> NodeController:
        return self.manager.get(NodeController)

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        if rtype.key == "/pods":
            old_node = (old or {}).get("spec", {}).get("nodeName") if old else None
            new_node = obj.get("spec", {}).get("nodeName") if event != "DELETED" else None
            if old_node != new_node:
                if old_node:
                    self.pods_per_node[old_node] = self.pods_per_node.get(old_node, 1) - 1
                if new_node:
                    self.pods_per_node[new_node] = self.pods_per_node.get(new_node, 0) + 1
        elif rtype.key == "/nodes":
            self._retry_pending()

    def _retry_pending(self) -> None:
        for key, item in self.store.select(self.pods):
            if not item.fields.get("spec.nodeName") and item.fields.get("status.phase") in (
                    "Pending", ""):
                self.manager.mark(self.pods, *key)

    def _pick_node(self, pod: dict[str, Any]) -> str | None:
        spec = pod.get("spec", {})
        wanted = spec.get("nodeSelector") or {}
        nodes = self.nodes.nodes
        names = list(nodes)
        if not names:
            return None
        offset = next(self._rr)
        for index in range(len(names)):
            info = nodes[names[(offset + index) % len(names)]]
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
        """Choose a node and bind the pod in place; False when nothing fits."""
        node = self._pick_node(pod)
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or () if c["type"] != "PodScheduled"]
        stamp = now_rfc3339()
        if node is None:
            existing = condition(pod, "PodScheduled")
            if existing is not None and existing.get("status") == "False":
                return False  # already marked unschedulable: writing again would loop
            conditions.append({"type": "PodScheduled", "status": "False",
                               "reason": "Unschedulable", "lastTransitionTime": stamp,
                               "message": f"0/{len(self.nodes.nodes)} nodes are available."})
            status["conditions"] = conditions
            status["phase"] = "Pending"
            return False
        pod["spec"]["nodeName"] = node
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp})
        status["conditions"] = conditions
        self.pods_per_node[node] = self.pods_per_node.get(node, 0)
        return True
