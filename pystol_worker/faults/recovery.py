"""Watching workloads recover: one observer per workload, following its pods by watch.

Recovery is measured by watching, not polling: an observer starts from a list of the
workload's pods and follows a watch from that list's resourceVersion. The list is made
before the first injection: by the observer itself (`start`), or for pod-kill it is the
selection's own list, and the observer reads the workload and starts watching only after
the first DELETE (`start_after_kill`), since a watch replays every event after a list.
A workload has recovered when, after the last of its planned kills, it again has its
desired number of ready pods (`kube.objects.is_ready`) that are neither terminating nor
among the killed ones. `recovery_seconds` runs from the workload's first kill to the
watch event that completed it.

- `RecoveryObserver`: for faults that take pods away at once (pod-kill, node-drain's
  evictions; container-kill extends it per container).
- `HoldObserver` and `wait_for_recovery`: for a fault that is held and then reverted
  (pod-failure, deployment-scale); recovery is timed from the revert.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pystol_worker.core.errors import ActionError
from pystol_worker.core.model import EventKind, JobSpec, WorkloadRecovery
from pystol_worker.faults.selection import PodListing
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.kube.objects import Workload, is_ready, is_terminating, read_workload, utc
from pystol_worker.safety.job_context import RunContext

WATCH_SLICE_SECONDS = 5


@dataclass
class RecoveryObserver:
    """Follows one workload's pods by watch and notes when it is whole again."""

    cluster: Cluster
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
    # False until `start_after_kill` read the workload: only its ref is known before.
    resolved: bool = True
    gone: bool = False  # the workload was not found (404) when read after the kill
    _thread: threading.Thread | None = None

    def start(self) -> None:
        pods, resource_version = self.cluster.list_pods(self.workload.ref.namespace,
                                                        self.workload.selector)
        for pod in pods:
            self._note(pod)
        self._thread = threading.Thread(target=self._follow, args=(resource_version,),
                                        name=f"recovery-{self.workload.ref.name}", daemon=True)
        self._thread.start()

    def start_after_kill(self, listing: PodListing | None) -> None:
        """Start following once the first kill of this workload was sent (pod-kill).

        Nothing here delays a DELETE: in the observer's own thread it reads the workload
        (its desired replicas and selector, which the kill did not need: the lock is taken
        on the ref alone), then starts from `listing`, the selection's own list, when that
        list holds exactly this workload's pods. Its watch from that list's
        resourceVersion replays every event since, the kill included, so nothing is
        missed; a version too old by then (410) lists again. Otherwise it lists itself."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._resolve_and_follow, args=(listing,),
                                        name=f"recovery-{self.workload.ref.name}", daemon=True)
        self._thread.start()

    def _resolve_and_follow(self, listing: PodListing | None) -> None:
        ref = self.workload.ref
        try:
            workload = read_workload(self.cluster, ref)
            if workload is None:  # gone: as for a pod no workload owns, nothing to observe
                with self.changed:
                    self.gone = True
                    self.changed.notify_all()
                return
            if listing is not None and listing.covers(ref.namespace, workload.selector):
                pods, resource_version = listing.pods, listing.resource_version
            else:
                pods, resource_version = self.cluster.list_pods(ref.namespace,
                                                                workload.selector)
            with self.changed:
                self.workload = workload
                self.resolved = True
                for pod in pods:
                    self._note(pod)
                self._evaluate(time.time())
        except Exception as error:
            with self.changed:
                self.error = f"watching {ref}: {error}"
                self.changed.notify_all()
            return
        self._follow(resource_version)

    def ready_count(self) -> int:
        return sum(1 for uid, (ready, terminating) in self.pods.items()
                   if ready and not terminating and uid not in self.killed)

    def _note(self, pod: dict[str, Any], deleted: bool = False) -> None:
        uid = pod["metadata"].get("uid", "")
        if deleted:
            self.pods.pop(uid, None)
        else:
            self.pods[uid] = (is_ready(pod), is_terminating(pod))

    def _evaluate(self, now: float) -> None:
        if self.resolved and self.recovered_at is None \
                and self.kills_done >= self.planned_kills \
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

    def _relist(self) -> str:
        """List again after the server said our resourceVersion is gone (410): the pods
        as they are now replace what we knew. Returns the new list's version."""
        pods, resource_version = self.cluster.list_pods(self.workload.ref.namespace,
                                                        self.workload.selector)
        with self.changed:
            self.pods.clear()
            for pod in pods:
                self._note(pod)
            self._evaluate(time.time())
        return resource_version

    def _follow(self, resource_version: str) -> None:
        while not self.stop.is_set() and self.recovered_at is None:
            try:
                for kind, obj in self.cluster.watch_pods(
                        self.workload.ref.namespace, self.workload.selector, resource_version,
                        WATCH_SLICE_SECONDS):
                    now = time.time()
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            resource_version = self._relist()
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
            except ClusterError as error:
                if error.status == 410:  # the watch refused to open from that version
                    try:
                        resource_version = self._relist()
                        continue
                    except Exception as relist_error:
                        error = ClusterError(str(relist_error))
                with self.changed:
                    self.error = f"watching {self.workload.ref}: {error}"
                    self.changed.notify_all()
                return
            except Exception as error:
                with self.changed:
                    self.error = f"watching {self.workload.ref}: {error}"
                    self.changed.notify_all()
                return

    def kills_finished(self) -> None:
        with self.changed:
            self._evaluate(time.time())

    def wait(self, deadline: float, ctx: RunContext) -> None:
        while True:
            with self.changed:
                if self.recovered_at is not None or self.error or self.gone:
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
            first_injection_at=utc(first), recovered=recovered,
            recovered_at=utc(self.recovered_at) if self.recovered_at else None,
            recovery_seconds=round(self.recovered_at - first, 3) if self.recovered_at else None,
            ready_replicas=self.ready_count())


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
            first_injection_at=utc(start), recovered=recovered,
            recovered_at=utc(self.recovered_at) if recovered and self.recovered_at else None,
            recovery_seconds=round(max(0.0, self.recovered_at - self.reverted_at), 3)
            if recovered and self.recovered_at and self.reverted_at else None,
            ready_replicas=self.ready_count())


def hold_observer(cluster: Cluster, workload: Workload) -> HoldObserver:
    # One planned "kill" stands for the revert: nothing is evaluated until it happened.
    return HoldObserver(cluster, workload, 1)


def wait_for_recovery(ctx: RunContext, spec: JobSpec, observers: list[HoldObserver],
                      reverted_at: float) -> None:
    """After the revert: wait (by watch) for every workload, record it, fail if one did not."""
    timeout = spec.recovery_timeout or ctx.settings.recovery_timeout_seconds
    for observer in observers:
        observer.reverted(reverted_at)
    if observers:
        ctx.event(EventKind.OBSERVING,
                  f"waiting up to {timeout:g}s for {len(observers)} workload(s) "
                  "to be ready again")
    deadline = time.monotonic() + timeout
    for observer in observers:
        observer.wait(deadline, ctx)
    problems = []
    for observer in observers:
        outcome = observer.outcome()
        ctx.result.recovery.append(outcome)
        if outcome.recovered:
            ctx.event(EventKind.RECOVERED, f"{outcome.workload} was ready again "
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
        raise ActionError("; ".join(problems))
