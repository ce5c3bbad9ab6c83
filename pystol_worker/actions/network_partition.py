"""network-partition: cut the selected pods off the network with a NetworkPolicy.

What it simulates: a network partition — a zone that loses its links, a
firewall change gone wrong, a peer that can no longer be reached. For
`duration`, a NetworkPolicy denies the selected pods' ingress, egress or both
(`params.direction`), except to and from the peers named in `params.allow`
(each a pod label selector, in the policy's namespace or in a named one). The
pods keep running; whatever talks to them, or they to it, sees timeouts. It
takes a CNI plugin that enforces NetworkPolicies (Calico, Cilium, ...) to have
an effect on a real cluster.

How the policy selects the pods: with `mode: all` (and no field selector, and
no pod left out by `max_targets` or `min_available`) it uses the job's own
`target.label_selector`, so replicas created during the partition are cut off
too. Otherwise the chosen pods are labelled `chaos.pystol.org/partition=<job id>`
— one journaled change per pod, whose undo removes the label again — and the
policy selects that label.

Reverted: the policy, named `pystol-partition-<job id suffix>` (one per
namespace), is deleted (already gone is fine), then the labels are removed
(only from a pod that still carries this job's value; a pod recreated under the
same name is left alone).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pystol_worker.actions.base import Action, Selection
from pystol_worker.core.model import (
    EventKind,
    JobSpec,
    NamespaceName,
    TargetKind,
    TargetMode,
    TargetRef,
)
from pystol_worker.core.selector_syntax import label_selector_problem
from pystol_worker.faults.fault_holding import Fault, hold_faults, lock_targets
from pystol_worker.faults.pod_selection import select_pods
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import NotFound
from pystol_worker.kube.objects import Workload, label_selector_object, resolve_workload
from pystol_worker.safety.job_context import RunContext, SelectContext
from pystol_worker.safety.revert_journal import JournalEntry, same_object

PARTITION_LABEL = "chaos.pystol.org/partition"
POLICY_PREFIX = "pystol-partition-"
DELETE_POLICY = "delete-partition-policy"
REMOVE_LABEL = "remove-partition-label"
NETWORKING_API = "networking.k8s.io/v1"
log = logging.getLogger("pystol.actions.network_partition")


class AllowedPeer(BaseModel):
    """Pods that may still talk to (and be reached from) the partitioned pods."""

    model_config = ConfigDict(extra="forbid")

    namespace: NamespaceName | None = Field(
        None, description="Namespace of the peers; default: the partitioned pods' own.")
    label_selector: str = Field(max_length=1024, examples=["app=dns"],
                                description="Label selector of the peer pods; \"\" for every "
                                            "pod of the namespace.")

    @field_validator("label_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        problem = label_selector_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class NetworkPartitionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    direction: Literal["ingress", "egress", "both"] = Field(
        "both", description="Which traffic to cut: to the pods (ingress), from them (egress), "
                            "or both.")
    allow: list[AllowedPeer] = Field(
        default_factory=list, max_length=50,
        description="Peers the partitioned pods may still exchange traffic with.")
    seed: int | None = Field(None, description="Random seed for selection, to repeat an "
                                               "experiment exactly.")


# -- the policy ----------------------------------------------------------------------------------

def _peer(peer: AllowedPeer) -> dict[str, Any]:
    item: dict[str, Any] = {"podSelector": label_selector_object(peer.label_selector)}
    if peer.namespace:
        item["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name":
                                                     peer.namespace}}
    return item


def policy_name(job_id: str) -> str:
    return POLICY_PREFIX + job_id.rsplit("-", 1)[-1].lower()


def policy_body(namespace: str, name: str, job_id: str, pod_selector: dict[str, Any],
                params: NetworkPartitionParams) -> dict[str, Any]:
    peers = [_peer(peer) for peer in params.allow]
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": []}
    if params.direction in ("ingress", "both"):
        spec["policyTypes"].append("Ingress")
        if peers:
            spec["ingress"] = [{"from": peers}]
    if params.direction in ("egress", "both"):
        spec["policyTypes"].append("Egress")
        if peers:
            spec["egress"] = [{"to": peers}]
    return {"apiVersion": NETWORKING_API, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "pystol",
                                    "chaos.pystol.org/job": job_id},
                         "annotations": {"chaos.pystol.org/description":
                                         f"network partition ({params.direction}) by Pystol "
                                         f"job {job_id}"}},
            "spec": spec}


# -- undo functions ------------------------------------------------------------------------------

def delete_policy(cluster: Cluster, entry: JournalEntry) -> None:
    """Delete the job's NetworkPolicy; already gone is fine.

    Only the policy named for this job (`policy_name(job_id)`): its name is the mark, since
    reading the policy first would need `get` on NetworkPolicies, which the worker is not
    granted. So no entry can make the reaper delete someone else's policy."""
    name = entry.data.get("name") or entry.target.name
    if name != policy_name(entry.job_id):
        log.warning("not deleting NetworkPolicy %s: job %s's policy is %s", name,
                    entry.job_id, policy_name(entry.job_id))
        return
    cluster.delete("NetworkPolicy", entry.data.get("namespace") or entry.target.namespace or "",
                   name)  # False when already gone


def remove_label(cluster: Cluster, entry: JournalEntry) -> None:
    """Remove the partition label, only from a pod that still carries this job's value."""
    namespace = entry.data.get("namespace") or entry.target.namespace or ""
    name = entry.data.get("pod") or entry.target.name
    try:
        pod = cluster.get_pod(namespace, name)
    except NotFound:
        return
    if not same_object(pod, entry):
        return  # a new pod under the same name
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(PARTITION_LABEL) != entry.job_id:
        return  # never labelled by this job, or already undone
    cluster.patch("Pod", namespace, name, {"metadata": {"uid": entry.target.uid,
                                                        "labels": {PARTITION_LABEL: None}}})


# -- the action ----------------------------------------------------------------------------------

class NetworkPartition(Action[NetworkPartitionParams]):
    name = "network-partition"
    description = ("Isolate the selected pods with a NetworkPolicy for the duration: deny "
                   "their ingress, egress or both, except to and from allowed peers; then "
                   "delete the policy. Needs a CNI that enforces NetworkPolicies.")
    target_kind = TargetKind.PODS
    takes_pods = True
    Params = NetworkPartitionParams
    undo = {DELETE_POLICY: delete_policy, REMOVE_LABEL: remove_label}

    def check(self, spec: JobSpec, params: NetworkPartitionParams | None
              ) -> list[tuple[str, str]]:
        if not spec.duration:
            return [("duration", "network-partition holds the partition for a duration; give "
                     "one, e.g. \"duration\": \"60s\"")]
        return []

    def select(self, ctx: SelectContext, spec: JobSpec, params: NetworkPartitionParams
               ) -> Selection:
        # max_targets and min_available are applied to this by Action.guarded_select.
        return select_pods(ctx.cluster, spec.target, ctx.settings, seed=params.seed)

    @staticmethod
    def _by_selector(spec: JobSpec, selection: Selection) -> bool:
        """The job's own label selector picks exactly the chosen pods: no labels needed.

        Not so when max_targets or min_available (blast_radius) left some matching pods out.
        """
        target = spec.target
        return (target.mode == TargetMode.ALL and not target.field_selector
                and len(selection.chosen) == selection.matched)

    def execute(self, ctx: RunContext, spec: JobSpec, params: NetworkPartitionParams,
                selection: Selection) -> None:
        job_id = ctx.job_id
        cache: dict[tuple[str, str, str], Workload | None] = {}
        for ref, pod in zip(selection.chosen, selection.objects, strict=True):
            workload = resolve_workload(ctx.cluster, pod, cache)
            if workload is not None:
                ref.workload = workload.ref
        lock_targets(ctx, spec, selection.chosen)
        by_namespace: dict[str, list[TargetRef]] = {}
        for ref in selection.chosen:
            by_namespace.setdefault(ref.namespace or "", []).append(ref)
        by_selector = self._by_selector(spec, selection)
        name = policy_name(job_id)
        faults: list[Fault] = []
        if not by_selector:
            faults += [self._label_fault(ctx, ref, job_id) for ref in selection.chosen]
        for namespace, pods in by_namespace.items():
            pod_selector = (label_selector_object(spec.target.label_selector) if by_selector
                            else {"matchLabels": {PARTITION_LABEL: job_id}})
            faults.append(self._policy_fault(ctx, namespace, name, pods,
                                             policy_body(namespace, name, job_id,
                                                         pod_selector, params)))
        ctx.event(EventKind.PARTITIONING, f"isolating {len(selection.chosen)} pod(s) "
                  f"({params.direction}) with NetworkPolicy {name} in "
                  f"{', '.join(sorted(by_namespace))}, selecting them "
                  + (f"by the job's selector {spec.target.label_selector!r}" if by_selector
                     else f"by the label {PARTITION_LABEL}={job_id}"),
                  policy=name, direction=params.direction, by_selector=by_selector)
        try:
            hold_faults(ctx, spec, self.name, faults, hold_seconds=spec.duration)
        finally:
            self._post_pod_reverts(ctx, name, by_namespace)

    @staticmethod
    def _label_fault(ctx: RunContext, ref: TargetRef, job_id: str) -> Fault:
        def inject() -> None:
            body: dict[str, Any] = {"metadata": {"labels": {PARTITION_LABEL: job_id}}}
            if ref.uid:
                body["metadata"]["uid"] = ref.uid  # never label a newer pod of the same name
            ctx.cluster.patch("Pod", ref.namespace, ref.name, body)

        return Fault(target=ref, undo=REMOVE_LABEL,
                     description=f"labelled pod {ref.namespace}/{ref.name} "
                                 f"{PARTITION_LABEL}={job_id}",
                     inject=inject, data={"namespace": ref.namespace, "pod": ref.name,
                                          "value": job_id})

    @staticmethod
    def _policy_fault(ctx: RunContext, namespace: str, name: str, pods: list[TargetRef],
                      body: dict[str, Any]) -> Fault:
        ref = TargetRef(kind="NetworkPolicy", namespace=namespace, name=name)
        direction = body["metadata"]["annotations"]["chaos.pystol.org/description"]

        def inject() -> None:
            created = ctx.cluster.create("NetworkPolicy", namespace, body)
            ref.uid = (created.get("metadata") or {}).get("uid")
            for pod in pods:
                with contextlib.suppress(Exception):  # a courtesy; the policy is in place
                    ctx.cluster.post_event(pod, "v1", "PystolChaos",
                                           f"isolated by NetworkPolicy {namespace}/{name}: "
                                           f"{direction}")

        return Fault(target=ref, undo=DELETE_POLICY,
                     description=f"created NetworkPolicy {namespace}/{name} isolating "
                                 f"{len(pods)} pod(s)",
                     inject=inject, data={"namespace": namespace, "name": name},
                     api_version=NETWORKING_API)

    @staticmethod
    def _post_pod_reverts(ctx: RunContext, name: str,
                          by_namespace: dict[str, list[TargetRef]]) -> None:
        for change in ctx.result.changes:
            target = change.target
            if target.kind != "NetworkPolicy" or target.name != name or not change.reverted_at:
                continue
            for pod in by_namespace.get(target.namespace or "", []):
                with contextlib.suppress(Exception):
                    ctx.cluster.post_event(pod, "v1", "PystolRevert",
                                           f"NetworkPolicy {target.namespace}/{name} deleted: "
                                           f"partition over (Pystol job {ctx.job_id})")
