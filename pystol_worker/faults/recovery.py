"""Kill pods on a schedule and time how long their workloads take to heal.

Recovery is measured by watching, not polling: before the first kill, one
observer per affected workload lists the workload's pods and then follows a
watch from that list's resourceVersion. A workload has recovered when, after
the last of its planned kills, it again has its desired number of ready pods
that are neither terminating nor among the killed ones. `recovery_seconds` runs
from the workload's first kill to the watch event that completed it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pystol_worker.core.errors import PermanentError
from pystol_worker.core.model import Change, JobSpec, TargetRef, WorkloadRecovery, WorkloadRef
from pystol_worker.faults.fault_holding import lock_targets
from pystol_worker.faults.selection import Selection
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError, NotFound
from pystol_worker.safety.job_context import JobContext

WATCH_SLICE_SECONDS = 5


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


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def selector_string(selector: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


@dataclass
class Workload:
    ref: WorkloadRef
    desired: int
    selector: str


def resolve_workload(cluster: ClusterAccess, pod: dict[str, Any],
                     cache: dict[tuple[str, str, str], Workload | None]) -> Workload | None:
    """The top workload a pod belongs to (ReplicaSet -> Deployment), through ownerReferences."""
    namespace = pod["metadata"].get("namespace", "")
    owner = next((ref for ref in pod["metadata"].get("ownerReferences") or ()
                  if ref.get("controller")), None)
    if owner is None:
        return None
    key = (owner["kind"], namespace, owner["name"])
    if key in cache:
        return cache[key]
    workload: Workload | None = None
    try:
        obj = cluster.get_workload(owner["kind"], namespace, owner["name"])
        if owner["kind"] == "ReplicaSet":
            parent = next((ref for ref in obj["metadata"].get("ownerReferences") or ()
                           if ref.get("controller") and ref.get("kind") == "Deployment"), None)
            if parent is not None:
                obj = cluster.get_workload("Deployment", namespace, parent["name"])
        kind = obj.get("kind") or owner["kind"]
        spec = obj.get("spec") or {}
        if kind == "DaemonSet":
            desired = int((obj.get("status") or {}).get("desiredNumberScheduled", 0))
        else:
            desired = int(spec.get("replicas", 1))
        workload = Workload(WorkloadRef(kind=kind, namespace=namespace,
                                        name=obj["metadata"]["name"]),
                            desired, selector_string(spec.get("selector") or {}))
    except (NotFound, ClusterError):
        workload = None
    cache[key] = workload
    return workload


@dataclass
class RecoveryObserver:
    """Follows one workload's pods by watch and notes when it is whole again."""

    cluster: ClusterAccess
    workload: Workload
    planned_kills: int
    pods: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # uid -> (ready, terminating)
    killed: set[str] = field(default_factory=set)
    kills_done: int = 0
    first_kill: float | None = None
    recovered_at: float | None = None
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        pods, resource_version = self.cluster.list_pods(self.workload.ref.namespace,
                                                        self.workload.selector)
        for pod in pods:
            self._note(pod)
        self._thread = threading.Thread(target=self._follow, args=(resource_version,),
                                        name=f"recovery-{self.workload.ref.name}", daemon=True)
        self._thread.start()

    def ready_count(self) -> int:
        return sum(1 for uid, (ready, terminating) in self.pods.items()
                   if ready and not terminating and uid not in self.killed)

    def _note(self, pod: dict[str, Any], deleted: bool = False) -> None:
        uid = pod["metadata"].get("uid", "")
        if deleted:
            self.pods.pop(uid, None)
        else:
            self.pods[uid] = (_ready(pod), bool(pod["metadata"].get("deletionTimestamp")))

    def _evaluate(self, now: float) -> None:
        if self.recovered_at is None and self.kills_done >= self.planned_kills \
                and self.ready_count() >= self.workload.desired:
            self.recovered_at = now
            self.changed.notify_all()

    def record_kill(self, uid: str, at: float) -> None:
        with self.changed:
            self.killed.add(uid)
            self.kills_done += 1
            if self.first_kill is None:
                self.first_kill = at

    def record_skipped_kill(self) -> None:
        with self.changed:
            self.planned_kills -= 1
            self._evaluate(time.time())

    def _follow(self, resource_version: str) -> None:
        while not self.stop.is_set() and self.recovered_at is None:
            try:
                for kind, obj in self.cluster.watch_pods(
                        self.workload.ref.namespace, self.workload.selector, resource_version,
                        WATCH_SLICE_SECONDS):
                    now = time.time()
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            pods, resource_version = self.cluster.list_pods(
                                self.workload.ref.namespace, self.workload.selector)
                            with self.changed:
                                self.pods.clear()
                                for pod in pods:
                                    self._note(pod)
                                self._evaluate(now)
                            break
                        raise ClusterError(str(obj.get("message", obj)))
                    resource_version = (obj.get("metadata") or {}).get("resourceVersion",
                                                                        resource_version)
                    if kind == "BOOKMARK":
                        continue
                    with self.changed:
                        self._note(obj, deleted=kind == "DELETED")
                        self._evaluate(now)
                    if self.stop.is_set() or self.recovered_at is not None:
                        return
            except Exception as error:
                with self.changed:
                    self.error = f"watching {self.workload.ref}: {error}"
                    self.changed.notify_all()
                return

    def kills_finished(self) -> None:
        with self.changed:
            self._evaluate(time.time())

    def wait(self, deadline: float, ctx: JobContext) -> None:
        while True:
            with self.changed:
                if self.recovered_at is not None or self.error:
                    return
                self.changed.wait(0.2)
            ctx.check()
            if time.monotonic() >= deadline:
                return

    def result(self) -> WorkloadRecovery:
        first = self.first_kill or time.time()
        recovered = self.recovered_at is not None
        return WorkloadRecovery(
            workload=self.workload.ref, desired_replicas=self.workload.desired,
            first_injection_at=_utc(first), recovered=recovered,
            recovered_at=_utc(self.recovered_at) if self.recovered_at else None,
            recovery_seconds=round(self.recovered_at - first, 3) if self.recovered_at else None,
            ready_replicas=self.ready_count())


def _plan(ctx: JobContext, selection: Selection
          ) -> tuple[list[tuple[TargetRef, RecoveryObserver | None]], dict[str, RecoveryObserver]]:
    cache: dict[tuple[str, str, str], Workload | None] = {}
    observers: dict[str, RecoveryObserver] = {}
    plan: list[tuple[TargetRef, RecoveryObserver | None]] = []
    for ref, pod in zip(selection.chosen, selection.objects, strict=True):
        workload = resolve_workload(ctx.cluster, pod, cache)
        observer = None
        if workload is not None:
            ref.workload = workload.ref
            key = str(workload.ref)
            observer = observers.get(key)
            if observer is None:
                observer = observers[key] = RecoveryObserver(ctx.cluster, workload, 0)
            observer.planned_kills += 1
        plan.append((ref, observer))
    return plan, observers


def kill_pods_and_observe(ctx: JobContext, spec: JobSpec, selection: Selection, *,
                          grace_period: int | None, distribution: str | None,
                          seed: int | None, reselect: Callable[[], Selection]) -> None:
    rng = random.Random(seed)
    plan, observers = _plan(ctx, selection)
    while lock_targets(ctx, spec, [ref for ref, _ in plan]):
        # We waited for another job: what we chose before may have died or moved meanwhile.
        selection = reselect()
        ctx.event("selected", f"{len(selection.chosen)} of {selection.matched} matching pods "
                  "selected again after waiting", **selection.summary())
        if not selection.chosen:
            raise PermanentError("no targets left after waiting for the other job")
        plan, observers = _plan(ctx, selection)
    try:
        for observer in observers.values():
            observer.start()
        _kill(ctx, spec, plan, grace_period, distribution, rng)
        for observer in observers.values():
            observer.kills_finished()
        timeout = spec.recovery_timeout or ctx.settings.recovery_timeout_seconds
        if observers and ctx.metrics.targets_affected:
            ctx.event("observing", f"waiting up to {timeout:g}s for "
                      f"{len(observers)} workload(s) to recover")
        deadline = time.monotonic() + timeout
        for observer in observers.values():
            observer.wait(deadline, ctx)
    finally:
        for observer in observers.values():
            observer.stop.set()
    if not ctx.metrics.targets_affected:
        raise PermanentError("no pod was killed: every selected pod was gone before its kill")
    _report(ctx, list(observers.values()), timeout)


def _kill(ctx: JobContext, spec: JobSpec, plan: list[tuple[TargetRef, RecoveryObserver | None]],
          grace_period: int | None, distribution: str | None, rng: random.Random) -> None:
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
                ctx.event("skipped", f"pod {ref.namespace}/{ref.name} was gone before the "
                          "kill", pod=ref.name)
                if observer is not None:
                    observer.record_skipped_kill()
                continue
            raise
        if observer is not None:
            observer.record_kill(ref.uid or "", at)
        ctx.result.changes.append(Change(target=ref, action="deleted", at=_utc(at)))
        ctx.metrics.targets_affected += 1
        if ctx.metrics.injected_at is None:
            ctx.metrics.injected_at = _utc(at)
        ctx.event("injected", f"deleted pod {ref.namespace}/{ref.name}"
                  + (f" of {ref.workload}" if ref.workload else ""),
                  pod=ref.name, namespace=ref.namespace, node=ref.node)


def _report(ctx: JobContext, observers: list[RecoveryObserver], timeout: float) -> None:
    problems = []
    for observer in observers:
        outcome = observer.result()
        ctx.result.recovery.append(outcome)
        if observer.error:
            problems.append(observer.error)
        elif outcome.recovered:
            ctx.event("recovered", f"{outcome.workload} recovered in "
                      f"{outcome.recovery_seconds:.2f}s", workload=str(outcome.workload),
                      recovery_seconds=outcome.recovery_seconds)
        elif observer.kills_done:
            problems.append(f"{outcome.workload} did not recover within {timeout:g}s "
                            f"({outcome.ready_replicas}/{outcome.desired_replicas} ready)")
    times = [r.recovery_seconds for r in ctx.result.recovery if r.recovery_seconds is not None]
    ctx.metrics.recovery_seconds = max(times) if times else None
    if problems:
        raise PermanentError("; ".join(problems))


# -- observing a held fault (pod-failure, deployment-scale) ----------------------------------------


@dataclass
class HoldObserver(RecoveryObserver):
    """A `RecoveryObserver` for a fault that is held and then reverted.

    It follows one workload's pods by watch from before the injection. While the
    fault is held it notes which of the `watched` pods went not-ready and the
    lowest ready count; recovery is only evaluated once `reverted()` was called,
    and `recovery_seconds` runs from the revert to the watch event that brought
    the workload back to its desired number of ready pods.
    """

    watched: set[str] = field(default_factory=set)
    unready_seen: set[str] = field(default_factory=set)
    injected_at: float | None = None
    reverted_at: float | None = None
    lowest_ready: int | None = None

    def injected(self, at: float) -> None:
        with self.changed:
            if self.injected_at is None:
                self.injected_at = at

    def reverted(self, at: float) -> None:
        with self.changed:
            self.reverted_at = at
            self.kills_done = self.planned_kills
            self.first_kill = self.injected_at or at
            self._evaluate(time.time())

    def _holding(self) -> bool:
        return self.injected_at is not None and self.reverted_at is None

    def _note(self, pod: dict[str, Any], deleted: bool = False) -> None:
        super()._note(pod, deleted)
        uid = pod["metadata"].get("uid", "")
        if self._holding() and uid in self.watched and not deleted \
                and not self.pods.get(uid, (True, False))[0]:
            self.unready_seen.add(uid)

    def _evaluate(self, now: float) -> None:
        if self._holding():
            ready = self.ready_count()
            self.lowest_ready = ready if self.lowest_ready is None \
                else min(self.lowest_ready, ready)
        super()._evaluate(now)

    def outcome(self) -> WorkloadRecovery:
        start = self.injected_at or self.reverted_at or time.time()
        recovered = self.recovered_at is not None and self.reverted_at is not None
        return WorkloadRecovery(
            workload=self.workload.ref, desired_replicas=self.workload.desired,
            first_injection_at=_utc(start), recovered=recovered,
            recovered_at=_utc(self.recovered_at) if recovered and self.recovered_at else None,
            recovery_seconds=round(max(0.0, self.recovered_at - self.reverted_at), 3)
            if recovered and self.recovered_at and self.reverted_at else None,
            ready_replicas=self.ready_count())


def hold_observer(cluster: ClusterAccess, workload: Workload) -> HoldObserver:
    # One planned "kill" stands for the revert: nothing is evaluated until it happened.
    return HoldObserver(cluster, workload, 1)


def wait_for_recovery(ctx: JobContext, spec: JobSpec, observers: list[HoldObserver],
                      reverted_at: float) -> None:
    """After the revert: wait (by watch) for every workload, record it, fail if one did not."""
    timeout = spec.recovery_timeout or ctx.settings.recovery_timeout_seconds
    for observer in observers:
        observer.reverted(reverted_at)
    if observers:
        ctx.event("observing", f"waiting up to {timeout:g}s for {len(observers)} workload(s) "
                  "to be ready again")
    deadline = time.monotonic() + timeout
    for observer in observers:
        observer.wait(deadline, ctx)
    problems = []
    for observer in observers:
        outcome = observer.outcome()
        ctx.result.recovery.append(outcome)
        if outcome.recovered:
            ctx.event("recovered", f"{outcome.workload} was ready again "
                      f"{outcome.recovery_seconds:.2f}s after the revert",
                      workload=str(outcome.workload),
                      recovery_seconds=outcome.recovery_seconds)
        elif observer.error:
            problems.append(observer.error)
        else:
            problems.append(f"{outcome.workload} was not ready again within {timeout:g}s of "
                            f"the revert ({outcome.ready_replicas}/"
                            f"{outcome.desired_replicas} ready)")
    times = [r.recovery_seconds for r in ctx.result.recovery if r.recovery_seconds is not None]
    ctx.metrics.recovery_seconds = max(times) if times else None
    if problems:
        raise PermanentError("; ".join(problems))
