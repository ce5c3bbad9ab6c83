"""Running one job from queued to its one terminal state.

Whatever happens inside an action, the job ends in exactly one of succeeded,
failed, aborted or cancelled, with the reason in the record: the runner is the
only place that decides, and `JobStore.finish` refuses a second decision.

It is also the only place that builds a `RunContext`: for a job it has claimed, with
the job's store, the revert journal, the target locks and the undo functions collected
by its `ActionRegistry` (so a plug-in's changes are reverted like a built-in's).
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable

from pystol_worker.actions.base import ActionError
from pystol_worker.actions.registry import ActionRegistry
from pystol_worker.core.logging_setup import job_context
from pystol_worker.core.model import JobRecord, JobStatus, utcnow
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.faults.selection import record_selection
from pystol_worker.jobs.authorization import check_grant, policy_problems
from pystol_worker.jobs.probes import run_probe
from pystol_worker.jobs.validation import JobInvalid, validate_job
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError
from pystol_worker.safety.job_context import JobAborted, RunContext
from pystol_worker.safety.revert_journal import RevertJournal
from pystol_worker.safety.target_locks import TargetLocks
from pystol_worker.store.job_store import JobNotFound, JobStore, TransitionRefused
from pystol_worker.store.metrics import KubeRequestCounter

log = logging.getLogger("pystol.worker")
LOST_WORKER_REASON = ("the worker running this job was lost; Pystol does not run a chaos job "
                      "twice")


class JobRunner:
    def __init__(self, settings: Settings, store: JobStore, registry: ActionRegistry,
                 cluster_factory: Callable[[], Cluster], policy: Policy | None = None) -> None:
        self.settings = settings
        self.policy = policy if policy is not None else Policy()
        self.store = store
        self.registry = registry
        self.cluster_factory = cluster_factory
        self.journal = RevertJournal(store.redis, settings.signing_key_bytes,
                                     settings.heartbeat_seconds, settings.is_protected)
        self.locks = TargetLocks(store.redis)
        self._cluster: Cluster | None = None
        self.kube_requests = KubeRequestCounter(store.redis)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = self.cluster_factory()
            if isinstance(self._cluster, ClusterAccess) and \
                    getattr(self._cluster, "on_request", None) is None:
                self._cluster.on_request = self.kube_requests
        return self._cluster

    def run(self, job_id: str, worker: str) -> JobStatus | None:
        with job_context(job_id):
            log.info("job %s: delivered to %s", job_id, worker)
            try:
                status = self._run(job_id, worker)
            finally:
                self.kube_requests.flush()
            log.info("job %s: %s", job_id, status.value if status else "left alone",
                     extra={"status": status.value if status else None})
            return status

    def _run(self, job_id: str, worker: str) -> JobStatus | None:
        try:
            record = self.store.claim(job_id, worker)
        except JobNotFound:
            log.warning("job %s is not in the store; dropping the task", job_id)
            return None
        except TransitionRefused:
            current = self.store.get(job_id, with_timeline=False)
            if current.status == JobStatus.RUNNING:
                # Redelivered. Either the worker that started it died (acks_late + requeue),
                # or the broker connection blipped and the job still runs elsewhere: only a
                # lapsed heartbeat tells them apart.
                return self._abort_if_lost(job_id)
            return current.status
        ctx = RunContext(settings=self.settings, cluster=self.cluster, store=self.store,
                         job_id=job_id, journal=self.journal, locks=self.locks,
                         undo_functions=self.registry.undo_registry(), policy=self.policy)

        def refresh_locks() -> None:
            self.locks.refresh(job_id, ctx.locked, self.settings.heartbeat_seconds)

        def keep_results(stored: JobRecord) -> None:
            stored.result = ctx.result
            stored.metrics = ctx.metrics
        try:
            with self.journal.heartbeat(job_id, on_beat=refresh_locks):
                status, reason, error = self._execute(record, ctx)
                # Finish while the heartbeat still beats, so that the reaper can never take
                # a job that just ended for a lost one.
                with contextlib.suppress(TransitionRefused):
                    self.store.finish(job_id, status, reason, error, change=keep_results)
        finally:
            if not self.journal.entries(job_id):
                self.locks.release(job_id, ctx.locked)
            # else: a revert failed; the targets stay locked (until the heartbeat-length
            # expiry) and the journal keeps them locked until the reaper has reverted them.
        return status

    def _abort_if_lost(self, job_id: str) -> JobStatus | None:
        """Undo what a lost worker left in the journal, then end the job aborted; leave a job
        whose heartbeat still beats alone (the reaper takes it if the beat stops)."""
        deadline = time.monotonic() + self.settings.heartbeat_seconds + 1
        while self.journal.alive(job_id):
            if time.monotonic() > deadline:
                log.warning("job %s was delivered again but still runs elsewhere", job_id)
                return None
            time.sleep(0.5)
        undone, failed = self.journal.undo_all(self.cluster, self.journal.entries(job_id),
                                               self.registry.undo_registry())
        reason = LOST_WORKER_REASON
        if undone:
            reason += f"; reverted {len(undone)} change(s) it left"
        if failed:
            reason += f"; {len(failed)} revert(s) failed and are left to the reaper"
        with contextlib.suppress(TransitionRefused):
            self.store.finish(job_id, JobStatus.ABORTED, reason)
        return JobStatus.ABORTED

    def _execute(self, record: JobRecord, ctx: RunContext
                 ) -> tuple[JobStatus, str, str | None]:
        spec = record.spec
        try:
            ctx.check()
            action, params = validate_job(spec, self.registry, self.settings)
            # Before anything reads the cluster: the record must be the job that was
            # allowed (sealed grant), and the job must meet the policy this worker runs.
            check_grant(record, action, params, self.settings.signing_key_bytes)
            problems = policy_problems(spec, action, params, self.policy, utcnow(),
                                       windows=True)
            if problems:
                return JobStatus.FAILED, "refused by the admin policy: " + "; ".join(
                    f"{p.loc}: {p.msg}" for p in problems), None
            selection = action.guarded_select(ctx, spec, params)
            record_selection(ctx, selection, f"{len(selection.chosen)} of {selection.matched} "
                             f"matching {action.target_kind.value} selected")
            if not selection.chosen:
                return JobStatus.FAILED, "no targets: nothing matched the target " + (
                    f"({'; '.join(selection.excluded)})" if selection.excluded else ""), None
            if spec.dry_run:
                ctx.result.output["would_affect"] = [ref.model_dump(mode="json",
                                                                    exclude_none=True)
                                                     for ref in selection.chosen]
                return (JobStatus.SUCCEEDED, f"dry run: would have affected "
                        f"{len(selection.chosen)} {action.target_kind.value}; nothing changed",
                        None)
            for probe in spec.probes:
                outcome = run_probe(probe, "before", ctx)
                ctx.result.probes.append(outcome)
                if not outcome.ok:
                    return (JobStatus.FAILED, f"steady state not met before injection: "
                            f"{probe.url} answered {outcome.status or outcome.error}", None)
            ctx.check()
            action.execute(ctx, spec, params, selection)
            failed = []
            for probe in spec.probes:
                outcome = run_probe(probe, "after", ctx)
                ctx.result.probes.append(outcome)
                if not outcome.ok:
                    failed.append(f"{probe.url} answered {outcome.status or outcome.error}")
            if failed:
                return JobStatus.FAILED, "steady state not met after recovery: " + \
                    "; ".join(failed), None
            return JobStatus.SUCCEEDED, self._summary(ctx), None
        except JobAborted as aborted:
            return JobStatus.ABORTED, str(aborted), None
        except JobInvalid as invalid:
            return JobStatus.FAILED, f"invalid job: {invalid}", None
        except ActionError as failure:
            return JobStatus.FAILED, str(failure), None
        except ClusterError as failure:
            return JobStatus.FAILED, f"Kubernetes API error: {failure}", None
        except Exception as failure:
            log.exception("job %s crashed", record.id)
            return (JobStatus.FAILED, f"internal error: {failure!r}",
                    traceback.format_exc(limit=20))

    @staticmethod
    def _summary(ctx: RunContext) -> str:
        text = f"{ctx.metrics.targets_affected} target(s) affected"
        if ctx.metrics.recovery_seconds is not None:
            text += f"; recovered in {ctx.metrics.recovery_seconds:.2f}s"
        return text
