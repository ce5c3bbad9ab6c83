"""Nodes: what the scheduler knows about each node, and the node lifecycle controller.

A node that stops reporting Ready has its pods evicted after a grace period (as
the node lifecycle controller's NoExecute taint does); their controllers then
recreate them elsewhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pystol_sim.controllers.manager import Controller, ControllerManager
from pystol_sim.controllers.objects import condition, put_condition, quantity_int
from pystol_sim.resources import ResourceType

NODE_EVICTION_SECONDS = 5.0


@dataclass
class NodeInfo:
    name: str
    labels: dict[str, str]
    ready: bool
    unschedulable: bool
    no_schedule_taints: list[dict[str, Any]]
    capacity_pods: int


class NodeController(Controller):
    resource = "/nodes"

    def __init__(self, manager: ControllerManager) -> None:
        super().__init__(manager)
        self.nodes: dict[str, NodeInfo] = {}
        self.nodes_t = manager.type("", "v1", "nodes")
        self.pods = manager.type("", "v1", "pods")
        self._not_ready_since: dict[str, float] = {}

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        if rtype.key != self.resource:
            return
        name = obj["metadata"]["name"]
        self._track(event, obj)
        info = self.nodes.get(name)
        if event == "DELETED" or (info is not None and not info.ready):
            self.manager.mark(rtype, "", name)
            for pod_key, item in self.store.select(self.pods):
                if item.fields.get("spec.nodeName") == name:
                    self.manager.mark(self.pods, *pod_key)

    def _track(self, event: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        if event == "DELETED":
            self.nodes.pop(name, None)
            return
        ready = condition(node, "Ready")
        self.nodes[name] = NodeInfo(
            name=name,
            labels=dict(node["metadata"].get("labels") or {}),
            ready=bool(ready is None or ready.get("status") == "True"),
            unschedulable=bool(node.get("spec", {}).get("unschedulable")),
            no_schedule_taints=[t for t in node.get("spec", {}).get("taints") or ()
                                if t.get("effect") in ("NoSchedule", "NoExecute")],
            capacity_pods=quantity_int(node.get("status", {}).get("allocatable", {}).get("pods"),
                                       110),
        )

    def reconcile(self, node: dict[str, Any]) -> None:
        """Evict pods from a NotReady node after a grace period."""
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None or info.ready:
            return
        speed = self.manager.speed
        since = self._not_ready_since.setdefault(name, time.time())
        now = time.time()
        if now < since + NODE_EVICTION_SECONDS / speed and not self.manager.settling:
            self.manager.later((since + NODE_EVICTION_SECONDS / speed - now) * speed,
                               self.nodes_t, "", name)
            return
        for key, item in list(self.store.select(self.pods)):
            if item.fields.get("spec.nodeName") == name:
                pod = item.load()
                if not pod["metadata"].get("deletionTimestamp"):
                    self.store.delete(self.pods, key[0], key[1], grace_period=0)

    def set_ready(self, name: str, ready: bool) -> None:
        """Simulate a kubelet that stops (or resumes) reporting: the node's Ready condition."""
        node = self.store.get(self.nodes_t, "", name)
        put_condition(node, "Ready", "True" if ready else "Unknown",
                      None if ready else "NodeStatusUnknown")
        if ready:
            self._not_ready_since.pop(name, None)
        else:
            self._not_ready_since[name] = time.time()
        self.store.put(self.nodes_t, node)
        self.manager.record_event(
            node, "NodeReady" if ready else "NodeNotReady",
            f"Node {name} status is now: {'NodeReady' if ready else 'NodeNotReady'}",
            component="node-controller")

    def node_ip(self, node_name: str) -> str:
        item = self.store.stored(self.nodes_t, "", node_name)
        if item is None:
            return ""
        for address in item.load().get("status", {}).get("addresses") or ():
            if address.get("type") == "InternalIP":
                return address.get("address", "")
        return ""
