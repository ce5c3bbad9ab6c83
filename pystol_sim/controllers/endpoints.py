"""Services: a ClusterIP for each Service and an Endpoints object listing the ready
(and not-ready) addresses of the pods its selector matches."""

from __future__ import annotations

import hashlib
from typing import Any

from pystol_sim.controllers.manager import Controller
from pystol_sim.controllers.objects import pod_is_active, pod_is_ready
from pystol_sim.resources import ResourceType
from pystol_sim.selectors import LabelSelector


class EndpointsController(Controller):
    resource = "/services"

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        super().observe(rtype, event, obj, old)
        if rtype.key == "/pods" and not self.manager.settling:
            services = self.manager.type("", "v1", "services")
            ns = obj["metadata"].get("namespace", "")
            for svc_key in list(self.store.table(services).objects):
                if svc_key[0] == ns:
                    self.manager.mark(services, ns, svc_key[1])

    def reconcile(self, svc: dict[str, Any]) -> None:
        services = self.manager.type("", "v1", "services")
        endpoints_t = self.manager.type("", "v1", "endpoints")
        pods = self.manager.type("", "v1", "pods")
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        spec = svc.setdefault("spec", {})
        if not spec.get("clusterIP") and spec.get("type", "ClusterIP") != "ExternalName":
            digest = int(hashlib.sha256(f"{ns}/{name}".encode()).hexdigest()[:6], 16)
            spec["clusterIP"] = f"10.96.{digest // 256 % 256}.{digest % 254 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("type", "ClusterIP")
            self.store.put(services, svc)
        selector = spec.get("selector")
        if not selector:
            return
        ready: list[dict[str, Any]] = []
        not_ready: list[dict[str, Any]] = []
        for pod in self.store.list_objects(pods, ns, LabelSelector.from_labels(selector)):
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
        existing = self.store.find(endpoints_t, ns, name)
        if existing is None:
            self.store.create(endpoints_t, endpoints, ns)
        elif existing.get("subsets") != endpoints["subsets"]:
            existing["subsets"] = endpoints["subsets"]
            self.store.put(endpoints_t, existing)
