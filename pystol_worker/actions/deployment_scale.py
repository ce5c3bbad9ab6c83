"""deployment-scale: change Deployments' and StatefulSets' replica counts for a while.

What it simulates: capacity loss (a bad rollout or an autoscaler gone wrong
scales a service down, to zero if asked) or a sudden scale-up, and whether the
rest of the system copes; afterwards, how long the workload takes to be whole
again once its replica count is given back.

How: the selected workloads (Deployments and/or StatefulSets in
`target.namespaces`, by label selector and/or one name given as the field selector
`metadata.name=<name>` — Chaos Toolkit's `scale_deployment` names its Deployment — then
Chaos Mesh's mode/value) are
scaled through their `scale` subresource to `replicas`, or to `percent` of
their current count (rounded down). The revert journal entry, written before
the change, records the replica count the workload had; the undo scales it
back to that count. The undo is idempotent and does nothing when the workload
is gone or was replaced by a new one of the same name.

Observed: the lowest number of ready pods of each workload while the fault was
held, and — by watch — how long after the restore each workload was back to
its original number of ready pods (`recovery_seconds`, counted from the revert).
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pystol_worker.actions.base import Action, ActionError, Selection
from pystol_worker.core.model import EventKind, JobSpec, Target, TargetKind, TargetRef, WorkloadRef
from pystol_worker.faults.blast_radius import required_available
from pystol_worker.faults.fault_holding import Fault, hold_faults, lock_targets
from pystol_worker.faults.pod_selection import choose
from pystol_worker.faults.recovery import HoldObserver, hold_observer, wait_for_recovery
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import NotFound
from pystol_worker.kube.objects import Workload, is_terminating, selector_string
from pystol_worker.safety.job_context import RunContext, SelectContext
from pystol_worker.safety.revert_journal import JournalEntry, same_object

UNDO_RESTORE_REPLICAS = "restore-replicas"
log = logging.getLogger("pystol.actions.deployment_scale")
WorkloadKind = Literal["Deployment", "StatefulSet"]
# A scale-up is a fault too, and one the cluster pays for: no workload is scaled past this
# many replicas, nor to more than this many times the count it has (at least 1), whether
# `replicas` or `percent` asked for it.
MAX_SCALE_REPLICAS = 1000
MAX_SCALE_UP_FACTOR = 10


class DeploymentScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[WorkloadKind] = Field(["Deployment", "StatefulSet"], min_length=1,
                                      max_length=2,
                                      description="Which kinds of workload to select.")
    replicas: int | None = Field(None, ge=0, le=MAX_SCALE_REPLICAS, description="Scale each "
                                 "selected workload to this many replicas (give this or "
                                 "percent); at most 10 times its current count.")
    percent: float | None = Field(
        None, ge=0, le=MAX_SCALE_UP_FACTOR * 100, allow_inf_nan=False,
        description="Scale each selected workload to this percent of its current replicas, "
                    "rounded down (give this or replicas); 50 halves it, 0 scales it to zero.")
    seed: int | None = Field(None, description="Random seed for selection, to repeat an "
                                               "experiment exactly.")


def _current_replicas(obj: dict[str, Any]) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def new_replicas(params: DeploymentScaleParams, current: int) -> int:
    if params.replicas is not None:
        return params.replicas
    assert params.percent is not None
    # round() first: 3 * 110 / 100 is 3.3000000000000003 in binary floating point.
    return math.floor(round(current * params.percent / 100, 9))


def _min_available(target: Target, current: int) -> int:
    """Replicas the scale must leave: `min_available` of the current count (0 without it)."""
    if target.min_available is None:
        return 0
    return required_available(target.min_available, current)


def _plan(obj: dict[str, Any], params: DeploymentScaleParams, target: Target
          ) -> tuple[int, int, str | None]:
    """(current replicas, replicas to scale to, why the workload is left out or None)."""
    meta = obj["metadata"]
    where = f"{obj['kind']} {meta.get('namespace')}/{meta['name']}"
    current = _current_replicas(obj)
    new = new_replicas(params, current)
    if is_terminating(obj):
        return current, new, f"{where} is being deleted"
    if new == current:
        return current, new, f"{where} already has {current} replica(s)"
    asked = "params.replicas" if params.replicas is not None else "params.percent"
    if new > MAX_SCALE_REPLICAS:
        return current, new, (f"{where}: {asked} would scale it from {current} to {new} "
                              f"replicas; at most {MAX_SCALE_REPLICAS}")
    if new > MAX_SCALE_UP_FACTOR * max(current, 1):
        return current, new, (f"{where}: {asked} would scale it from {current} to {new} "
                              f"replicas, more than {MAX_SCALE_UP_FACTOR} times its count")
    keep = _min_available(target, current)
    if new < keep:
        return current, new, (f"{where}: scaling from {current} to {new} would leave fewer "
                              f"than min_available={target.min_available} ({keep})")
    return current, new, None


def _ref(obj: dict[str, Any]) -> TargetRef:
    meta = obj["metadata"]
    return TargetRef(kind=obj["kind"], name=meta["name"], namespace=meta.get("namespace"),
                     uid=meta.get("uid"))


def restore_replicas(cluster: Cluster, entry: JournalEntry) -> None:
    """Scale the workload back to the replica count it had before the fault.

    Only the workload the entry recorded (uid), and only while it still has the count this
    job set (`scaled_to`): that count is the fault's mark. (An annotation would need `patch`
    on Deployments, which would let a worker change images; the worker is granted only the
    scale subresource.) Someone who rescaled it since is not overruled, and an old entry
    replayed does nothing unless the count happens to be the one it set."""
    kind, namespace, name = entry.target.kind, entry.target.namespace or "", entry.target.name
    replicas = int(entry.data["replicas"])
    try:
        obj = cluster.get_workload(kind, namespace, name)
    except NotFound:
        return  # the workload is gone: nothing left to restore
    if not same_object(obj, entry):
        return  # a new workload of the same name has its own replica count
    current = _current_replicas(obj)
    if current == replicas:
        return
    scaled_to = entry.data.get("scaled_to")
    if scaled_to is None or current != int(scaled_to):
        log.warning("not restoring %s %s/%s to %d replicas: it has %d, not the %s this job "
                    "set (someone rescaled it since)", kind, namespace, name, replicas,
                    current, scaled_to)
        return
    try:
        cluster.set_scale(kind, namespace, name, replicas)
    except NotFound:
        return


class DeploymentScale(Action[DeploymentScaleParams]):
    name = "deployment-scale"
    description = ("Scale the selected Deployments/StatefulSets to a replica count (or a percent "
                   "of their current one) for the duration, then restore the count they had "
                   "and measure how long they take to be fully ready again.")
    target_kind = TargetKind.WORKLOADS
    Params = DeploymentScaleParams
    undo = {UNDO_RESTORE_REPLICAS: restore_replicas}

    def check(self, spec: JobSpec, params: DeploymentScaleParams | None
              ) -> list[tuple[str, str]]:
        problems = []
        if not spec.duration:
            problems.append(("duration", "deployment-scale holds its fault for a duration: "
                             "give one, e.g. \"duration\": \"60s\""))
        if spec.target.field_selector and workload_name(spec.target.field_selector) is None:
            problems.append(("target.field_selector", "deployment-scale takes only "
                             "metadata.name=<name> (one workload by name, as Chaos Toolkit's "
                             "scale_deployment names it); select others by label_selector"))
        if params is not None:
            if params.replicas is not None and params.percent is not None:
                problems.append(("params.percent", "give either replicas or percent, not both"))
            elif params.replicas is None and params.percent is None:
                problems.append(("params.replicas", "give the replica count to scale to "
                                 "(replicas) or a percent of the current count (percent)"))
        return problems

    def select(self, ctx: SelectContext, spec: JobSpec, params: DeploymentScaleParams
               ) -> Selection:
        target = spec.target
        rng = random.Random(params.seed)
        candidates: list[dict[str, Any]] = []
        excluded: list[str] = []
        kinds = list(dict.fromkeys(params.kinds))
        only = workload_name(target.field_selector) if target.field_selector else None
        for namespace in target.namespaces:
            if ctx.settings.is_protected(namespace):
                excluded.append(f"namespace {namespace} is protected")
                continue
            for kind in kinds:
                for obj in ctx.cluster.list_workloads(kind, namespace, target.label_selector):
                    if only is not None and obj["metadata"].get("name") != only:
                        continue
                    obj["kind"] = kind
                    _, _, reason = _plan(obj, params, target)
                    if reason:
                        excluded.append(reason)
                    else:
                        candidates.append(obj)
        candidates.sort(key=_sort_key)
        chosen = choose(candidates, target.mode, target.value, rng)
        if target.max_targets is not None:
            chosen = chosen[:target.max_targets]
        chosen.sort(key=_sort_key)
        return Selection(matched=len(candidates), chosen=[_ref(obj) for obj in chosen],
                         excluded=excluded, objects=chosen)

    def execute(self, ctx: RunContext, spec: JobSpec, params: DeploymentScaleParams,
                selection: Selection) -> None:
        lock_targets(ctx, spec, selection.chosen)
        faults: list[Fault] = []
        observers: list[HoldObserver] = []
        report: list[dict[str, Any]] = []
        for ref in selection.chosen:
            kind, namespace = ref.kind, ref.namespace or ""
            try:
                obj = ctx.cluster.get_workload(kind, namespace, ref.name)
            except NotFound:
                obj = None
            if obj is None or obj["metadata"].get("uid") != ref.uid:
                ctx.event(EventKind.SKIPPED, f"{kind} {namespace}/{ref.name} was gone before the "
                          "injection", workload=ref.name)
                continue
            obj["kind"] = kind
            current, new, reason = _plan(obj, params, spec.target)
            if reason:
                ctx.event(EventKind.SKIPPED, reason, workload=ref.name)
                continue
            workload = Workload(WorkloadRef(kind=kind, namespace=namespace, name=ref.name),
                                current, selector_string((obj.get("spec") or {})
                                                          .get("selector") or {}))
            observer = hold_observer(ctx.cluster, workload)
            observers.append(observer)

            def inject(cluster: Cluster = ctx.cluster, kind: str = kind,
                       namespace: str = namespace, name: str = ref.name, replicas: int = new,
                       observer: HoldObserver = observer) -> None:
                cluster.set_scale(kind, namespace, name, replicas)
                observer.injected(time.time())
            faults.append(Fault(
                target=ref, undo=UNDO_RESTORE_REPLICAS, inject=inject, api_version="apps/v1",
                description=f"scaled {kind} {namespace}/{ref.name} from {current} to {new} "
                            "replica(s)",
                data={"replicas": current, "scaled_to": new}))
            report.append({"workload": str(workload.ref), "uid": ref.uid,
                           "original_replicas": current, "scaled_to": new})
        if not faults:
            raise ActionError("every selected workload was gone or changed before the "
                                 "fault could be injected")
        ctx.result.output["workloads"] = report
        try:
            for observer in observers:
                observer.start()
            hold_faults(ctx, spec, self.name, faults, hold_seconds=spec.duration)
            reverted_at = time.time()
            for item, observer in zip(report, observers, strict=True):
                item["lowest_ready_while_held"] = observer.lowest_ready
            wait_for_recovery(ctx, spec, observers, reverted_at)
        finally:
            for observer in observers:
                observer.stop.set()


def workload_name(field_selector: str) -> str | None:
    """The name in `metadata.name=<name>` (or `==`), the one field selector deployment-scale
    takes; None for anything else. The name filter is applied to the listed workloads here
    rather than sent to the API server, so it means the same against every cluster (and
    the fake one): exactly that name, nothing else."""
    text = field_selector.strip()
    for prefix in ("metadata.name==", "metadata.name="):
        if text.startswith(prefix):
            name = text[len(prefix):]
            if _WORKLOAD_NAME.fullmatch(name):
                return name
            return None
    return None


_WORKLOAD_NAME = re.compile(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?")


def _sort_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["metadata"].get("namespace", ""), obj["kind"], obj["metadata"]["name"])
