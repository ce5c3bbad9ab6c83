"""batch/v1 Jobs: run pods to completion, count successes and failures, finish.

Like the real job controller: up to `parallelism` pods run at once until
`completions` of them have succeeded (condition `SuccessCriteriaMet` then
`Complete`), or more than `backoffLimit` have failed — for restartPolicy
OnFailure, container restarts count — (`FailureTarget` then `Failed`, reason
`BackoffLimitExceeded`), or the Job outlived `activeDeadlineSeconds`
(`DeadlineExceeded`). How long a pod runs and how it exits come from its
template's `sim.pystol.org/run-seconds` and `sim.pystol.org/exit-code`
annotations (see the kubelet controller).

The defaults kube-apiserver fills in on create (completions and parallelism 1,
backoffLimit 6, a selector on `batch.kubernetes.io/controller-uid` and the
matching template labels) are filled here, on the controller's first look at
the Job: the uid they need only exists once the store has the object.

Bounds, as kube-controller-manager has them: at most 500 pods are created in one
reconcile (MaxPodCreateDeletePerSync; the Job is requeued for the rest), and a
failed pod is replaced only after the pod failure back-off, 10 s doubled with
every failure and capped at six minutes (simulated time, shortened by `--speed`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pystol_sim.controllers.manager import MAX_PODS_PER_SYNC, Controller, ControllerManager
from pystol_sim.controllers.objects import count_of, pod_is_active, pod_is_ready
from pystol_sim.controllers.pod_factory import new_pod
from pystol_sim.store import now_rfc3339

COMPONENT = "job-controller"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
DEFAULT_BACKOFF_LIMIT = 6
POD_FAILURE_BACKOFF_SECONDS = 10.0  # kube's DefaultJobPodFailureBackOff
MAX_POD_FAILURE_BACKOFF_SECONDS = 360.0  # capped at six minutes, as the Job docs say


def failure_backoff(failures: int) -> float:
    """Simulated seconds to wait before replacing a failed pod, after `failures` failures."""
    if failures <= 0:
        return 0.0
    return min(MAX_POD_FAILURE_BACKOFF_SECONDS,
               POD_FAILURE_BACKOFF_SECONDS * 2 ** min(failures - 1, 16))


def last_failure(pods: list[dict[str, Any]]) -> float | None:
    """When the latest Failed pod finished (its containers' finishedAt, else its creation)."""
    latest: float | None = None
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Failed":
            continue
        stamps = [rfc3339_unix(((cs.get("state") or {}).get("terminated") or {})
                               .get("finishedAt"))
                  for cs in status.get("containerStatuses") or () if isinstance(cs, dict)]
        known = [s for s in stamps if s is not None] or [
            s for s in (rfc3339_unix(pod["metadata"].get("creationTimestamp")),) if s is not None]
        if known and (latest is None or max(known) > latest):
            latest = max(known)
    return latest


def rfc3339_unix(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def finished_condition(job: dict[str, Any]) -> str | None:
    """"Complete" or "Failed" when the Job is over, else None."""
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def apply_defaults(job: dict[str, Any]) -> bool:
    """What kube-apiserver's Job strategy defaults and generates; True if anything changed."""
    before = repr(job.get("spec"))
    spec = job.setdefault("spec", {})
    meta = job["metadata"]
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", DEFAULT_BACKOFF_LIMIT)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    if not spec.get("manualSelector"):
        template = spec.setdefault("template", {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        for key in (CONTROLLER_UID, "controller-uid"):
            labels[key] = meta["uid"]
        for key in (JOB_NAME, "job-name"):
            labels[key] = meta["name"]
        spec["selector"] = {"matchLabels": {CONTROLLER_UID: meta["uid"]}}
    return repr(job.get("spec")) != before


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    stamp = now_rfc3339()
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": stamp, "lastTransitionTime": stamp}


class JobController(Controller):
    resource = "batch/jobs"

    def __init__(self, manager: ControllerManager) -> None:
        super().__init__(manager)
        # (ns, name) -> monotonic times of this Job's wake-up timers still pending, so a
        # Job reconciled on every pod write does not pile up one timer per reconcile.
        self._timers: dict[tuple[str, str], list[float]] = {}

    def on_start(self) -> None:
        """Timers cannot be set while a scenario loads: look at every Job once running."""
        jobs = self.manager.type("batch", "v1", "jobs")
        for key, _ in self.store.select(jobs):
            self.manager.mark(jobs, *key)

    def _wake_in(self, job: dict[str, Any], seconds: float) -> None:
        """Reconcile the Job again after `seconds` of simulated time, unless a timer due by
        then is pending already."""
        if self.manager.settling:
            return  # on_start looks at every Job once the loop runs
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        now = time.monotonic()
        due = now + max(0.0, seconds) / self.manager.speed
        pending = [d for d in self._timers.get(key, ()) if d > now]
        if any(d <= due + 0.001 for d in pending):
            self._timers[key] = pending
            return
        self._timers[key] = [*pending, due]
        self.manager.later(seconds, self.manager.type("batch", "v1", "jobs"), *key)

    def reconcile(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            self._timers.pop((meta["namespace"], meta["name"]), None)
            return
        jobs = self.manager.type("batch", "v1", "jobs")
        pods_t = self.manager.type("", "v1", "pods")
        if apply_defaults(job):
            self.store.put(jobs, job)
            return  # the write marks the Job again
        spec = job["spec"]
        status = dict(job.get("status") or {})
        pods = self.manager.owned(pods_t, job)
        active = [p for p in pods if pod_is_active(p)]
        succeeded = sum(1 for p in pods if p.get("status", {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        if spec.get("template", {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            failed += sum(cs.get("restartCount", 0) for p in pods
                          for cs in p.get("status", {}).get("containerStatuses") or ())
        # Counts only grow: the real controller tracks finished pods with a finalizer, so
        # deleting a finished pod does not undo its success or failure.
        succeeded = max(succeeded, count_of(status.get("succeeded")))
        failed = max(failed, count_of(status.get("failed")))
        finished = finished_condition(job)
        if finished is None and spec.get("suspend"):
            for pod in active:
                self.store.delete(pods_t, pod["metadata"]["namespace"], pod["metadata"]["name"])
            active = []
        elif finished is None:
            status.setdefault("startTime", now_rfc3339())
            finished = self._judge(job, status, succeeded, failed)
            if finished is not None:
                for pod in active:
                    self.store.delete(pods_t, pod["metadata"]["namespace"],
                                      pod["metadata"]["name"])
                active = []
            else:
                active += self._start_pods(job, pods, len(active), succeeded, failed)
        if finished is not None:
            self._timers.pop((meta["namespace"], meta["name"]), None)
        status.update({"active": len(active), "succeeded": succeeded, "failed": failed,
                       "ready": sum(1 for p in active if pod_is_ready(p)), "terminating": 0,
                       "uncountedTerminatedPods": {}})
        for key in ("active", "succeeded", "failed"):
            if not status[key]:
                status.pop(key)
        if status != (job.get("status") or {}):
            fresh = self.store.find(jobs, meta["namespace"], meta["name"])
            if fresh is not None:
                fresh["status"] = status
                self.store.put(jobs, fresh)

    def _judge(self, job: dict[str, Any], status: dict[str, Any], succeeded: int,
               failed: int) -> str | None:
        """Add the finishing conditions when the Job has succeeded or failed for good."""
        spec = job["spec"]
        completions = spec.get("completions")
        conditions = list(status.get("conditions") or ())
        result: str | None = None
        deadline = spec.get("activeDeadlineSeconds")
        started = rfc3339_unix(status.get("startTime")) or time.time()
        if failed > count_of(spec.get("backoffLimit"), DEFAULT_BACKOFF_LIMIT):
            reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            result = "Failed"
        elif deadline is not None and (time.time() - started) * self.manager.speed >= float(
                deadline):
            reason, message = "DeadlineExceeded", "Job was active longer than specified deadline"
            result = "Failed"
        elif (completions is not None and succeeded >= int(completions)) or (
                completions is None and succeeded > 0):
            reason, message = "CompletionsReached", "Reached expected number of succeeded pods"
            result = "Complete"
        else:
            if deadline is not None:
                remaining = float(deadline) - (time.time() - started) * self.manager.speed
                self._wake_in(job, remaining)
            return None
        if result == "Failed":
            conditions += [_condition("FailureTarget", reason, message),
                           _condition("Failed", reason, message)]
            self.manager.record_event(job, reason, message, type_="Warning",
                                      component=COMPONENT)
        else:
            conditions += [_condition("SuccessCriteriaMet", reason, message),
                           _condition("Complete", reason, message)]
            status["completionTime"] = now_rfc3339()
            self.manager.record_event(job, "Completed", "Job completed", component=COMPONENT)
        status["conditions"] = conditions
        return result

    def _start_pods(self, job: dict[str, Any], pods: list[dict[str, Any]], running: int,
                    succeeded: int, failed: int) -> list[dict[str, Any]]:
        spec = job["spec"]
        parallelism = count_of(spec.get("parallelism"), 1)
        completions = spec.get("completions")
        if completions is None:
            wanted = parallelism if succeeded == 0 else 0
        else:
            wanted = min(parallelism, int(completions) - succeeded)
        created: list[dict[str, Any]] = []
        missing = max(0, wanted - running)
        if not missing:
            return created
        if failed and not self.manager.settling:
            # Replacing a failed pod waits for the pod failure back-off (simulated seconds).
            finished_at = last_failure(pods)
            if finished_at is not None:
                waited = (time.time() - finished_at) * self.manager.speed
                remaining = failure_backoff(failed) - waited
                if remaining > 0:
                    self._wake_in(job, remaining)
                    return created
        name = job["metadata"]["name"]
        if missing > MAX_PODS_PER_SYNC:
            missing = MAX_PODS_PER_SYNC
            jobs = self.manager.type("batch", "v1", "jobs")
            self.manager.mark(jobs, job["metadata"]["namespace"], name)  # the rest next time
        for _ in range(missing):
            pod = new_pod(self.manager, job, spec.get("template") or {},
                          generate_name=f"{name}-", component=COMPONENT)
            if pod is None:
                break  # refused (quota): retried later
            created.append(pod)
            self.manager.record_event(job, "SuccessfulCreate",
                                      f"Created pod: {pod['metadata']['name']}",
                                      component=COMPONENT)
        return created
