"""The garbage collector: dependents go when their last owner goes; and the
`orphan` and `foregroundDeletion` finalizers that propagation policies set."""

from __future__ import annotations

from typing import Any

from pystol_sim.controllers.manager import Controller
from pystol_sim.resources import ResourceType


class GarbageCollector(Controller):
    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        if event == "DELETED":
            self._collect(meta.get("uid", ""))
        elif meta.get("deletionTimestamp") and meta.get("finalizers"):
            self.manager.mark(rtype, meta.get("namespace", ""), meta["name"])

    def _collect(self, uid: str) -> None:
        for type_key, ns, name in list(self.store.dependents.get(uid, ())):
            rtype = self.manager.type_by_key(type_key)
            if rtype is None:
                continue
            dependent = self.store.find(rtype, ns, name)
            if dependent is None:
                continue
            refs = dependent["metadata"].get("ownerReferences") or []
            remaining = [r for r in refs if r.get("uid") != uid]
            if remaining:
                dependent["metadata"]["ownerReferences"] = remaining
                self.store.put(rtype, dependent)
            elif not dependent["metadata"].get("deletionTimestamp"):
                self.store.delete(rtype, ns, name)

    def finalize(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """The garbage collector's own finalizers: orphan and foregroundDeletion."""
        meta = obj["metadata"]
        uid = meta["uid"]
        finalizers = list(meta["finalizers"])
        deps = list(self.store.dependents.get(uid, ()))
        if "orphan" in finalizers:
            for type_key, ns, name in deps:
                dep_type = self.manager.type_by_key(type_key)
                dependent = self.store.find(dep_type, ns, name) if dep_type else None
                if dependent is not None and dep_type is not None:
                    dependent["metadata"]["ownerReferences"] = [
                        r for r in dependent["metadata"].get("ownerReferences") or ()
                        if r.get("uid") != uid]
                    self.store.put(dep_type, dependent)
            finalizers.remove("orphan")
        elif "foregroundDeletion" in finalizers:
            if deps:
                for type_key, ns, name in deps:
                    dep_type = self.manager.type_by_key(type_key)
                    if dep_type is not None and self.store.stored(dep_type, ns, name):
                        dependent = self.store.get(dep_type, ns, name)
                        if not dependent["metadata"].get("deletionTimestamp"):
                            self.store.delete(dep_type, ns, name, foreground=True)
                return
            finalizers.remove("foregroundDeletion")
        else:
            return
        meta["finalizers"] = finalizers
        self.store.put(rtype, obj)
