"""Running one job from queued to its one terminal state.

Whatever happens inside an action, the job ends in exactly one of succeeded,
failed, aborted, cancelled or skipped, with the reason in the record: the runner is the
only place that decides, and `JobStore.finish` refuses a second decision.

The order, each step able to end the job before the next touches anything:
1. the stop signals, validation, the sealed grant (targets' and probes' namespaces) and
   the admin policy;
2. the error-budget guard (`spec.guard`): Prometheus says the service burns its budget,
   or cannot say (on_error skip) → `skipped` with the value, nothing selected;
3. selection (a dry run ends here);
4. the before-probes (sot, edge): one fails → `skipped`, nothing changed;
5. the looping probes start (`ProbeLoop`: continuous now, on-chaos at the first
   injection), the action runs (inject, hold, revert), the loop stops after the revert;
   a stop-on-failure probe ends the hold at once and the job is `aborted`;
6. the after-probes (eot, edge) on the recovered system;
7. the verdict and the score (`core.verdicts`) are stored with the status, and
   `on_finished` (the experiment engine's hook) is told.

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
from dataclasses import dataclass

from pystol_worker.actions.base import ActionError
from pystol_worker.actions.registry import ActionRegistry
from pystol_worker.core import verdicts
from pystol_worker.core.logging_setup import job_context
from pystol_worker.core.model import EventKind, JobRecord, JobStatus, Source, Verdict, utcnow
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.faults.selection import record_selection
from pystol_worker.jobs.authorization import GrantInvalid, check_grant, policy_problems
from pystol_worker.jobs.probes import failures, run_edge_probes
from pystol_worker.jobs.validation import JobInvalid, validate_job
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError
from pystol_worker.probes.evaluation import ProbeEnv
from pystol_worker.probes.guard import evaluate_guard
from pystol_worker.probes.loop import ProbeLoop
from pystol_worker.safety.job_context import JobAborted, RunContext
from pystol_worker.safety.revert_journal import RevertJournal
from pystol_worker.safety.target_locks import TargetLocks
from pystol_worker.store.job_store import JobNotFound, JobStore, TransitionRefused
from pystol_worker.store.metrics import KubeRequestCounter
from pystol_worker.store.run_signals import step_refusal

log = logging.getLogger("pystol.worker")
LOST_WORKER_REASON = ("the worker running this job was lost; Pystol does not run a chaos job "
                      "twice")


@dataclass
class Ending:
    """How `_execute` ended the job."""

    status: JobStatus
    reason: str
    error: str | None = None


class JobRunner:
    """`on_finished(record)` is called with the stored record once a job it ran has
    ended (the experiment engine advances the job's run from there); its exceptions are
    logged, never raised."""

    def __init__(self, settings: Settings, store: JobStore, registry: ActionRegistry,
                 cluster_factory: Callable[[], Cluster], policy: Policy | None = None,
                 on_finished: Callable[[JobRecord], None] | None = None) -> None:
        self.on_finished = on_finished
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
            # The heartbeat is set in the claim's own write: no instant in which the job is
            # running without one (the reaper would take it for lost).
            claimed = self.store.claim_stored(job_id, worker,
                                              also=[self.journal.beat_command(job_id)])
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
        record = claimed.record
        link = record.spec.experiment
        ctx = RunContext(settings=self.settings, cluster=self.cluster, store=self.store,
                         job_id=job_id, journal=self.journal, locks=self.locks,
                         undo_functions=self.registry.undo_registry(), policy=self.policy,
                         run_id=link.run_id if link is not None else None,
                         stored=claimed.raw)

        def refresh_locks() -> None:
            self.locks.refresh(job_id, ctx.locked, self.settings.heartbeat_seconds)

        finished: JobRecord | None = None
        try:
            with self.journal.heartbeat(job_id, on_beat=refresh_locks, beating=True) as beat:
                ending = self._execute(record, ctx)
                verdict = verdicts.job_verdict(ending.status, ctx.result.probes,
                                               ctx.stopped_by_probe)
                score = verdicts.job_score(verdict, ctx.result.probes)

                def keep_results(stored: JobRecord) -> None:
                    stored.result = ctx.result
                    stored.metrics = ctx.metrics
                    stored.verdict = verdict
                    stored.score = score
                    if link is not None:
                        stored.experiment_run_id = link.run_id
                        stored.step = link.path
                # Finish while the heartbeat key is alive (stopping its refresh leaves it for
                # a whole period), removing it in the same write as the terminal status, so
                # that the reaper can never take a job that just ended for a lost one.
                beat.stop()
                with contextlib.suppress(TransitionRefused):
                    finished = self.store.finish(
                        job_id, ending.status, ending.reason, ending.error,
                        change=keep_results, held=ctx.stored,
                        also=[self.journal.stop_beating_command(job_id)])
                    beat.ended()
        finally:
            # Nothing locked (a dry run, a job that ended before injecting): nothing to read.
            if ctx.locked and not self.journal.entries(job_id):
                self.locks.release(job_id, ctx.locked)
            # else: a revert failed; the targets stay locked (until the heartbeat-length
            # expiry) and the journal keeps them locked until the reaper has reverted them.
        if finished is not None:
            self._tell_finished(finished)
        return ending.status

    def _tell_finished(self, record: JobRecord) -> None:
        if self.on_finished is None:
            return
        try:
            self.on_finished(record)
        except Exception:
            log.exception("job %s: the on_finished hook failed", record.id)

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
        def aborted(stored: JobRecord) -> None:
            stored.verdict = Verdict.ABORTED
            stored.score = verdicts.job_score(Verdict.ABORTED, stored.result.probes)
            if stored.spec.experiment is not None:
                stored.experiment_run_id = stored.spec.experiment.run_id
                stored.step = stored.spec.experiment.path
        finished = None
        with contextlib.suppress(TransitionRefused):
            finished = self.store.finish(job_id, JobStatus.ABORTED, reason, change=aborted)
        if finished is not None:
            self._tell_finished(finished)
        return JobStatus.ABORTED

    def _execute(self, record: JobRecord, ctx: RunContext) -> Ending:
        spec = record.spec
        try:
            ctx.check()
            action, params = validate_job(spec, self.registry, self.settings)
            # Before anything reads the cluster: the record must be the job that was
            # allowed (sealed grant), and the job must meet the policy this worker runs.
            check_grant(record, action, params, self.settings.signing_key_bytes)
            if spec.experiment is not None and record.source != Source.EXPERIMENT:
                raise GrantInvalid("refused: only the experiment engine links a job to an "
                                   "experiment run (experiment)")
            if spec.experiment is not None and (refusal := step_refusal(
                    self.store.redis, spec.experiment.run_id, spec.experiment.path,
                    utcnow())) is not None:
                raise GrantInvalid(refusal)
            problems = policy_problems(spec, action, params, self.policy, utcnow(),
                                       windows=True, cluster=bool(record.grant and
                                                                  record.grant.cluster))
            if problems:
                return Ending(JobStatus.FAILED, "refused by the admin policy: " + "; ".join(
                    f"{p.loc}: {p.msg}" for p in problems))
            if spec.guard is not None:
                decision = evaluate_guard(spec.guard, ProbeEnv.of(ctx))
                ctx.result.output["guard"] = decision.output
                ctx.event(EventKind.GUARDED, decision.reason or (
                    f"error budget guard: {spec.guard.query} on {spec.guard.endpoint} = "
                    f"{decision.output.get('value')} <= max {spec.guard.max:g}"),
                    **{k: v for k, v in decision.output.items() if k != "query"})
                if not decision.start:
                    return Ending(JobStatus.SKIPPED, decision.reason or "error budget guard")
            selection = action.guarded_select(ctx, spec, params)
            record_selection(ctx, selection, f"{len(selection.chosen)} of {selection.matched} "
                             f"matching {action.target_kind.value} selected")
            if not selection.chosen:
                return Ending(JobStatus.FAILED, "no targets: nothing matched the target " + (
                    f"({'; '.join(selection.excluded)})" if selection.excluded else ""))
            if spec.dry_run:
                ctx.result.output["would_affect"] = [ref.model_dump(mode="json",
                                                                    exclude_none=True)
                                                     for ref in selection.chosen]
                return Ending(JobStatus.SUCCEEDED, f"dry run: would have affected "
                              f"{len(selection.chosen)} {action.target_kind.value}; nothing "
                              "changed")
            before = failures(run_edge_probes(spec.probes, "before", ctx))
            if before:
                return Ending(JobStatus.SKIPPED, "steady state not met before injection: "
                              + "; ".join(before))
            ctx.check()
            loop = ProbeLoop(ctx, list(spec.probes)).start()
            try:
                action.execute(ctx, spec, params, selection)
            finally:
                loop.stop()
                ctx.result.probes.extend(loop.outcomes)
                ctx.result.probe_summary.extend(loop.summaries)
            ctx.check()
            after = failures(run_edge_probes(spec.probes, "after", ctx))
            if after:
                return Ending(JobStatus.FAILED, "steady state not met after recovery: "
                              + "; ".join(after))
            during = [summary for summary in loop.summaries if summary.failed]
            summary = self._summary(ctx)
            if during:
                summary += "; probes failed during the fault: " + ", ".join(
                    f"{item.name} ({item.failed}/{item.runs})" for item in during)
            return Ending(JobStatus.SUCCEEDED, summary)
        except JobAborted as aborted:
            if ctx.stopped_by_probe and not ctx.injected.is_set() and not ctx.result.changes:
                # a probe said no before anything was changed: like a failed before-probe
                return Ending(JobStatus.SKIPPED, f"steady state not met before injection: "
                              f"{aborted}")
            return Ending(JobStatus.ABORTED, str(aborted))
        except JobInvalid as invalid:
            return Ending(JobStatus.FAILED, f"invalid job: {invalid}")
        except ActionError as failure:
            if ctx.stopped_by_probe and ctx.abort_reason:
                # the probe's stop ended the hold; the action then failed on its way out
                return Ending(JobStatus.ABORTED, f"{ctx.abort_reason}; then: {failure}")
            return Ending(JobStatus.FAILED, str(failure))
        except ClusterError as failure:
            return Ending(JobStatus.FAILED, f"Kubernetes API error: {failure}")
        except Exception as failure:
            log.exception("job %s crashed", record.id)
            return Ending(JobStatus.FAILED, f"internal error: {failure!r}",
                          traceback.format_exc(limit=20))

    @staticmethod
    def _summary(ctx: RunContext) -> str:
        text = f"{ctx.metrics.targets_affected} target(s) affected"
        if ctx.metrics.recovery_seconds is not None:
            text += f"; recovered in {ctx.metrics.recovery_seconds:.2f}s"
        return text
