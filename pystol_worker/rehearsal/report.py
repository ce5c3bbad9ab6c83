"""What a rehearsal tells before anything touches the real cluster: `RehearsalReport`.

- **predicted targets** per action step: what its selection matched and chose on the copy
  (a dry run of the step's job), per workload — "1 of 3 pods of Deployment shop/web".
  Pod names differ on a copy (the snapshot drops controller-owned pods and the copy makes
  its own), so the workloads and counts are the prediction, not the names;
- **blast radius** per workload: desired replicas, the fewest ready during the run, and
  `lost` = desired - that; per PodDisruptionBudget: evictions it blocked (node-drain's
  `eviction-blocked` events) and whether it was *violated* — the covered ready pods went
  below what it asks for, which deletions (pod-kill) can do since only evictions honour
  a budget;
- **recovery** per workload in simulated seconds: what Pystol's own recovery observers
  measured on the copy, in wall seconds, * the speed — the unit of the real cluster;
- the **verdict** and **score** the experiment reached on the copy, and what was **not
  rehearsed** (Prometheus probes and guards, probes of URLs outside the cluster).

Arithmetic only (no I/O), so it is unit-tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field, computed_field

from pystol_worker.core.model import EventKind, JobRecord, Run, TargetRef, Verdict, WorkloadRef
from pystol_worker.rehearsal.observe import BudgetState, WorkloadState


class PredictedWorkload(BaseModel):
    workload: WorkloadRef
    target_kind: str = Field("Pod", description="What is counted: its pods, or the "
                                                "workload itself (deployment-scale).")
    chosen: int = Field(description="Targets of this workload the step would hit (for a "
                                    "node, the pods on it).")
    desired: int | None = Field(None, description="Its replicas on the copy.")


class PredictedStep(BaseModel):
    path: str = Field(examples=["method[1].steps[0]"])
    name: str
    action: str
    matched: int = 0
    chosen: int = 0
    workloads: list[PredictedWorkload] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list, description="What it would hit "
                               "(kind namespace/name), as named on the copy.")
    excluded: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the step could not be predicted "
                                                "(refused, invalid, no targets).")


class WorkloadBlast(BaseModel):
    workload: WorkloadRef
    desired: int
    min_ready: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lost(self) -> int:
        return max(0, self.desired - self.min_ready)


class BudgetBlast(BaseModel):
    namespace: str
    name: str
    expected_pods: int = Field(description="Pods it covered when the rehearsal started.")
    min_available: int = Field(description="Healthy pods it asks for.")
    min_healthy: int = Field(description="The fewest healthy covered pods during the run.")
    blocked_evictions: int = Field(0, description="Evictions it refused (node-drain).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def violated(self) -> bool:
        """The covered ready pods went below what the budget asks for."""
        return self.min_healthy < self.min_available


class RecoveryPrediction(BaseModel):
    workload: WorkloadRef
    step: str | None = Field(None, description="The step whose fault it recovered from.")
    recovered: bool
    measured_seconds: float | None = Field(None, description="Wall seconds on the copy.")
    simulated_seconds: float | None = Field(None, description="measured * speed: what the "
                                                              "real cluster should take.")


class RehearsalReport(Run):
    """One rehearsal of an experiment on a copy of a cluster (see the module docstring)."""

    experiment: str
    snapshot: str = Field(description="The snapshot file the copy was loaded from.")
    speed: float = Field(description="How many times faster the copy's clock ran.")
    run_id: str | None = Field(None, description="The experiment run on the copy.")
    verdict: Verdict | None = None
    score: float | None = None
    reason: str | None = None
    predicted: list[PredictedStep] = Field(default_factory=list)
    blast_radius: list[WorkloadBlast] = Field(default_factory=list)
    budgets: list[BudgetBlast] = Field(default_factory=list)
    recovery: list[RecoveryPrediction] = Field(default_factory=list)
    not_rehearsed: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# -- building it ---------------------------------------------------------------------------


def simulated_seconds(measured: float | None, speed: float) -> float | None:
    """Wall seconds on the copy → seconds on the real cluster."""
    return None if measured is None else measured * speed


def _key(ref: WorkloadRef) -> tuple[str, str, str]:
    return (ref.kind, ref.namespace, ref.name)


def predicted_step(path: str, name: str, record: JobRecord,
                   desired: dict[tuple[str, str, str], int] | None = None,
                   affected: list[TargetRef] | None = None) -> PredictedStep:
    """What a dry run of a step's job chose, per workload. `affected`: the chosen targets
    per workload when the record's own do not say (pods resolved to their workload, the
    pods on a chosen node); default the record's targets."""
    step = PredictedStep(path=path, name=name, action=record.spec.action)
    selected = next((event for event in record.timeline if event.kind == EventKind.SELECTED),
                    None)
    if selected is not None:
        step.matched = int(selected.data.get("matched", 0) or 0)
        step.excluded = [str(e) for e in selected.data.get("excluded") or ()][:20]
    chosen: list[TargetRef] = list(record.targets)
    step.chosen = len(chosen)
    step.targets = [f"{ref.kind} {ref.namespace}/{ref.name}" if ref.namespace
                    else f"{ref.kind} {ref.name}" for ref in chosen]
    counts: dict[tuple[str, str, str, str], int] = {}
    refs: dict[tuple[str, str, str, str], WorkloadRef] = {}
    for ref in chosen if affected is None else affected:
        if ref.workload is not None:
            key = (*_key(ref.workload), ref.kind)
            counts[key] = counts.get(key, 0) + 1
            refs[key] = ref.workload
    step.workloads = [PredictedWorkload(workload=refs[key], target_kind=key[3], chosen=count,
                                        desired=(desired or {}).get(key[:3]))
                      for key, count in sorted(counts.items())]
    if record.status.value != "succeeded":
        step.error = record.reason or record.status.value
    return step


def blast_radius(states: Iterable[WorkloadState],
                 always: Iterable[WorkloadRef] = ()) -> list[WorkloadBlast]:
    """Workloads that lost ready pods, and those in `always` (the predicted targets)."""
    wanted = {_key(ref) for ref in always}
    found = []
    for state in states:
        min_ready = state.ready if state.min_ready is None else state.min_ready
        if min_ready < state.desired or _key(state.ref) in wanted:
            found.append(WorkloadBlast(workload=state.ref, desired=state.desired,
                                       min_ready=min_ready))
    return sorted(found, key=lambda blast: _key(blast.workload))


def blocked_pods(records: Iterable[JobRecord]) -> list[tuple[str, str]]:
    """(namespace, pod) of every eviction a budget blocked, from the jobs' timelines."""
    found = []
    for record in records:
        for event in record.timeline:
            if event.kind == EventKind.EVICTION_BLOCKED:
                found.append((str(event.data.get("namespace", "")),
                              str(event.data.get("pod", ""))))
    return found


def budget_report(budgets: Iterable[BudgetState],
                  blocked: Iterable[tuple[str, str]] = ()) -> list[BudgetBlast]:
    blocked = list(blocked)
    found = []
    for budget in budgets:
        healthy = budget.healthy if budget.min_healthy is None else budget.min_healthy
        found.append(BudgetBlast(
            namespace=budget.namespace, name=budget.name, expected_pods=budget.expected,
            min_available=budget.min_available, min_healthy=healthy,
            blocked_evictions=sum(1 for namespace, pod in blocked
                                  if namespace == budget.namespace and pod in budget.pods)))
    return sorted(found, key=lambda b: (b.namespace, b.name))


def recovery_report(steps: Iterable[tuple[str | None, JobRecord]], speed: float
                    ) -> list[RecoveryPrediction]:
    """Per workload and step: what the step's job measured, * speed."""
    found = []
    for step, record in steps:
        for recovery in record.result.recovery:
            found.append(RecoveryPrediction(
                workload=recovery.workload, step=step, recovered=recovery.recovered,
                measured_seconds=recovery.recovery_seconds,
                simulated_seconds=simulated_seconds(recovery.recovery_seconds, speed)))
    return found


def as_dict(report: RehearsalReport) -> dict[str, Any]:
    return report.model_dump(mode="json")
