"""node-cordon: mark nodes unschedulable for `duration`, then uncordon them.

What it simulates: a node that takes no new work (maintenance announced, an
autoscaler about to remove it, a kubelet an operator no longer trusts). Pods
already running there keep running; anything that needs to be scheduled —
a rollout, a crashed pod's replacement, a scale-up — has to go elsewhere, so a
cluster that is short on spare capacity shows it.

How it is done and reverted: one strategic-merge patch per node sets
`spec.unschedulable: true` and the annotation `chaos.pystol.org/cordoned-by:
<job id>`, conditional on the resourceVersion just read (a node someone else
changed in between is not overwritten). The undo puts `spec.unschedulable`
back to what it was and removes the annotation, and only acts on a node that
still carries this job's annotation: a node that was already cordoned before
the job is never selected, and is never uncordoned by it, and an undo that
runs twice, or for a patch that never landed, does nothing.

Node selection (shared with node-drain): `target.names` take precedence and
every named node is hit; otherwise the nodes matching `target.label_selector`
(all nodes without one), of which `mode`/`value` (or the original Pystol's
`amount`) choose at random, capped by `max_targets`. Control-plane nodes
(label `node-role.kubernetes.io/control-plane` or `.../master`) and nodes that
are already cordoned are never candidates, unless the admin policy's `include_control_plane`
lifts the first rule.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field

from pystol_worker.actions.base import Action, ActionError, NodeChoosingParams, Selection
from pystol_worker.core.model import JobSpec, Target, TargetKind, TargetRef
from pystol_worker.faults.fault_holding import Fault, hold_faults, lock_targets
from pystol_worker.faults.pod_selection import choose
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import NotFound
from pystol_worker.kube.objects import is_control_plane
from pystol_worker.safety.job_context import RunContext, SelectContext
from pystol_worker.safety.revert_journal import JournalEntry, same_object

CORDONED_BY = "chaos.pystol.org/cordoned-by"
UNCORDON = "uncordon-node"


class NodeCordonParams(NodeChoosingParams):

    seed: int | None = Field(None, description="Random seed for choosing among the matching "
                                               "nodes, to repeat an experiment exactly.")


# -- node selection, shared with node-drain ------------------------------------------------------

def is_cordoned(node: dict[str, Any]) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def node_ref(node: dict[str, Any]) -> TargetRef:
    meta = node["metadata"]
    return TargetRef(kind="Node", name=meta["name"], uid=meta.get("uid"), node=meta["name"])


def select_nodes(cluster: Cluster, target: Target, include_control_plane: bool,
                 seed: int | None) -> Selection:
    """Nodes by names (all of them) or by label selector (mode/value at random)."""
    rng = random.Random(seed)
    excluded: list[str] = []
    if target.names:
        nodes = []
        for name in dict.fromkeys(target.names):
            try:
                nodes.append(cluster.get_node(name))
            except NotFound:
                excluded.append(f"node {name} does not exist")
    else:
        nodes = cluster.list_nodes(target.label_selector)
    candidates = []
    for node in nodes:
        name = node["metadata"]["name"]
        if is_control_plane(node) and not include_control_plane:
            excluded.append(f"node {name} is a control-plane node "
                            "(the admin policy's include_control_plane allows it)")
        elif is_cordoned(node):
            excluded.append(f"node {name} is already cordoned; Pystol leaves it alone")
        else:
            candidates.append(node)
    candidates.sort(key=lambda n: n["metadata"]["name"])
    if target.names:
        chosen = list(candidates)
    else:
        chosen = choose(candidates, target.mode, target.value, rng)
    if target.max_targets is not None and len(chosen) > target.max_targets:
        excluded.append(f"{len(chosen) - target.max_targets} node(s) left out by max_targets")
        chosen = chosen[:target.max_targets]
    chosen.sort(key=lambda n: n["metadata"]["name"])
    return Selection(matched=len(candidates), chosen=[node_ref(n) for n in chosen],
                     excluded=excluded, objects=chosen)


def node_target_problems(spec: JobSpec) -> list[tuple[str, str]]:
    problems = []
    if spec.target.field_selector:
        problems.append(("target.field_selector", f"{spec.action} selects nodes by names or "
                         "label_selector; a field selector is not supported"))
    return problems


# -- the cordon fault and its undo ---------------------------------------------------------------

def cordon_fault(ctx: RunContext, ref: TargetRef) -> Fault:
    """A Fault that cordons one node (undone by `uncordon`, which node-drain declares too)."""
    job_id = ctx.job_id
    node = ctx.cluster.get_node(ref.name)
    original = (node.get("spec") or {}).get("unschedulable")

    def inject() -> None:
        current = ctx.cluster.get_node(ref.name)
        if is_cordoned(current):
            raise ActionError(f"node {ref.name} was cordoned by someone else after it was "
                                 "selected; Pystol leaves it alone")
        ctx.cluster.patch("Node", None, ref.name, {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"],
                         "annotations": {CORDONED_BY: job_id}},
            "spec": {"unschedulable": True}})

    return Fault(target=ref, undo=UNCORDON, description=f"cordoned node {ref.name}",
                 inject=inject, data={"node": ref.name, "job_id": job_id,
                                      "original_unschedulable": original,
                                      "had_annotations": "annotations" in node["metadata"]})


def uncordon(cluster: Cluster, entry: JournalEntry) -> None:
    """Restore spec.unschedulable, only on a node this job's cordon is still on."""
    name = entry.data.get("node") or entry.target.name
    try:
        node = cluster.get_node(name)
    except NotFound:
        return
    if not same_object(node, entry):
        return  # a node re-registered under the same name was never cordoned by this job
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    if annotations.get(CORDONED_BY) != entry.job_id:
        return  # never cordoned by this job, or already uncordoned
    original = entry.data.get("original_unschedulable")
    # A node that had no annotations gets none back, not an empty map.
    only_ours = set(annotations) == {CORDONED_BY} and not entry.data.get("had_annotations")
    cluster.patch("Node", None, name, {
        "metadata": {"annotations": None if only_ours else {CORDONED_BY: None}},
        "spec": {"unschedulable": original}})  # None removes the field, as it was


class NodeCordon(Action[NodeCordonParams]):
    name = "node-cordon"
    description = ("Cordon the selected nodes (no new pods are scheduled there; running pods "
                   "stay) for the duration, then uncordon exactly the nodes this job cordoned. "
                   "Control-plane and already-cordoned nodes are never chosen.")
    target_kind = TargetKind.NODES
    Params = NodeCordonParams
    undo = {UNCORDON: uncordon}

    def check(self, spec: JobSpec, params: NodeCordonParams | None) -> list[tuple[str, str]]:
        problems = node_target_problems(spec)
        if not spec.duration:
            problems.append(("duration", "node-cordon holds the cordon for a duration; give "
                             "one, e.g. \"duration\": \"60s\""))
        if spec.target.min_available is not None:
            problems.append(("target.min_available", "node-cordon evicts nothing, so "
                             "min_available does not apply (node-drain honours it)"))
        return problems

    def select(self, ctx: SelectContext, spec: JobSpec, params: NodeCordonParams
               ) -> Selection:
        return select_nodes(ctx.cluster, spec.target, ctx.policy.include_control_plane,
                            params.seed)

    def execute(self, ctx: RunContext, spec: JobSpec, params: NodeCordonParams,
                selection: Selection) -> None:
        lock_targets(ctx, spec, selection.chosen)
        faults = [cordon_fault(ctx, ref) for ref in selection.chosen]
        hold_faults(ctx, spec, self.name, faults, hold_seconds=spec.duration)
