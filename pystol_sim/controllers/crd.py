"""CustomResourceDefinitions: serve (or stop serving) their resources, then mark them
Established, as the apiextensions controllers do."""

from __future__ import annotations

import asyncio
from typing import Any

from pystol_sim.controllers.manager import Controller
from pystol_sim.resources import PrinterColumn, ResourceType
from pystol_sim.store import now_rfc3339


class CrdController(Controller):
    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        if rtype.key == "apiextensions.k8s.io/customresourcedefinitions":
            self._sync(event, obj)

    def _sync(self, event: str, crd: dict[str, Any]) -> None:
        catalogue = self.manager.catalogue
        spec = crd.get("spec") or {}
        group = spec.get("group", "")
        names = spec.get("names") or {}
        plural = names.get("plural", "")
        for version in spec.get("versions") or ():
            existing = catalogue.get(group, version.get("name", ""), plural)
            if event == "DELETED" or crd["metadata"].get("deletionTimestamp"):
                if existing is not None:
                    catalogue.remove(group, version["name"], plural)
                    self.store.drop_type(existing)
                continue
            if not version.get("served", True):
                continue
            subresources = tuple(k for k in ("status", "scale")
                                 if k in (version.get("subresources") or {}))
            columns = tuple(PrinterColumn(name=c.get("name", ""), type=c.get("type", "string"),
                                          json_path=c.get("jsonPath", ""),
                                          description=c.get("description", ""),
                                          priority=int(c.get("priority", 0)),
                                          format=c.get("format", ""))
                            for c in version.get("additionalPrinterColumns") or ())
            catalogue.add(ResourceType(
                group=group, version=version["name"], plural=plural, kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", ""),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources, printer_columns=columns,
                schema=(version.get("schema") or {}).get("openAPIV3Schema")))
        if event != "DELETED" and not crd["metadata"].get("deletionTimestamp"):
            status = crd.get("status") or {}
            if not any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in status.get("conditions") or ()):
                asyncio.get_event_loop().call_soon(self._establish, crd["metadata"]["name"])

    def _establish(self, name: str) -> None:
        crds = self.manager.type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        crd = self.store.find(crds, "", name)
        if crd is None:
            return
        stamp = now_rfc3339()
        crd["status"] = {
            "acceptedNames": crd.get("spec", {}).get("names", {}),
            "storedVersions": [v["name"] for v in crd.get("spec", {}).get("versions") or ()
                               if v.get("storage")],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": stamp},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": stamp},
            ],
        }
        self.store.put(crds, crd)
