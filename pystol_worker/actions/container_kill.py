"""container-kill: kill one container's main process in each selected pod, and time its return.

What it simulates: a process crash (OOM kill, segfault, a panic) inside a pod
that itself stays: same pod, same node, same IP; the kubelet restarts the
container, the restart count goes up, and readiness dips until the new process
is ready. Unlike pod-kill, no controller has to create anything.

How: through the pod's `exec` subresource, `kill -s <signal> 1` sends `signal`
(default SIGTERM) to PID 1 of the chosen container (`container`, default the pod's
first). It takes a signal, never a command: a command of the job's choosing run in
someone else's container is a remote shell, not a fault (a custom resource in one
namespace could read another's service-account token with it). For the same reason
nothing the exec prints is ever copied into the job's reason, timeline or logs: only
its exit code. Which signals are allowed is the admin policy's `signals`.
There is nothing to revert — the kubelet heals it — so no revert-journal entry
is written (as with pod-kill), but the job takes the same no-overlap locks as
the holding actions, so it never kills containers of a workload another job is
holding a fault on. A `PystolChaos` Event is posted on each pod.

Observed by watch, per pod: the container's restart count before and after,
and how long from the kill until the container was ready again after a
restart; per workload: the time from its first kill until it had its desired
number of ready pods again. A kill that exits non-zero, a container
that does not restart, or one that is not ready again within the recovery
timeout fails the job, saying which and why. (An exec session that ends without
an exit status, as happens when the container dies under it, counts as a kill:
whether the container restarted decides.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from pystol_worker.actions.base import Action, ActionError, Selection
from pystol_worker.core.model import (
    Change,
    EventKind,
    JobSpec,
    TargetKind,
    TargetRef,
    WorkloadRef,
)
from pystol_worker.core.policy import Policy, Signal
from pystol_worker.faults.fault_holding import lock_targets
from pystol_worker.faults.pod_selection import select_pods, slim_pod_with_containers
from pystol_worker.faults.recovery import RecoveryObserver
from pystol_worker.kube.cluster_access import ClusterError, NotFound
from pystol_worker.kube.objects import Workload, is_terminating, resolve_workload, utc
from pystol_worker.safety.job_context import RunContext, SelectContext

log = logging.getLogger("pystol.actions.container_kill")
ContainerName = Annotated[str, Field(min_length=1, max_length=63,
                                     pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
NO_EXIT_STATUS = -1


class ContainerKillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    container: ContainerName | None = Field(
        None, description="The container to kill; default: each pod's first container. Pods "
                          "without it are left out.")
    signal: Signal = Field("SIGTERM", description="The signal sent to the container's main "
                                                  "process (PID 1); allowed ones are the admin "
                                                  "policy's `signals`.")
    seed: int | None = Field(None, description="Random seed for selection, to repeat an "
                                               "experiment exactly.")

    # Not a parameter: named only so that a job still sending one (before 0.3) is told why,
    # at `params.command`, and left out of the documented schema.
    command: SkipJsonSchema[Any] = Field(None, exclude=True)

    @field_validator("command")
    @classmethod
    def _no_command(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("container-kill takes a `signal` (e.g. SIGKILL), not a "
                             "`command`: running a command of the job's choosing in another "
                             "workload's container is not a fault Pystol injects")
        return value

    @property
    def kill_command(self) -> list[str]:
        return ["kill", "-s", self.signal.removeprefix("SIG"), "1"]


def _container_name(pod: dict[str, Any], params: ContainerKillParams) -> str | None:
    containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or ()]
    if params.container is None:
        return containers[0] if containers else None
    return params.container if params.container in containers else None


def _container_status(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    statuses: list[dict[str, Any]] = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == container:
            return status
    return None


def _why_not(pod: dict[str, Any], params: ContainerKillParams) -> str | None:
    """Why this pod cannot have its container killed now, or None."""
    where = f"pod {pod['metadata'].get('namespace', '')}/{pod['metadata']['name']}"
    container = _container_name(pod, params)
    if container is None:
        return f"{where} has no container named {params.container}" if params.container \
            else f"{where} has no containers"
    status = _container_status(pod, container)
    if (pod.get("status") or {}).get("phase") != "Running" or status is None \
            or "running" not in (status.get("state") or {}):
        return f"{where}: container {container} is not running"
    return None


@dataclass
class KilledContainer:
    """One container kill and what the watch saw of it afterwards."""

    ref: TargetRef
    container: str
    before: int
    restart_count: int
    sent_at: float = 0.0
    killed: bool = False
    exit_code: int | None = None
    error: str | None = None
    ready_at: float | None = None
    gone: bool = False

    def settled(self) -> bool:
        return self.ready_at is not None or self.gone

    def report(self, signal: str, timeout: float) -> dict[str, Any]:
        seconds = round(self.ready_at - self.sent_at, 3) if self.ready_at else None
        error = self.error
        if error is None and self.killed:
            where = f"container {self.container} of pod {self.ref.namespace}/{self.ref.name}"
            if self.gone:
                error = f"pod {self.ref.namespace}/{self.ref.name} was deleted before " \
                        f"{self.container} was ready again"
            elif self.restart_count <= self.before:
                error = f"{where} did not restart within {timeout:g}s of the kill (restart " \
                        f"count still {self.restart_count})"
            elif self.ready_at is None:
                error = f"{where} restarted but was not ready again within {timeout:g}s"
        return {"pod": self.ref.name, "namespace": self.ref.namespace, "uid": self.ref.uid,
                "workload": str(self.ref.workload) if self.ref.workload else None,
                "container": self.container, "signal": signal, "exit_code": self.exit_code,
                "restart_count_before": self.before, "restart_count_after": self.restart_count,
                "ready_again_seconds": seconds, "error": error}


@dataclass
class ContainerObserver(RecoveryObserver):
    """A `RecoveryObserver` that also follows single containers of the pods it watches.

    A killed container counts as back when the watch shows its restart count above
    the one read right before the kill and its `ready` true. The group (a workload,
    or the bare pods of a namespace) has recovered once every kill happened, every
    killed container is back, and — for a workload — it has its desired number of
    ready pods.
    """

    tracked: dict[str, KilledContainer] = field(default_factory=dict)
    is_workload: bool = True

    def expect(self, kill: KilledContainer) -> None:
        with self.changed:
            self.tracked[kill.ref.uid or ""] = kill

    def kill_done(self, kill: KilledContainer, at: float) -> None:
        with self.changed:
            kill.killed = True
            self.kills_done += 1
            if self.first_kill is None:
                self.first_kill = at
            self._evaluate(time.time())

    def not_killed(self, kill: KilledContainer | None) -> None:
        """A planned kill that did not happen (the pod was gone, the kill failed)."""
        with self.changed:
            if kill is not None:
                self.tracked.pop(kill.ref.uid or "", None)
            self.planned_kills -= 1
            self._evaluate(time.time())

    def _note(self, pod: dict[str, Any], deleted: bool = False) -> None:
        super()._note(pod, deleted)
        kill = self.tracked.get(pod["metadata"].get("uid", ""))
        if kill is None or kill.ready_at is not None:
            return
        if deleted:
            kill.gone = True
            return
        status = _container_status(pod, kill.container)
        if status is None:
            return
        kill.restart_count = max(kill.restart_count, int(status.get("restartCount") or 0))
        if kill.restart_count > kill.before and status.get("ready"):
            kill.ready_at = time.time()

    def _evaluate(self, now: float) -> None:
        if self.recovered_at is not None or self.kills_done < self.planned_kills:
            return
        if not all(kill.settled() for kill in self.tracked.values() if kill.killed):
            return
        if self.is_workload and self.ready_count() < self.workload.desired:
            return
        self.recovered_at = now
        self.changed.notify_all()


class ContainerKill(Action[ContainerKillParams]):
    name = "container-kill"
    description = ("Send a signal (default SIGTERM) to a container's main process in each "
                   "selected pod (through pods/exec), and report its restart count before and "
                   "after and how long it took to be ready again.")
    target_kind = TargetKind.PODS
    takes_pods = True
    Params = ContainerKillParams

    def policy_problems(self, spec: JobSpec, params: ContainerKillParams, policy: Policy
                        ) -> list[tuple[str, str]]:
        if params.signal not in policy.signals:
            return [("params.signal", f"{params.signal} is not allowed by the admin policy "
                                      f"(signals: {', '.join(policy.signals) or 'none'})")]
        return []

    def select(self, ctx: SelectContext, spec: JobSpec, params: ContainerKillParams
               ) -> Selection:
        selection = select_pods(ctx.cluster, spec.target, ctx.settings, seed=params.seed,
                                project=slim_pod_with_containers)
        return selection.without(lambda pod: _why_not(pod, params))

    def execute(self, ctx: RunContext, spec: JobSpec, params: ContainerKillParams,
                selection: Selection) -> None:
        cache: dict[tuple[str, str, str], Workload | None] = {}
        observers: dict[str, ContainerObserver] = {}
        plan: list[tuple[TargetRef, str, ContainerObserver]] = []
        for ref, pod in zip(selection.chosen, selection.objects, strict=True):
            workload = resolve_workload(ctx.cluster, pod, cache)
            if workload is not None:
                ref.workload = workload.ref
                key = str(workload.ref)
            else:  # bare pods: followed per namespace, through the job's own selector
                key = f"pods/{ref.namespace}"
                workload = Workload(WorkloadRef(kind="Pod", namespace=ref.namespace or "",
                                                name="(bare pods)"), 0,
                                    spec.target.label_selector or "")
            observer = observers.get(key)
            if observer is None:
                observer = observers[key] = ContainerObserver(
                    ctx.cluster, workload, 0, is_workload=ref.workload is not None)
            observer.planned_kills += 1
            plan.append((ref, _container_name(pod, params) or "", observer))
        lock_targets(ctx, spec, selection.chosen)
        kills: list[KilledContainer] = []
        timeout = spec.recovery_timeout or ctx.settings.recovery_timeout_seconds
        try:
            for observer in observers.values():
                observer.start()
            for ref, container, observer in plan:
                ctx.check()
                kill = self._kill(ctx, params, ref, container, observer)
                if kill is not None:
                    kills.append(kill)
            waiting = [o for o in observers.values() if o.kills_done]
            if waiting:
                ctx.event(EventKind.OBSERVING, f"waiting up to {timeout:g}s for "
                          f"{sum(k.killed for k in kills)} container(s) to be ready again")
            deadline = time.monotonic() + timeout
            for observer in waiting:
                observer.wait(deadline, ctx)
        finally:
            for observer in observers.values():
                observer.stop.set()
        self._report(ctx, params, list(observers.values()), kills, timeout)

    def _kill(self, ctx: RunContext, params: ContainerKillParams, ref: TargetRef,
              container: str, observer: ContainerObserver) -> KilledContainer | None:
        namespace = ref.namespace or ""
        try:
            pod: dict[str, Any] | None = ctx.cluster.get_pod(namespace, ref.name)
        except NotFound:
            pod = None
        if pod is None or pod["metadata"].get("uid") != ref.uid or is_terminating(pod):
            ctx.event(EventKind.SKIPPED,
                      f"pod {namespace}/{ref.name} was gone or terminating before "
                      "the kill", pod=ref.name)
            observer.not_killed(None)
            return None
        status = _container_status(pod, container) or {}
        before = int(status.get("restartCount") or 0)
        kill = KilledContainer(ref=ref, container=container, before=before,
                               restart_count=before)
        observer.expect(kill)
        ctx.check()
        kill.sent_at = time.time()
        try:
            # What the exec prints is never read into anything: only the exit code counts.
            code, _, _ = ctx.cluster.exec_in_pod(namespace, ref.name, container,
                                                 params.kill_command)
        except Exception as error:
            # The API server's own answer (a 403, a 404) is worth telling; anything else may
            # carry what the exec stream held, so only its type is told.
            told = str(error) if isinstance(error, ClusterError) else type(error).__name__
            kill.error = f"could not send {params.signal} to container {container} of pod " \
                         f"{namespace}/{ref.name}: {told}"
            log.warning("exec of kill in %s/%s (%s) failed: %s", namespace, ref.name,
                        container, type(error).__name__)
            observer.not_killed(kill)
            ctx.event(EventKind.KILL_FAILED, kill.error, pod=ref.name, container=container)
            return kill
        kill.exit_code = code
        if code not in (0, NO_EXIT_STATUS):
            kill.error = f"sending {params.signal} to container {container} of pod " \
                         f"{namespace}/{ref.name} failed: `kill` exited with code {code}"
            observer.not_killed(kill)
            ctx.event(EventKind.KILL_FAILED, kill.error, pod=ref.name, container=container,
                      exit_code=code)
            return kill
        observer.kill_done(kill, kill.sent_at)
        message = f"killed container {container} of pod {namespace}/{ref.name} with " \
                  f"{params.signal}"
        at = utc(kill.sent_at)
        ctx.result.changes.append(Change(target=ref, action=message, started_at=at))
        ctx.metrics.targets_affected += 1
        if ctx.metrics.injected_at is None:
            ctx.metrics.injected_at = at
        try:
            ctx.cluster.post_event(ref, "v1", "PystolChaos",
                                   f"{message} by Pystol job {ctx.job_id}")
        except Exception as error:
            log.warning("could not post PystolChaos event on %s: %s", ref.name, error)
        ctx.event(EventKind.INJECTED, message + (f" of {ref.workload}" if ref.workload else ""),
                  pod=ref.name, namespace=namespace, container=container,
                  restart_count_before=before)
        return kill

    @staticmethod
    def _report(ctx: RunContext, params: ContainerKillParams,
                observers: list[ContainerObserver], kills: list[KilledContainer],
                timeout: float) -> None:
        entries = [kill.report(params.signal, timeout) for kill in kills]
        ctx.result.output["pods"] = entries
        problems = [entry["error"] for entry in entries if entry["error"]]
        for entry in entries:
            if entry["ready_again_seconds"] is not None:
                ctx.event(EventKind.RECOVERED, f"container {entry['container']} of pod "
                          f"{entry['namespace']}/{entry['pod']} was ready again "
                          f"{entry['ready_again_seconds']:.2f}s after the kill (restarts "
                          f"{entry['restart_count_before']} -> {entry['restart_count_after']})",
                          pod=entry["pod"], recovery_seconds=entry["ready_again_seconds"])
        for observer in observers:
            if observer.error:
                problems.append(observer.error)
            if not observer.is_workload or not observer.kills_done:
                continue
            outcome = observer.result()
            ctx.result.recovery.append(outcome)
            containers_back = all(kill.settled() for kill in observer.tracked.values()
                                  if kill.killed)
            if not outcome.recovered and containers_back and not observer.error:
                problems.append(f"{outcome.workload} did not recover within {timeout:g}s "
                                f"({outcome.ready_replicas}/{outcome.desired_replicas} ready)")
        times = [r.recovery_seconds for r in ctx.result.recovery
                 if r.recovery_seconds is not None]
        if not times:
            times = [e["ready_again_seconds"] for e in entries
                     if e["ready_again_seconds"] is not None]
        ctx.metrics.recovery_seconds = max(times) if times else None
        if problems:
            raise ActionError("; ".join(problems))

