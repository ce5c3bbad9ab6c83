"""PodDisruptionBudgets and the Eviction API.

The disruption controller keeps each PDB's status (healthy, desired, allowed
disruptions) current; an eviction that would take a PDB below its desired
healthy count is refused with 429, which is what makes `kubectl drain` wait.
"""

from __future__ import annotations

import math
from typing import Any

from pystol_sim.controllers.manager import Controller
from pystol_sim.controllers.objects import controller_of, pod_is_active, pod_is_ready
from pystol_sim.errors import ApiError
from pystol_sim.resources import ResourceType
from pystol_sim.selectors import LabelSelector, SelectorError, label_selector_from_spec


def spec_selector(obj: dict[str, Any]) -> LabelSelector | None:
    try:
        return label_selector_from_spec(obj.get("spec", {}).get("selector"))
    except SelectorError:
        return None


def scaled(value: Any, expected: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(expected * float(value[:-1]) / 100)
    return int(value)


class DisruptionController(Controller):
    resource = "policy/poddisruptionbudgets"

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        super().observe(rtype, event, obj, old)
        if rtype.key == "/pods":
            pdbs = self.manager.type("policy", "v1", "poddisruptionbudgets")
            ns = obj["metadata"].get("namespace", "")
            for pdb_key in list(self.store.table(pdbs).objects):
                if pdb_key[0] == ns:
                    self.manager.mark(pdbs, ns, pdb_key[1])

    def numbers(self, pdb: dict[str, Any]) -> dict[str, int]:
        pods_t = self.manager.type("", "v1", "pods")
        ns = pdb["metadata"]["namespace"]
        selector = spec_selector(pdb)
        if selector is None:
            return {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0,
                    "expectedPods": 0}
        pods = [p for p in self.store.list_objects(pods_t, ns, selector) if pod_is_active(p)]
        healthy = sum(1 for p in pods if pod_is_ready(p))
        expected = self._expected_pods(pods)
        spec = pdb.get("spec", {})
        if spec.get("maxUnavailable") is not None:
            unavailable = scaled(spec["maxUnavailable"], expected)
            desired = max(0, expected - unavailable)
        else:
            desired = scaled(spec.get("minAvailable", 1), expected)
        return {"currentHealthy": healthy, "desiredHealthy": desired,
                "disruptionsAllowed": max(0, healthy - desired), "expectedPods": expected}

    def _expected_pods(self, pods: list[dict[str, Any]]) -> int:
        """Desired replicas of the workloads owning these pods (as the disruption controller)."""
        deployments = self.manager.type("apps", "v1", "deployments")
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
            owner_type = self.manager.owner_type(ref)
            owner = self.store.find(owner_type, pod["metadata"]["namespace"], ref["name"]) \
                if owner_type else None
            if owner is None:
                bare += 1
                continue
            if owner["kind"] == "ReplicaSet":
                parent = controller_of(owner)
                if parent is not None and parent.get("kind") == "Deployment":
                    deploy = self.store.find(deployments, owner["metadata"]["namespace"],
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

    def reconcile(self, pdb: dict[str, Any]) -> None:
        numbers = self.numbers(pdb)
        numbers["observedGeneration"] = pdb["metadata"].get("generation", 1)
        self.manager.write_status(self.manager.type("policy", "v1", "poddisruptionbudgets"),
                                  pdb, numbers)

    def evict(self, namespace: str, name: str, delete_options: dict[str, Any]) -> None:
        """The Eviction API: refuse with 429 when a PodDisruptionBudget would be violated."""
        pods_t = self.manager.type("", "v1", "pods")
        pdbs = self.manager.type("policy", "v1", "poddisruptionbudgets")
        pod = self.store.get(pods_t, namespace, name)
        if pod["metadata"].get("deletionTimestamp"):
            return
        labels = pod["metadata"].get("labels") or {}
        if pod_is_ready(pod):
            for pdb in self.store.list_objects(pdbs, namespace):
                selector = spec_selector(pdb)
                if selector is None or selector.empty or not selector.matches(labels):
                    continue
                numbers = self.numbers(pdb)
                if numbers["disruptionsAllowed"] < 1:
                    raise ApiError(
                        429, "Cannot evict pod as it would violate the pod's disruption budget.",
                        reason="TooManyRequests",
                        details={"causes": [{"reason": "DisruptionBudget",
                                             "message": f"The disruption budget "
                                                        f"{pdb['metadata']['name']} needs "
                                                        f"{numbers['desiredHealthy']}"
                                                        " healthy pods"}]},
                        retry_after=1)
        grace = delete_options.get("gracePeriodSeconds")
        self.store.delete(pods_t, namespace, name, grace_period=grace,
                          preconditions=delete_options.get("preconditions"))
        self.manager.record_event(pod, "Killing", "Stopping container (evicted)",
                                  component="kubelet")
