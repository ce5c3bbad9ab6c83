"""cpu-stress and memory-stress: a noisy neighbour on the node, for `duration`.

What it simulates: a process on the same node eating CPU (or memory) — a batch
job without limits, a runaway sidecar, a crypto miner. Pystol starts one
stress-ng pod (image `params.image`) per target and deletes it when the hold
ends:

- co-located (the default): one stress pod next to each selected pod, with the
  same `nodeName`, in that pod's namespace; the pods are chosen with the usual
  namespaces + selectors + mode/value (only `Running` pods: a pod without a
  node has no neighbours to disturb);
- node-pinned: with `params.node` (or `target.names`), one stress pod per named
  node, in `params.namespace` (default `default`).

Every stress pod carries the labels `app.kubernetes.io/managed-by=pystol` and
`chaos.pystol.org/job=<job id>`, `restartPolicy: Never`, tolerations for the
node's taints, and resource limits that match the stress (CPU: workers times load
percent of a core; memory: workers times bytes plus headroom for stress-ng itself).
Requests stay small on purpose: a noisy neighbour is one the kubelet did not
budget for, and a large request could be refused admission on a busy node.

Revert: the undo `delete-stress-pod` deletes the stress pod (gone already is
fine; a pod of that name that belongs to another job is left alone). Three
belts hold the braces: the revert journal (the reaper deletes pods of dead
workers), `activeDeadlineSeconds` (the kubelet stops the pod even if Pystol is
gone) and stress-ng's own `--timeout`.

The stress removes no pods, so there is no workload recovery to time; the
result's output lists the stress pods (name, namespace, node, args).
"""

from __future__ import annotations

import logging
import math
import re
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import Field, field_validator

from pystol_worker.actions.base import Action, ActionError, NodeChoosingParams, Selection
from pystol_worker.core.model import JobSpec, NamespaceName, Target, TargetKind, TargetRef
from pystol_worker.faults.fault_holding import Fault, hold_faults, lock_targets
from pystol_worker.faults.pod_selection import select_pods
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import ClusterError, NotFound
from pystol_worker.kube.objects import (
    CONTROL_PLANE_LABELS,
    Workload,
    is_control_plane,
    resolve_workload,
)
from pystol_worker.safety.job_context import RunContext, SelectContext
from pystol_worker.safety.revert_journal import JournalEntry

log = logging.getLogger("pystol.actions.stress")

DEFAULT_IMAGE = "ghcr.io/colinianking/stress-ng:latest"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
JOB_LABEL = "chaos.pystol.org/job"
ACTION_LABEL = "chaos.pystol.org/action"
TARGET_ANNOTATION = "chaos.pystol.org/target"
DEFAULT_NAMESPACE = "default"
# How long after the planned end the kubelet and stress-ng stop on their own, should
# both the worker and the reaper be gone.
SAFETY_MARGIN_SECONDS = 60
MEMORY_HEADROOM_BYTES = 64 * 1024 ** 2
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
UNITS = {None: 1, "k": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
         "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4}
MAX_STRESS_BYTES = 1024 ** 4
# A stress pod is bound to its node by nodeName (the scheduler never weighs it) and requests
# almost nothing, so nothing in Kubernetes stops one larger than its node. Its limits are
# checked against the node's allocatable before it is made: memory up to this share of it
# (the rest is the kubelet's room to evict rather than the kernel's to OOM-kill at random),
# CPU up to all of it.
MAX_NODE_MEMORY_FRACTION = 0.9
NODE_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([-+]?[0-9]+))?"
                           r"(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
NODE_UNITS = {None: 1.0, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
              "E": 1e18, "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40,
              "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}
UNDO_DELETE_STRESS_POD = "delete-stress-pod"


def quantity_bytes(text: str) -> int:
    """Bytes in a Kubernetes memory quantity without fractions: "256Mi", "1G", "1048576"."""
    match = QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a memory quantity such as 256Mi, 1Gi or 500M")
    return int(match[1]) * UNITS[match[2]]


def stress_ng_size(size: int) -> str:
    """A byte count in stress-ng's own units (k, m, g are powers of 1024)."""
    for suffix, unit in (("g", 1024 ** 3), ("m", 1024 ** 2), ("k", 1024)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}b"


def node_quantity(text: str) -> float | None:
    """A Kubernetes quantity as a number ("3920m" -> 3.92, "16Gi", "1.5e9"); None when it
    is missing or not a quantity (what a node reports is not ours to refuse)."""
    match = NODE_QUANTITY.fullmatch(text.strip())
    if match is None:
        return None
    exponent = int(match[2]) if match[2] else 0
    if abs(exponent) > 30:
        return None
    return float(match[1]) * 10.0 ** exponent * NODE_UNITS[match[3]]


def memory_quantity(size: int) -> str:
    for suffix, unit in (("Gi", 1024 ** 3), ("Mi", 1024 ** 2), ("Ki", 1024)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


class StressParams(NodeChoosingParams):

    image: str = Field(DEFAULT_IMAGE, min_length=1, max_length=512,
                       pattern=r"^[^\s]+$",
                       description="Container image with stress-ng as its entrypoint.")
    workers: int = Field(1, ge=1, le=64, description="Number of stress-ng workers.")
    node: str | None = Field(
        None, max_length=253,
        description="Pin one stress pod to this node instead of placing one next to each "
                    "selected pod (target.names pins to several nodes).")
    namespace: NamespaceName | None = Field(
        None, description="Namespace of node-pinned stress pods; default `default`. "
                          "Co-located stress pods run in their target pod's namespace.")
    seed: int | None = Field(None, description="Random seed for the pod selection.")

    @field_validator("node")
    @classmethod
    def _node_name(cls, value: str | None) -> str | None:
        if value is not None and not NODE_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid node name")
        return value


class CpuStressParams(StressParams):
    load: int = Field(100, ge=1, le=100,
                      description="CPU load per worker, in percent of one core.")


class MemoryStressParams(StressParams):
    bytes: str = Field("256Mi", max_length=32, examples=["256Mi", "1Gi"],
                       description="Memory each worker allocates and keeps touching, as a "
                                   "Kubernetes quantity (256Mi, 1Gi, 500M).")

    @field_validator("bytes")
    @classmethod
    def _quantity(cls, value: str) -> str:
        size = quantity_bytes(value)
        if size < 4096:
            raise ValueError("at least 4Ki: stress-ng cannot stress less")
        if size > MAX_STRESS_BYTES:
            raise ValueError("at most 1Ti per worker")
        return value


def _pinned_nodes(target: Target, params: StressParams) -> list[str]:
    if params.node:
        return [params.node]
    return list(dict.fromkeys(target.names))


def _tolerations(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Tolerate exactly the taints the node has now, so the stress pod runs and stays."""
    tolerations = []
    for taint in (node.get("spec") or {}).get("taints") or ():
        toleration = {"key": taint.get("key"), "operator": "Exists"}
        if taint.get("effect"):
            toleration["effect"] = taint["effect"]
        if toleration not in tolerations:
            tolerations.append(toleration)
    return tolerations


def stress_pod_name(prefix: str, job_id: str, index: int) -> str:
    name = f"pystol-{prefix}-{job_id.lower()}-{index}"
    name = re.sub(r"[^a-z0-9-]", "-", name)[:63]
    return name.strip("-")


def delete_stress_pod(cluster: Cluster, entry: JournalEntry) -> None:
    """Delete the job's stress pod; gone already is fine, another job's pod is left alone."""
    namespace, name = entry.data["namespace"], entry.data["pod"]
    try:
        pod = cluster.get_pod(namespace, name)
    except NotFound:
        return
    labels = pod["metadata"].get("labels") or {}
    if labels.get(JOB_LABEL) != entry.job_id:
        log.warning("pod %s/%s does not belong to job %s; not deleting it", namespace, name,
                    entry.job_id)
        return
    cluster.delete("Pod", namespace, name, grace_period=0)


SP = TypeVar("SP", bound=StressParams)


class StressAction(Action[SP]):
    """The code cpu-stress and memory-stress share; subclasses say what to stress."""

    target_kind = TargetKind.PODS
    short_name: ClassVar[str]
    undo = {UNDO_DELETE_STRESS_POD: delete_stress_pod}

    def uses_namespaces(self, spec: JobSpec, params: SP | None) -> bool:
        """Node-pinned jobs (params.node, target.names) select no pods, so need no namespaces.
        Without valid params, assume pods (and ask for namespaces)."""
        return params is None or not _pinned_nodes(spec.target, params)

    @abstractmethod
    def stress_args(self, params: SP, seconds: int) -> list[str]:
        """stress-ng's arguments for this stress, running `seconds`."""

    @abstractmethod
    def resources(self, params: SP) -> dict[str, dict[str, str]]:
        """The stress container's requests and limits."""

    @abstractmethod
    def describe(self, params: SP) -> str:
        """What is stressed, for the timeline ("2x50% CPU")."""

    # -- checks and selection ---------------------------------------------------------------------

    def check(self, spec: JobSpec, params: SP | None) -> list[tuple[str, str]]:
        problems = []
        if not spec.duration:
            problems.append(("duration", f"{self.name} holds a stress for a duration: give one "
                             "(e.g. \"duration\": \"60s\")"))
        if params is not None:
            if params.node and spec.target.names:
                problems.append(("params.node", "give params.node or target.names, not both"))
            if params.namespace and not (params.node or spec.target.names):
                problems.append(("params.namespace", "only node-pinned stress pods (params.node "
                                 "or target.names) take a namespace; co-located ones run in "
                                 "their target pod's namespace"))
        return problems

    def select(self, ctx: SelectContext, spec: JobSpec, params: SP) -> Selection:
        nodes = _pinned_nodes(spec.target, params)
        if nodes:
            return self._fits_nodes(ctx, params, self._select_nodes(ctx, params, nodes))
        # Running pods only (they have a node), and never Pystol's own stress pods; a stress
        # pod lands on its target's node, so pods on control-plane nodes are left out before
        # choosing (unless the admin policy's include_control_plane allows them).
        avoided = [] if ctx.policy.include_control_plane else sorted(
            {node["metadata"]["name"] for label in CONTROL_PLANE_LABELS
             for node in ctx.cluster.list_nodes(label)})
        fields = ",".join(part for part in (spec.target.field_selector, "status.phase=Running",
                                            *(f"spec.nodeName!={name}" for name in avoided))
                          if part)
        labels = ",".join(part for part in (spec.target.label_selector,
                                            f"{MANAGED_BY_LABEL}!=pystol") if part)
        target = spec.target.model_copy(update={"field_selector": fields,
                                                "label_selector": labels})
        selection = select_pods(ctx.cluster, target, ctx.settings, seed=params.seed)
        if avoided:
            selection.excluded.append(f"pods on control-plane nodes ({', '.join(avoided)}) "
                                      "are left out (the admin policy's "
                                      "include_control_plane allows them)")
        chosen, objects = [], []
        for ref, pod in zip(selection.chosen, selection.objects, strict=True):
            if ref.node:
                chosen.append(ref)
                objects.append(pod)
            else:
                selection.excluded.append(f"pod {ref.namespace}/{ref.name} has no node")
        selection.chosen, selection.objects = chosen, objects
        return self._fits_nodes(ctx, params, selection)

    def _fits_nodes(self, ctx: SelectContext, params: SP, selection: Selection) -> Selection:
        """The selection, once the stress pod's limits fit every chosen node's allocatable
        (MAX_NODE_MEMORY_FRACTION of its memory, all of its CPU); an ActionError naming the
        param otherwise. Checked when selecting, so a preview or a dry run says it too, and
        before any stress pod exists. A node that reports no allocatable is not checked."""
        limits = self.resources(params)["limits"]
        memory, cpu = node_quantity(limits["memory"]), node_quantity(limits["cpu"])
        seen: set[str] = set()
        for ref, obj in zip(selection.chosen, selection.objects, strict=True):
            if ref.node is None or ref.node in seen:
                continue
            seen.add(ref.node)
            node = obj if ref.kind == "Node" else ctx.cluster.get_node(ref.node)
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            node_memory = node_quantity(str(allocatable.get("memory", "")))
            if memory is not None and node_memory is not None and \
                    memory > MAX_NODE_MEMORY_FRACTION * node_memory:
                raise ActionError(
                    f"params.bytes: {self.describe(params)} stress needs a memory limit of "
                    f"{limits['memory']}, more than {MAX_NODE_MEMORY_FRACTION:.0%} of node "
                    f"{ref.node}'s allocatable memory ({allocatable['memory']}): use fewer "
                    "bytes or workers")
            node_cpu = node_quantity(str(allocatable.get("cpu", "")))
            if cpu is not None and node_cpu is not None and cpu > node_cpu:
                raise ActionError(
                    f"params.workers: {self.describe(params)} stress needs a CPU limit of "
                    f"{limits['cpu']}, more than node {ref.node}'s allocatable CPU "
                    f"({allocatable['cpu']}): use fewer workers")
        return selection

    def _select_nodes(self, ctx: SelectContext, params: SP, names: list[str]
                      ) -> Selection:
        namespace = params.namespace or DEFAULT_NAMESPACE
        if ctx.settings.is_protected(namespace):
            raise ActionError(f"namespace {namespace!r} is protected "
                                 "(PYSTOL_PROTECTED_NAMESPACES): Pystol starts no stress pod "
                                 "there")
        chosen, objects, excluded = [], [], []
        for name in names:
            try:
                node = ctx.cluster.get_node(name)
            except NotFound:
                excluded.append(f"node {name} not found")
                continue
            if is_control_plane(node) and not ctx.policy.include_control_plane:
                excluded.append(f"node {name} is a control-plane node (the admin policy's "
                                "include_control_plane allows it)")
                continue
            chosen.append(TargetRef(kind="Node", name=name, uid=node["metadata"].get("uid"),
                                    node=name))
            objects.append(node)
        return Selection(matched=len(chosen), chosen=chosen, excluded=excluded,
                         objects=objects)

    # -- injection --------------------------------------------------------------------------------

    def execute(self, ctx: RunContext, spec: JobSpec, params: SP,
                selection: Selection) -> None:
        pinned = bool(_pinned_nodes(spec.target, params))
        seconds = math.ceil(spec.duration or 0) + SAFETY_MARGIN_SECONDS
        nodes: dict[str, dict[str, Any]] = {}
        cache: dict[tuple[str, str, str], Workload | None] = {}
        faults: list[Fault] = []
        stress_pods: list[dict[str, Any]] = []
        for index, (ref, obj) in enumerate(zip(selection.chosen, selection.objects,
                                               strict=True)):
            assert ref.node is not None
            if pinned:
                node = obj
                namespace = params.namespace or DEFAULT_NAMESPACE
            else:
                workload = resolve_workload(ctx.cluster, obj, cache)
                if workload is not None:
                    ref.workload = workload.ref
                if ref.node not in nodes:
                    nodes[ref.node] = ctx.cluster.get_node(ref.node)
                node = nodes[ref.node]
                namespace = ref.namespace or DEFAULT_NAMESPACE
            name = stress_pod_name(self.short_name, ctx.job_id, index)
            body = self.pod_body(ctx.job_id, name, namespace, ref, node, params, seconds)
            where = f"on node {ref.node}" if pinned else \
                f"next to pod {ref.namespace}/{ref.name} on node {ref.node}"
            description = f"{self.describe(params)} stress from pod {namespace}/{name} {where}"
            faults.append(Fault(target=ref, undo=UNDO_DELETE_STRESS_POD,
                                description=description,
                                inject=self._creator(ctx.cluster, namespace, body, ctx.job_id,
                                                     stress_pods),
                                data={"namespace": namespace, "pod": name, "node": ref.node}))
        ctx.result.output["stress_pods"] = stress_pods
        lock_targets(ctx, spec, selection.chosen)
        hold_faults(ctx, spec, self.name, faults, hold_seconds=spec.duration)

    @staticmethod
    def _creator(cluster: Cluster, namespace: str, body: dict[str, Any], job_id: str,
                 started: list[dict[str, Any]]) -> Callable[[], None]:
        """The injecting call for one stress pod; it lists the pod in `started` once created."""
        def create() -> None:
            try:
                cluster.create("Pod", namespace, body)
            except ClusterError as error:
                if error.status != 409:
                    raise
                # A retried create whose first attempt went through: fine if it is ours.
                existing = cluster.get_pod(namespace, body["metadata"]["name"])
                labels = existing["metadata"].get("labels") or {}
                if labels.get(JOB_LABEL) != job_id:
                    raise ActionError(f"a pod {namespace}/{body['metadata']['name']} that "
                                         "Pystol did not start for this job is in the way"
                                         ) from None
            started.append({"name": body["metadata"]["name"], "namespace": namespace,
                            "node": body["spec"]["nodeName"],
                            "target": body["metadata"]["annotations"][TARGET_ANNOTATION],
                            "args": body["spec"]["containers"][0]["args"]})
        return create

    def pod_body(self, job_id: str, name: str, namespace: str, ref: TargetRef,
                 node: dict[str, Any], params: SP, seconds: int
                 ) -> dict[str, Any]:
        where = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: "pystol", JOB_LABEL: job_id,
                           ACTION_LABEL: self.name},
                "annotations": {TARGET_ANNOTATION: f"{ref.kind} {where}"},
            },
            "spec": {
                "nodeName": ref.node,
                "restartPolicy": "Never",
                "activeDeadlineSeconds": seconds,
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "tolerations": _tolerations(node),
                "containers": [{
                    "name": "stress",
                    "image": params.image,
                    "args": self.stress_args(params, seconds),
                    "resources": self.resources(params),
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]},
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                }],
            },
        }


class CpuStress(StressAction[CpuStressParams]):
    name = "cpu-stress"
    description = ("Run a stress-ng pod burning CPU next to each selected pod (same node), or "
                   "on named nodes, for the duration; delete it afterwards.")
    Params = CpuStressParams
    short_name = "cpu-stress"

    def stress_args(self, params: CpuStressParams, seconds: int) -> list[str]:
        return ["--cpu", str(params.workers), "--cpu-load", str(params.load),
                "--timeout", f"{seconds}s", "--metrics-brief"]

    def resources(self, params: CpuStressParams) -> dict[str, dict[str, str]]:
        millicores = params.workers * params.load * 10
        return {"limits": {"cpu": f"{millicores}m", "memory": "128Mi"},
                "requests": {"cpu": "10m", "memory": "16Mi"}}

    def describe(self, params: CpuStressParams) -> str:
        return f"{params.workers}x{params.load}% CPU"


class MemoryStress(StressAction[MemoryStressParams]):
    name = "memory-stress"
    description = ("Run a stress-ng pod holding memory next to each selected pod (same node), "
                   "or on named nodes, for the duration; delete it afterwards.")
    Params = MemoryStressParams
    short_name = "memory-stress"

    def stress_args(self, params: MemoryStressParams, seconds: int) -> list[str]:
        return ["--vm", str(params.workers),
                "--vm-bytes", stress_ng_size(quantity_bytes(params.bytes)),
                "--vm-keep", "--timeout", f"{seconds}s", "--metrics-brief"]

    def resources(self, params: MemoryStressParams) -> dict[str, dict[str, str]]:
        limit = params.workers * quantity_bytes(params.bytes) + MEMORY_HEADROOM_BYTES
        return {"limits": {"cpu": f"{params.workers * 1000}m",
                           "memory": memory_quantity(limit)},
                "requests": {"cpu": "10m", "memory": "16Mi"}}

    def describe(self, params: MemoryStressParams) -> str:
        return f"{params.workers}x{params.bytes} memory"
