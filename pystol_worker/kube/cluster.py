"""`Cluster`: the cluster as the worker's actions, faults, undo functions and jobs use it.

It holds exactly the methods called on `ctx.cluster` (and on the `cluster` handed to
undo functions) in pystol_worker/actions, faults, safety and jobs; nothing else. Two
classes satisfy it:

- `ClusterAccess` (cluster_access.py), the real one: every call goes through its one
  rate-limited, retried path to a Kubernetes API server (a real cluster or pystol_sim);
- `FakeCluster` (fake_cluster.py), an in-process object tracker with per-verb reactors,
  for unit tests that must run in milliseconds without any server.

Objects are plain dicts shaped as the Kubernetes API serves them (`metadata`, `spec`,
`status`), never the client's typed models: that is what `ClusterAccess` returns
(parsing 10,000 typed pods costs seconds) and what a fake can hold without the client.
Failures are `ClusterError` (with the HTTP `status`) or its subclass `NotFound`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from pystol_worker.core.model import TargetRef

Obj = dict[str, Any]


@runtime_checkable
class Cluster(Protocol):
    # -- pods --------------------------------------------------------------------------------

    def list_pods(self, namespace: str, label_selector: str | None = None,
                  field_selector: str | None = None, *,
                  project: Callable[[Obj], Obj] | None = None) -> tuple[list[Obj], str]:
        """Every matching pod of a namespace, and the list's resourceVersion (to watch from).

        `project`, when given, is applied to each pod as its page is read, and the page is
        dropped before the next: a large list never holds every whole pod at once."""
        ...

    def list_all_pods(self, field_selector: str) -> list[Obj]:
        """Matching pods of every namespace (node-drain: `spec.nodeName=<node>`)."""
        ...

    def get_pod(self, namespace: str, name: str) -> Obj:
        ...

    def watch_pods(self, namespace: str, label_selector: str, resource_version: str,
                   timeout_seconds: int) -> Iterator[tuple[str, Obj]]:
        """(ADDED | MODIFIED | DELETED | BOOKMARK | ERROR, object) after `resource_version`,
        until the stream ends (after at most `timeout_seconds`; the caller watches again)."""
        ...

    def delete_pod(self, namespace: str, name: str, uid: str | None,
                   grace_period: int | None) -> None:
        """Delete one pod, only if it still has `uid` (409 otherwise)."""
        ...

    def evict(self, namespace: str, name: str, grace_period: int | None = None) -> None:
        """Evict through the Eviction API; 429 when a PodDisruptionBudget refuses."""
        ...

    def exec_in_pod(self, namespace: str, name: str, container: str, command: list[str],
                    timeout: float = 30.0) -> tuple[int, str, str]:
        """Run a command in a container: (exit code, stdout, stderr); -1 without a status."""
        ...

    # -- nodes -------------------------------------------------------------------------------

    def list_nodes(self, label_selector: str | None = None) -> list[Obj]:
        ...

    def get_node(self, name: str) -> Obj:
        ...

    # -- workloads ---------------------------------------------------------------------------

    def get_workload(self, kind: str, namespace: str, name: str) -> Obj:
        """A Deployment, ReplicaSet, StatefulSet or DaemonSet."""
        ...

    def list_workloads(self, kind: str, namespace: str, label_selector: str | None
                       ) -> list[Obj]:
        """Deployments or StatefulSets of a namespace."""
        ...

    def set_scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        """Change a Deployment's or StatefulSet's replicas through its scale subresource."""
        ...

    def list_pdbs(self, namespace: str) -> list[Obj]:
        """The PodDisruptionBudgets of a namespace (rehearsal's blast radius)."""
        ...

    # -- any kind ----------------------------------------------------------------------------

    def get_object(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """One object of a kind a k8s probe may read (`probe_model.K8S_PROBE_KINDS`:
        Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Service, Endpoints,
        PodDisruptionBudget, Node — namespace None for a Node); None when it does not
        exist. Read-only: probes never change anything."""
        ...

    def patch(self, kind: str, namespace: str | None, name: str, body: Any) -> Obj:
        """Strategic-merge patch of a Pod, Node, Deployment or StatefulSet (None deletes a
        key; `metadata.resourceVersion` / `metadata.uid` in the body are preconditions)."""
        ...

    def create(self, kind: str, namespace: str, body: Obj) -> Obj:
        """Create a Pod or a NetworkPolicy; returns the object as stored."""
        ...

    def delete(self, kind: str, namespace: str, name: str, grace_period: int | None = 0
               ) -> bool:
        """Delete a Pod or a NetworkPolicy; False when it was already gone."""
        ...

    def post_event(self, target: TargetRef, api_version: str, reason: str, message: str,
                   event_type: str = "Normal") -> None:
        """A Kubernetes Event on the affected object (what `kubectl describe` shows)."""
        ...
