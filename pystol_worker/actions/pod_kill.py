"""pod-kill: delete selected pods, optionally spread over `duration`, and time the recovery.

The original Pystol's headline action. Kills are spread with a `distribution`:
`uniform` spaces them evenly over the duration; `poisson` places them as a
Poisson process would, given that many arrivals in that window (independent
uniform times, sorted) — random, but with a known mean rate.

How a run goes: before the first DELETE only the selection's list is read (and, once
per ReplicaSet per process, its owner: `kube.objects.workload_ref`), and the no-overlap
locks are taken on the workloads' refs. The kill loop checks for cancel/halt right
before each DELETE (that check is what bounds the halt latency); a pod that is already
gone is skipped, not counted. After a workload's first DELETE its `RecoveryObserver`
reads the workload (desired replicas, selector) and watches in its own thread, from the
selection's list when that list is exactly the workload's pods (the watch replays the
kill). Then each workload is waited for, up to the recovery timeout, and one that does
not come back fails the job.

Nothing is journaled: a deleted pod is not something to revert, its controller
replaces it. The job still takes the no-overlap locks on the workloads, and when it
had to wait for another job (`on_conflict: wait`) it selects again — the pods it chose
before may be dead by then — and records the new selection as the job's targets.
"""

from __future__ import annotations

import random
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pystol_worker.actions.base import Action, ActionError, Selection
from pystol_worker.core.model import Change, EventKind, JobSpec, TargetKind, TargetRef
from pystol_worker.faults.fault_holding import lock_targets
from pystol_worker.faults.pod_selection import select_pods, slim_pod
from pystol_worker.faults.recovery import RecoveryObserver
from pystol_worker.faults.selection import PodListing, record_selection
from pystol_worker.kube.cluster_access import ClusterError, NotFound
from pystol_worker.kube.objects import OWNERS, OwnerCache, Workload, utc, workload_ref
from pystol_worker.safety.job_context import RunContext, SelectContext

KillPlan = list[tuple[TargetRef, RecoveryObserver | None]]


class PodKillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_seconds: int | None = Field(
        None, ge=0, le=3600, description="Grace period for the delete; default: the pod's own.")
    distribution: Literal["uniform", "poisson"] | None = Field(
        None, description="Spread the kills over `duration` (needs a duration); default: "
                          "all at once.")
    seed: int | None = Field(None, description="Random seed for selection and timing, to "
                                               "repeat an experiment exactly.")


def kill_offsets(count: int, duration: float | None, distribution: str | None,
                 rng: random.Random) -> list[float]:
    """Seconds after the start at which each of `count` kills happens.

    uniform: evenly spaced, the first at 0 and the last at duration * (n-1)/n.
    poisson: a Poisson process conditioned on `count` arrivals within the duration,
    i.e. sorted independent uniform times; the mean gap is duration / (count + 1).
    """
    if count <= 0:
        return []
    if not duration or not distribution:
        return [0.0] * count
    if distribution == "uniform":
        return [duration * index / count for index in range(count)]
    if distribution == "poisson":
        return sorted(rng.uniform(0, duration) for _ in range(count))
    raise ValueError(f"unknown distribution {distribution!r}")


class PodKill(Action[PodKillParams]):
    name = "pod-kill"
    description = ("Delete the selected pods (optionally spread over the duration) and measure "
                   "how long their workloads take to be fully ready again.")
    target_kind = TargetKind.PODS
    takes_pods = True
    Params = PodKillParams

    def check(self, spec: JobSpec, params: PodKillParams | None) -> list[tuple[str, str]]:
        if params is not None and params.distribution and not spec.duration:
            return [("params.distribution", "spreading kills needs a duration to spread them "
                     "over (e.g. \"duration\": \"60s\")")]
        return []

    def select(self, ctx: SelectContext, spec: JobSpec, params: PodKillParams) -> Selection:
        return select_pods(ctx.cluster, spec.target, ctx.settings, seed=params.seed,
                           project=slim_pod)

    def execute(self, ctx: RunContext, spec: JobSpec, params: PodKillParams,
                selection: Selection) -> None:
        rng = random.Random(params.seed)
        plan, observers = plan_kills(ctx, selection)
        while lock_targets(ctx, spec, [ref for ref, _ in plan]):
            # We waited for another job: what we chose before may have died or moved
            # meanwhile. Choose again, and make the new choice the job's targets.
            selection = self.guarded_select(ctx, spec, params)
            plan, observers = plan_kills(ctx, selection)
            record_selection(ctx, selection, f"{len(selection.chosen)} of "
                             f"{selection.matched} matching pods selected again after waiting")
            if not selection.chosen:
                raise ActionError("no targets left after waiting for the other job")
        timeout = spec.recovery_timeout or ctx.settings.recovery_timeout_seconds
        try:
            kill_all(ctx, spec, plan, params.grace_period_seconds, params.distribution, rng,
                     selection.listings)
            for observer in observers.values():
                observer.kills_finished()
            if observers and ctx.metrics.targets_affected:
                ctx.event(EventKind.OBSERVING, f"waiting up to {timeout:g}s for "
                          f"{len(observers)} workload(s) to recover")
            deadline = time.monotonic() + timeout
            for observer in observers.values():
                observer.wait(deadline, ctx)
        finally:
            for observer in observers.values():
                observer.stop.set()
        if not ctx.metrics.targets_affected:
            raise ActionError("no pod was killed: every selected pod was gone before its kill")
        report_recovery(ctx, list(observers.values()), timeout)


def plan_kills(ctx: SelectContext, selection: Selection, owners: OwnerCache = OWNERS
               ) -> tuple[KillPlan, dict[str, RecoveryObserver]]:
    """Each chosen pod with the observer of its workload (None for a bare pod); the pods'
    refs get their workload, which is what the no-overlap locks are taken on.

    Only the workload's ref is known here (no read, once `owners` knows the pod's
    ReplicaSet): its size and selector matter for recovery only, and its observer reads
    them after the first DELETE (`RecoveryObserver.start_after_kill`)."""
    observers: dict[str, RecoveryObserver] = {}
    plan: KillPlan = []
    for ref, pod in zip(selection.chosen, selection.objects, strict=True):
        found = workload_ref(ctx.cluster, pod, owners)
        observer = None
        if found is not None:
            ref.workload = found
            key = str(found)
            observer = observers.get(key)
            if observer is None:
                observer = observers[key] = RecoveryObserver(
                    ctx.cluster, Workload(found, 0, ""), 0, resolved=False)
            observer.planned_kills += 1
        plan.append((ref, observer))
    return plan, observers


def kill_all(ctx: RunContext, spec: JobSpec, plan: KillPlan, grace_period: int | None,
             distribution: str | None, rng: random.Random,
             listings: dict[str, PodListing] | None = None) -> None:
    """Delete each planned pod at its offset, checking for cancel/halt right before each.

    After a workload's first DELETE (sent or skipped) its observer starts, from the
    selection's list of that namespace (`listings`) when it fits."""
    listings = listings or {}
    offsets = kill_offsets(len(plan), spec.duration, distribution, rng)
    start = time.monotonic()
    for (ref, observer), offset in zip(plan, offsets, strict=True):
        ctx.sleep(max(0.0, start + offset - time.monotonic()))
        ctx.check()
        at = time.time()
        try:
            ctx.cluster.delete_pod(ref.namespace or "", ref.name, ref.uid, grace_period)
        except ClusterError as error:
            if isinstance(error, NotFound) or error.status == 409:
                ctx.event(EventKind.SKIPPED, f"pod {ref.namespace}/{ref.name} was gone before the "
                          "kill", pod=ref.name)
                if observer is not None:
                    observer.record_skipped_kill()
                    observer.start_after_kill(listings.get(ref.namespace or ""))
                continue
            raise
        if observer is not None:
            observer.record_kill(ref.uid or "", at)
            observer.start_after_kill(listings.get(ref.namespace or ""))
        ctx.result.changes.append(Change(target=ref, action="deleted", started_at=utc(at)))
        ctx.metrics.targets_affected += 1
        if ctx.metrics.injected_at is None:
            ctx.metrics.injected_at = utc(at)
        ctx.event(EventKind.INJECTED, f"deleted pod {ref.namespace}/{ref.name}"
                  + (f" of {ref.workload}" if ref.workload else ""),
                  pod=ref.name, namespace=ref.namespace, node=ref.node)


def report_recovery(ctx: RunContext, observers: list[RecoveryObserver], timeout: float) -> None:
    """Record each workload's recovery; fail the job for one that did not recover."""
    problems = []
    for observer in observers:
        if observer.gone:  # its workload was gone when read: a bare pod, as before
            continue
        outcome = observer.result()
        ctx.result.recovery.append(outcome)
        if observer.error:
            problems.append(observer.error)
        elif outcome.recovered:
            ctx.event(EventKind.RECOVERED, f"{outcome.workload} recovered in "
                      f"{outcome.recovery_seconds:.2f}s", workload=str(outcome.workload),
                      recovery_seconds=outcome.recovery_seconds)
        elif observer.kills_done:
            problems.append(f"{outcome.workload} did not recover within {timeout:g}s "
                            f"({outcome.ready_replicas}/{outcome.desired_replicas} ready)")
    times = [r.recovery_seconds for r in ctx.result.recovery if r.recovery_seconds is not None]
    ctx.metrics.recovery_seconds = max(times) if times else None
    if problems:
        raise ActionError("; ".join(problems))
