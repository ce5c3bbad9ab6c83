"""A snapshot of a live cluster, as `pystol-sim --snapshot` reads it.

What `kubectl get nodes,namespaces,deployments,statefulsets,daemonsets,replicasets,pods,
services,endpoints,poddisruptionbudgets -A -o yaml` prints, limited to the namespaces an
experiment touches (plus every node: placement and node-level steps need them). This is
how a rehearsal run by the worker (rather than by `pystol rehearse --snapshot FILE`) gets
its copy: read-only lists through the worker's own `ClusterAccess`, so its rate limit,
retries and RBAC apply — the worker needs `list` on those kinds in those namespaces, no
more. Secrets and ConfigMaps are never read (the simulator would drop them anyway: a
snapshot is a file and must not carry credentials).

List responses omit each item's `apiVersion` and `kind`; they are filled in here, as
kubectl does, because the simulator's loader types items by them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pystol_worker.kube.cluster_access import ClusterAccess, NotFound

PAGE_SIZE = 500

#: (apiVersion, kind, API group attribute, namespaced lister name) of every namespaced
#: kind copied; the order is the order of the List (owners before what they own).
NAMESPACED_KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("apps/v1", "Deployment", "apps", "list_namespaced_deployment"),
    ("apps/v1", "StatefulSet", "apps", "list_namespaced_stateful_set"),
    ("apps/v1", "DaemonSet", "apps", "list_namespaced_daemon_set"),
    ("apps/v1", "ReplicaSet", "apps", "list_namespaced_replica_set"),
    ("v1", "Pod", "core", "list_namespaced_pod"),
    ("v1", "Service", "core", "list_namespaced_service"),
    ("v1", "Endpoints", "core", "list_namespaced_endpoints"),
    ("policy/v1", "PodDisruptionBudget", "policy", "list_namespaced_pod_disruption_budget"),
)


def _pages(cluster: ClusterAccess, lister: Callable[..., Any], *args: Any
           ) -> Iterable[dict[str, Any]]:
    """Every item of a list, page by page (a namespace of 100,000 pods is read in
    bounded pieces, as `ClusterAccess.list_pods` reads them)."""
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE_SIZE}
        if token:
            kwargs["_continue"] = token
        response = cluster.call_raw("list", lister, *args, **kwargs)
        body = json.loads(response.data)
        yield from body.get("items") or ()
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return


def _typed(item: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    item["apiVersion"], item["kind"] = api_version, kind
    item.get("metadata", {}).pop("managedFields", None)  # bulk nobody reads
    return item


def snapshot(cluster: ClusterAccess, namespaces: Iterable[str]) -> dict[str, Any]:
    """A kubectl `List` of every node, the given namespaces, and the workloads, pods,
    services, endpoints and disruption budgets in them. A namespace that does not exist
    is left out (the experiment's steps will find nothing there, as on the cluster)."""
    from kubernetes import client

    apis = {"core": cluster.core, "apps": cluster.apps,
            "policy": client.PolicyV1Api(cluster.api_client)}
    items: list[dict[str, Any]] = [_typed(node, "v1", "Node")
                                   for node in _pages(cluster, cluster.core.list_node)]
    for namespace in sorted(set(namespaces)):
        try:
            found = cluster.get_raw(cluster.core.read_namespace, namespace)
        except NotFound:
            continue
        items.append(_typed(found, "v1", "Namespace"))
        for api_version, kind, api, lister in NAMESPACED_KINDS:
            items.extend(_typed(item, api_version, kind) for item in
                         _pages(cluster, getattr(apis[api], lister), namespace))
    return {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}
