"""node-drain: cordon nodes, evict their pods, hold, uncordon, and time the recovery.

What it simulates: `kubectl drain` — node maintenance, a kernel upgrade, a
spot instance being reclaimed with notice. The selected nodes are cordoned
first (all of them, so that a pod evicted from one is not rescheduled onto the
next), then their pods are evicted through the Eviction API, which honours
PodDisruptionBudgets. DaemonSet pods (their controller would put them straight
back) and mirror pods (annotation `kubernetes.io/config.mirror`, owned by the
kubelet) are skipped, as `kubectl drain --ignore-daemonsets` does; so are pods
in protected namespaces, and pods no controller manages (nothing would
recreate them) unless the admin policy's `drain_force` is true.

A PodDisruptionBudget that refuses an eviction (429) is retried with a short
backoff until `params.eviction_timeout`; what still could not be evicted is
listed in the result (`output.not_evicted`) and the timeline. The job then
holds the cordon for `duration` anyway and uncordons afterwards; it fails only
if `params.fail_on_blocked_eviction` is true. `target.min_available` (a count
or a percent of each workload's desired replicas) makes the drain evict fewer
pods: ready pods of a workload are only evicted while that many stay ready, and
the pods kept are listed in `output.kept_for_min_available`.

Reverted: the cordon, exactly as node-cordon reverts it (the undo is shared).
Evictions are not undone — the workloads' controllers recreate the pods on
other nodes — and recovery is observed by watch: from a workload's first
eviction until it again has its desired number of ready pods.

Accepts the original Pystol's drainnodes inputs: `target.amount`,
`target.names` (taking precedence) and `duration`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from pystol_worker.actions.base import (
    Action,
    ActionError,
    NodeChoosingParams,
    Selection,
    moved_to_policy,
)
from pystol_worker.actions.node_cordon import (
    UNCORDON,
    cordon_fault,
    node_target_problems,
    select_nodes,
    uncordon,
)
from pystol_worker.core.model import Change, Duration, EventKind, JobSpec, TargetKind, TargetRef
from pystol_worker.faults.blast_radius import required_available
from pystol_worker.faults.fault_holding import hold_faults, lock_targets
from pystol_worker.faults.pod_selection import pod_ref
from pystol_worker.faults.recovery import RecoveryObserver
from pystol_worker.kube.cluster_access import ClusterError, NotFound
from pystol_worker.kube.objects import (
    Workload,
    controller_ref,
    is_ready,
    is_terminating,
    resolve_workload,
    utc,
)
from pystol_worker.safety.job_context import RunContext, SelectContext

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FIRST_BACKOFF, MAX_BACKOFF = 0.25, 2.0


class NodeDrainParams(NodeChoosingParams):

    eviction_timeout: Duration = Field(
        60.0, le=3600, description="How long evictions refused by a PodDisruptionBudget (429) "
                                   "are retried before they are reported as not evicted.")
    fail_on_blocked_eviction: bool = Field(
        False, description="Fail the job when some pods could not be evicted (the cordon is "
                           "still held for the duration and reverted either way).")
    grace_period_seconds: int | None = Field(
        None, ge=0, le=3600, description="Grace period for the evictions; default: the "
                                         "pod's own.")
    seed: int | None = Field(None, description="Random seed for choosing among the matching "
                                               "nodes, to repeat an experiment exactly.")

    force: SkipJsonSchema[Any] = Field(None, exclude=True)

    @field_validator("force")
    @classmethod
    def _force_is_policy(cls, value: Any) -> Any:
        return moved_to_policy(value, "force", "drain_force")


@dataclass
class _Planned:
    pod: dict[str, Any]
    ref: TargetRef
    node: str
    observer: RecoveryObserver | None


@dataclass
class Drain:
    """The eviction half of a drain, run once every selected node is cordoned."""

    ctx: RunContext
    spec: JobSpec
    params: NodeDrainParams
    nodes: list[str]
    observers: dict[str, RecoveryObserver] = field(default_factory=dict)

    def __post_init__(self) -> None:
        output = self.ctx.result.output
        self.evicted: list[dict[str, Any]] = output.setdefault("evicted", [])
        self.not_evicted: list[dict[str, Any]] = output.setdefault("not_evicted", [])
        self.skipped: list[dict[str, Any]] = output.setdefault("skipped", [])
        self.kept: list[dict[str, Any]] = output.setdefault("kept_for_min_available", [])

    # -- planning ---------------------------------------------------------------------------------

    def _skip_reason(self, pod: dict[str, Any]) -> str | None:
        meta = pod["metadata"]
        owner = controller_ref(pod)
        if is_terminating(pod):
            return "already terminating"
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return "already finished"
        if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            return "mirror pod (the kubelet owns it)"
        if owner is not None and owner.get("kind") == "DaemonSet":
            return "DaemonSet pod"
        if self.ctx.settings.is_protected(meta.get("namespace", "")):
            return "namespace is protected"
        if owner is None and not self.ctx.policy.drain_force:
            return ("no controller manages it: nothing would recreate it (the admin "
                    "policy's drain_force evicts it anyway)")
        return None

    @staticmethod
    def _describe(pod: dict[str, Any], node: str, workload: Any = None,
                  **extra: Any) -> dict[str, Any]:
        item = {"namespace": pod["metadata"].get("namespace"), "pod": pod["metadata"]["name"],
                "node": node}
        if workload is not None:
            item["workload"] = str(workload)
        return {**item, **extra}

    def _plan(self) -> list[_Planned]:
        cache: dict[tuple[str, str, str], Workload | None] = {}
        candidates: list[tuple[dict[str, Any], str, Workload | None]] = []
        for node in self.nodes:
            pods = self.ctx.cluster.list_all_pods(f"spec.nodeName={node}")
            pods.sort(key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))
            for pod in pods:
                reason = self._skip_reason(pod)
                if reason is not None:
                    self.skipped.append(self._describe(pod, node, reason=reason))
                    continue
                candidates.append((pod, node, resolve_workload(self.ctx.cluster, pod, cache)))
        by_workload: dict[str, list[tuple[dict[str, Any], str]]] = {}
        plan: list[_Planned] = []
        for pod, node, workload in candidates:
            if workload is None:
                plan.append(_Planned(pod, pod_ref(pod), node, None))
                continue
            key = str(workload.ref)
            if key not in self.observers:
                self.observers[key] = RecoveryObserver(self.ctx.cluster, workload, 0)
            by_workload.setdefault(key, []).append((pod, node))
        for key, pods_on_nodes in by_workload.items():
            observer = self.observers[key]
            observer.start()
            allowed = self._allowed_ready(observer)
            for pod, node_name in pods_on_nodes:
                ref = pod_ref(pod)
                ref.workload = observer.workload.ref
                if is_ready(pod) and allowed is not None:
                    if allowed <= 0:
                        self.kept.append(self._describe(pod, node_name,
                                                        observer.workload.ref))
                        continue
                    allowed -= 1
                observer.planned_kills += 1
                plan.append(_Planned(pod, ref, node_name, observer))
        for key in [key for key, observer in self.observers.items()
                    if not observer.planned_kills]:
            self.observers.pop(key).stop.set()
        return plan

    def _allowed_ready(self, observer: RecoveryObserver) -> int | None:
        """How many ready pods of this workload may go, or None without min_available."""
        min_available = self.spec.target.min_available
        if min_available is None:
            return None
        workload = observer.workload
        required = required_available(min_available, workload.desired)
        with observer.changed:
            ready = observer.ready_count()
        allowed = max(0, ready - required)
        self.ctx.event(EventKind.MIN_AVAILABLE,
                       f"{workload.ref}: min_available {min_available} keeps "
                       f"{required} of {workload.desired} pod(s) ready; {ready} are, so at most "
                       f"{allowed} ready pod(s) may be evicted", workload=str(workload.ref),
                       required=required, ready=ready, allowed=allowed)
        return allowed

    # -- evicting ---------------------------------------------------------------------------------

    def evict_all(self) -> None:
        """Runs inside the last cordon's injection: every selected node is cordoned now."""
        plan = self._plan()
        # The evicted pods' workloads are touched too: no other running job may hold a
        # fault on them meanwhile (waits or refuses as the job asked).
        lock_targets(self.ctx, self.spec, [item.ref for item in plan])
        self.ctx.event(EventKind.DRAINING, f"cordoned {len(self.nodes)} node(s); evicting "
                       f"{len(plan)} pod(s), skipping {len(self.skipped)}"
                       + (f", keeping {len(self.kept)} for min_available" if self.kept else ""),
                       nodes=self.nodes, skipped=self.skipped)
        if self.kept:
            self.ctx.event(EventKind.KEPT, f"kept {len(self.kept)} pod(s) to honour min_available "
                           f"{self.spec.target.min_available}: " + ", ".join(
                               f"{k['namespace']}/{k['pod']}" for k in self.kept),
                           pods=self.kept)
        timeout = self.params.eviction_timeout
        deadline = time.monotonic() + timeout
        backoff = FIRST_BACKOFF
        pending = plan
        refusals: dict[str, str] = {}
        while pending:
            retry: list[_Planned] = []
            for index, item in enumerate(pending):
                if self.ctx.cancelled():
                    # Stop evicting; hold_faults notices the abort next and reverts.
                    for left in pending[index:]:
                        self._give_up(left, None, "the job was aborted before evicting it")
                    return
                refusal = self._evict(item)
                if refusal is not None:
                    key = f"{item.ref.namespace}/{item.ref.name}"
                    if key not in refusals:
                        self.ctx.event(EventKind.EVICTION_BLOCKED,
                                       f"eviction of pod {key} refused: "
                                       f"{refusal}; retrying for up to {timeout:g}s",
                                       pod=item.ref.name, namespace=item.ref.namespace)
                    refusals[key] = refusal
                    retry.append(item)
            pending = retry
            if not pending:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.ctx.stop.wait(min(backoff, remaining))
            backoff = min(MAX_BACKOFF, backoff * 2)
        for item in pending:
            key = f"{item.ref.namespace}/{item.ref.name}"
            self._give_up(item, refusals.get(key), f"still refused after {timeout:g}s: "
                          f"{refusals.get(key)}")
        for observer in self.observers.values():
            observer.kills_finished()

    def _give_up(self, item: _Planned, refusal: str | None, reason: str) -> None:
        if item.observer is not None:
            item.observer.record_skipped_kill()
        entry = self._describe(item.pod, item.node, item.ref.workload, reason=reason)
        if refusal is None:
            self.skipped.append(entry)
            return
        self.not_evicted.append(entry)
        self.ctx.event(EventKind.NOT_EVICTED, f"pod {item.ref.namespace}/{item.ref.name} on "
                       f"{item.node} was not evicted: {reason}", pod=item.ref.name,
                       namespace=item.ref.namespace, node=item.node)

    def _evict(self, item: _Planned) -> str | None:
        """Evict one pod; the refusal to retry, or None when done (evicted or not to retry)."""
        namespace, name = item.ref.namespace or "", item.ref.name
        at = time.time()
        try:
            self.ctx.cluster.evict(namespace, name, self.params.grace_period_seconds)
        except NotFound:
            if item.observer is not None:
                item.observer.record_skipped_kill()
            self.skipped.append(self._describe(item.pod, item.node, item.ref.workload,
                                               reason="gone before its eviction"))
            return None
        except ClusterError as error:
            # status None: the API server could not be reached; like 429 and 5xx, that is
            # retried here until eviction_timeout, with a cancel/halt check before each try.
            if error.status is None or error.status in RETRY_STATUSES:
                return str(error).removeprefix("Kubernetes API answered ")
            self._give_up(item, str(error), f"eviction failed: {error}")
            return None
        if item.observer is not None:
            item.observer.record_kill(item.ref.uid or "", at)
        self.evicted.append(self._describe(item.pod, item.node, item.ref.workload))
        self.ctx.result.changes.append(Change(target=item.ref, action=f"evicted from node "
                                              f"{item.node}", started_at=utc(at)))
        message = f"evicted pod {namespace}/{name} from node {item.node}"
        with contextlib.suppress(Exception):  # a courtesy; the eviction happened anyway
            self.ctx.cluster.post_event(item.ref, "v1", "PystolChaos",
                                        f"{message} by Pystol job {self.ctx.job_id} (node-drain)")
        self.ctx.event(EventKind.EVICTED, message + (f" ({item.ref.workload})" if item.ref.workload
                                             else ""), pod=name, namespace=namespace,
                       node=item.node)
        return None

    # -- after the uncordon -----------------------------------------------------------------------

    def observe_recovery(self) -> list[str]:
        observers = [o for o in self.observers.values() if o.kills_done]
        timeout = self.spec.recovery_timeout or self.ctx.settings.recovery_timeout_seconds
        if observers:
            self.ctx.event(EventKind.OBSERVING, f"waiting up to {timeout:g}s for {len(observers)} "
                           "workload(s) whose pods were evicted to recover")
        deadline = time.monotonic() + timeout
        for observer in observers:
            observer.wait(deadline, self.ctx)
        problems = []
        for observer in observers:
            outcome = observer.result()
            self.ctx.result.recovery.append(outcome)
            if observer.error:
                problems.append(observer.error)
            elif outcome.recovered:
                self.ctx.event(EventKind.RECOVERED, f"{outcome.workload} recovered in "
                               f"{outcome.recovery_seconds:.2f}s",
                               workload=str(outcome.workload),
                               recovery_seconds=outcome.recovery_seconds)
            else:
                problems.append(f"{outcome.workload} did not recover within {timeout:g}s "
                                f"({outcome.ready_replicas}/{outcome.desired_replicas} ready)")
        times = [r.recovery_seconds for r in self.ctx.result.recovery
                 if r.recovery_seconds is not None]
        self.ctx.metrics.recovery_seconds = max(times) if times else None
        return problems

    def stop(self) -> None:
        for observer in self.observers.values():
            observer.stop.set()


class NodeDrain(Action[NodeDrainParams]):
    name = "node-drain"
    description = ("Cordon the selected nodes and evict their pods through the Eviction API "
                   "(honouring PodDisruptionBudgets; DaemonSet and mirror pods are skipped), "
                   "hold the cordon for the duration, uncordon, and measure how long the "
                   "evicted pods' workloads take to be fully ready again.")
    target_kind = TargetKind.NODES
    Params = NodeDrainParams
    # The cordon is node-cordon's, undone by the same function under the same name.
    undo = {UNCORDON: uncordon}

    def check(self, spec: JobSpec, params: NodeDrainParams | None) -> list[tuple[str, str]]:
        return node_target_problems(spec)

    def select(self, ctx: SelectContext, spec: JobSpec, params: NodeDrainParams
               ) -> Selection:
        return select_nodes(ctx.cluster, spec.target, ctx.policy.include_control_plane,
                            params.seed)

    def execute(self, ctx: RunContext, spec: JobSpec, params: NodeDrainParams,
                selection: Selection) -> None:
        lock_targets(ctx, spec, selection.chosen)
        drain = Drain(ctx, spec, params, [ref.name for ref in selection.chosen])
        faults = [cordon_fault(ctx, ref) for ref in selection.chosen]
        try:
            hold_faults(ctx, spec, self.name, faults, hold_seconds=spec.duration,
                        after_inject=drain.evict_all)
            ctx.check()
            problems = drain.observe_recovery()
        finally:
            drain.stop()
        if drain.not_evicted and params.fail_on_blocked_eviction:
            problems.insert(0, f"{len(drain.not_evicted)} pod(s) could not be evicted: "
                            + ", ".join(f"{item['namespace']}/{item['pod']}"
                                        for item in drain.not_evicted))
        if problems:
            raise ActionError("; ".join(problems))
