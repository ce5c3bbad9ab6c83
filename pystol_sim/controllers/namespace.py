"""Namespaces: Active on creation; on deletion, Terminating until everything in them
is gone, then removed (the namespace controller's content deletion)."""

from __future__ import annotations

import contextlib
from typing import Any

from pystol_sim.controllers.manager import Controller
from pystol_sim.controllers.serviceaccount import ServiceAccountController
from pystol_sim.errors import ApiError


class NamespaceController(Controller):
    resource = "/namespaces"

    def reconcile(self, ns_obj: dict[str, Any]) -> None:
        namespaces = self.manager.type("", "v1", "namespaces")
        meta = ns_obj["metadata"]
        status = ns_obj.setdefault("status", {})
        if not meta.get("deletionTimestamp"):
            if status.get("phase") != "Active":
                status["phase"] = "Active"
                self.store.put(namespaces, ns_obj)
            self.manager.get(ServiceAccountController).ensure(meta["name"])
            return
        name = meta["name"]
        if status.get("phase") != "Terminating":
            status["phase"] = "Terminating"
            self.store.put(namespaces, ns_obj)
        remaining = 0
        for rtype in self.manager.catalogue.all():
            if not rtype.namespaced:
                continue
            for key, _ in list(self.store.select(rtype, name)):
                remaining += 1
                with contextlib.suppress(ApiError):
                    self.store.delete(rtype, key[0], key[1], grace_period=0)
        if remaining:
            self.manager.later(0.2, namespaces, "", name)
            return
        spec_finalizers = ns_obj.get("spec", {}).get("finalizers") or []
        if spec_finalizers:
            ns_obj["spec"]["finalizers"] = []
        self.store.remove(namespaces, "", name)
