"""The serviceaccounts controller: every live namespace has a `default` ServiceAccount.

kube-controller-manager creates it as soon as a namespace appears (and again if
it is deleted), which is why `kubectl create token default` and pods without a
serviceAccountName work in any namespace.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pystol_sim.controllers.manager import Controller
from pystol_sim.errors import ApiError
from pystol_sim.resources import ResourceType

DEFAULT_NAME = "default"


class ServiceAccountController(Controller):
    """The namespace controller calls `ensure` for every Active namespace it
    reconciles; a deleted `default` marks its namespace dirty again."""

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        if rtype.key == "/serviceaccounts" and event == "DELETED" and \
                meta.get("name") == DEFAULT_NAME:
            self.manager.mark(self.manager.type("", "v1", "namespaces"), "",
                              meta.get("namespace", ""))

    def ensure(self, namespace: str) -> None:
        namespaces = self.manager.type("", "v1", "namespaces")
        accounts = self.manager.type("", "v1", "serviceaccounts")
        ns_obj = self.store.find(namespaces, "", namespace)
        if ns_obj is None or ns_obj["metadata"].get("deletionTimestamp"):
            return
        if self.store.stored(accounts, namespace, DEFAULT_NAME) is not None:
            return
        with contextlib.suppress(ApiError):  # the namespace is going away
            self.store.create(accounts, {"apiVersion": "v1", "kind": "ServiceAccount",
                                         "metadata": {"name": DEFAULT_NAME,
                                                      "namespace": namespace}}, namespace)
