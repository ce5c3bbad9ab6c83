"""A rehearsal: the experiment, run with Pystol's production code on a private copy.

Nothing here re-implements how an experiment runs. The same `SubmissionService` validates,
authorizes and queues each step's job, the same `JobRunner` runs it (selection, faults,
probes, revert journal, target locks, recovery observers), the same `ExperimentService`
and its engine decide what comes next. Only the plumbing around them is local:

- Redis is an in-process `fakeredis.FakeRedis` (with Lua, so the journal's and the
  locks' scripts run as they do on Redis): nothing of the rehearsal reaches the real
  stack's Redis, queue or workers;
- `LocalJobQueue` runs `JobRunner.run` in a thread per job instead of Celery, and
  `LocalAdvanceQueue` + `RehearsalStack.run` call `ExperimentService.advance` (and the
  sweep, for timers) instead of the `pystol.advance_experiment` task;
- a throwaway signing key seals the grants (the real key never leaves its processes);
- the admin policy is the real one (PYSTOL_POLICY_FILE: a step the policy refuses is
  refused on the copy too), minus its Prometheus endpoints (see `adapt.py`);
- the cluster is the private `pystol-sim` loaded from the snapshot (`private_stack.py`),
  sped up (`timescale.py`) — the experiment's times are divided by the speed, what is
  measured is multiplied back.

Flow (`rehearse`): adapt the experiment to the copy → start the copy → predict each action
step's targets with a dry run of its job → pick the speed from the targeted workloads'
delays and set it → scale the experiment → watch the namespaces → run it → report.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis

from pystol_worker.actions.registry import ActionRegistry, default_registry
from pystol_worker.core.access import (
    AccessDenied,
    Actor,
    ActorKind,
    Identity,
    Role,
    RoleAuthority,
)
from pystol_worker.core.experiment_model import (
    ActionStep,
    ExperimentRun,
    ExperimentSpec,
    walk,
)
from pystol_worker.core.model import (
    JobRecord,
    JobStatus,
    Source,
    TargetRef,
    WorkloadRef,
    utcnow,
)
from pystol_worker.core.policy import Policy, PrometheusPolicy, load_policy
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.service import ExperimentService
from pystol_worker.jobs.authorization import PolicyRefused
from pystol_worker.jobs.runner import JobRunner
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.jobs.validation import JobInvalid
from pystol_worker.kube.cluster_access import ClusterAccess
from pystol_worker.kube.objects import Workload, resolve_workload
from pystol_worker.rehearsal.adapt import for_the_copy
from pystol_worker.rehearsal.observe import ClusterObserver
from pystol_worker.rehearsal.private_stack import PrivateSim, private_sim
from pystol_worker.rehearsal.report import (
    PredictedStep,
    RehearsalReport,
    blast_radius,
    blocked_pods,
    budget_report,
    predicted_step,
    recovery_report,
)
from pystol_worker.rehearsal.timescale import auto_speed, scale_experiment, template_delay_seconds
from pystol_worker.store.halt import ChaosHalted, HaltSwitch
from pystol_worker.store.job_store import JobStore

log = logging.getLogger("pystol.rehearsal")
WORKER_NAME = "rehearsal"
POLL_SECONDS = 0.1
SWEEP_SECONDS = 0.5
PREDICTION_TIMEOUT_SECONDS = 120.0
#: Beyond the experiment's own (scaled) bound: the copy's API, thread start-up, slack.
RUN_MARGIN_SECONDS = 120.0
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
IDENTITY = Identity(Actor(kind=ActorKind.SETTINGS_TOKEN, name="rehearsal", role=Role.ADMIN),
                    RoleAuthority(Role.ADMIN))


class RehearsalFailed(Exception):
    """The rehearsal itself could not run (not: the experiment failed on the copy)."""


class LocalJobQueue:
    """The `JobQueue` of a rehearsal: each job runs at once in a thread of its own with
    the production `JobRunner` (a parallel group's jobs overlap, as on N worker slots)."""

    def __init__(self) -> None:
        self.runner: JobRunner | None = None
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def send(self, job_id: str) -> None:
        runner = self.runner
        if runner is None:
            raise RuntimeError("the rehearsal's job runner is not ready")
        thread = threading.Thread(target=self._run, args=(runner, job_id),
                                  name=f"rehearsal-job-{job_id}", daemon=True)
        with self._lock:
            self.threads.append(thread)
        thread.start()

    @staticmethod
    def _run(runner: JobRunner, job_id: str) -> None:
        try:
            runner.run(job_id, WORKER_NAME)
        except Exception:  # the runner records what it can; a crash must not kill us
            log.exception("rehearsal: job %s crashed", job_id)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class LocalAdvanceQueue:
    """Where `ExperimentService` sends `advance(run_id)` requests; `RehearsalStack.run`
    takes them."""

    def __init__(self) -> None:
        self.pending: queue.Queue[str] = queue.Queue()

    def send(self, run_id: str) -> None:
        self.pending.put(run_id)

    def send_later(self, run_id: str, seconds: float) -> None:
        """A delayed advance (a wait ends, a hold's cap falls): a timer, not the sweep's
        half-second pass, so a scaled wait ends on time."""
        timer = threading.Timer(max(0.0, seconds), self.send, args=(run_id,))
        timer.daemon = True
        timer.start()


def rehearsal_settings(base: Settings, kubeconfig: Path) -> Settings:
    """The caller's settings (protected namespaces, limits, recovery timeout) on the copy:
    its kubeconfig, a throwaway signing key, and a Redis URL nothing connects to."""
    return base.model_copy(update={
        "kubeconfig": str(kubeconfig),
        "signing_key": type(base.signing_key)(secrets.token_hex(32)),
        "redis_url": "redis://rehearsal.invalid:6379/0",
    })


def rehearsal_policy(policy: Policy) -> tuple[Policy, list[str]]:
    """The admin policy as it applies on the copy, and what was left out of it: its
    Prometheus endpoints (the copy has no Prometheus) and its chaos windows (a rehearsal
    changes nothing real, so it runs now; a job deferred to the next window would never
    run in it). Everything else (allowed actions, images, caps) refuses on the copy what
    it refuses on the cluster."""
    notes = []
    if policy.windows or policy.excluded_dates:
        notes.append("the admin policy's chaos windows and excluded dates were not applied "
                     "(the rehearsal runs now, on a copy); the real run is bound by them")
    return policy.model_copy(update={
        "prometheus": PrometheusPolicy(max_body_bytes=policy.prometheus.max_body_bytes),
        "windows": [], "excluded_dates": []}), notes


@dataclass
class RehearsalStack:
    """The production job and experiment machinery on fakeredis and the private sim."""

    settings: Settings
    policy: Policy
    registry: ActionRegistry = field(default_factory=default_registry)
    redis: Any = field(default_factory=lambda: fakeredis.FakeRedis())
    jobs: LocalJobQueue = field(default_factory=LocalJobQueue)
    advances: LocalAdvanceQueue = field(default_factory=LocalAdvanceQueue)

    def __post_init__(self) -> None:
        self.store = JobStore(self.redis, retention_seconds=self.settings.job_retention_seconds)
        self.cluster = ClusterAccess.from_settings(self.settings)
        self.submission = SubmissionService(self.store, self.jobs, self.registry,
                                            self.settings, HaltSwitch(self.redis),
                                            policy=self.policy)
        self.experiments = ExperimentService(self.redis, self.settings, self.policy,
                                             self.submission, self.advances.send,
                                             send_advance_later=self.advances.send_later)
        self.runner = JobRunner(self.settings, self.store, self.registry,
                                lambda: self.cluster, policy=self.policy,
                                on_finished=self.experiments.job_finished)
        self.jobs.runner = self.runner

    # -- prediction ----------------------------------------------------------------------

    def predict(self, spec: ExperimentSpec) -> list[PredictedStep]:
        """Each action step's job as a dry run on the copy, all at once (nothing changes):
        what it would select now. Steps later in a serial group are predicted on the
        cluster as it is before the experiment, as a preview is."""
        steps = [(path, step) for path, step in walk(spec.method, "method")
                 if isinstance(step, ActionStep)]
        steps += [(f"rollbacks[{i}]", step) for i, step in enumerate(spec.rollbacks)
                  if isinstance(step, ActionStep)]
        job_ids: dict[str, str] = {}
        refusals: dict[str, str] = {}
        for path, step in steps:
            job = step.job.model_copy(update={"dry_run": True, "probes": [], "guard": None})
            try:
                record, _ = self.submission.submit(job, Source.API, IDENTITY)
            except Exception as error:  # refused: the real run would be refused too
                refusals[path] = f"{type(error).__name__}: {error}"
            else:
                job_ids[path] = record.id
        self._wait_for_jobs(list(job_ids.values()), PREDICTION_TIMEOUT_SECONDS)
        desired: dict[tuple[str, str, str], int] = {}
        workloads: dict[tuple[str, str, str], Workload | None] = {}
        predicted = []
        for path, step in steps:
            if path not in job_ids:
                predicted.append(PredictedStep(path=path, name=step.name,
                                               action=step.job.action, error=refusals[path]))
                continue
            record = self.store.get(job_ids[path])
            affected = self._affected(record.targets, workloads)
            for ref in affected:
                if ref.workload is not None:
                    key = (ref.workload.kind, ref.workload.namespace, ref.workload.name)
                    if key not in desired:
                        desired[key] = self._desired(key)
            predicted.append(predicted_step(path, step.name, record, desired, affected))
        return predicted

    def _affected(self, refs: list[TargetRef],
                  cache: dict[tuple[str, str, str], Workload | None]) -> list[TargetRef]:
        """What the chosen targets mean per workload: a chosen pod with its workload (a
        selection names pods; the report counts per workload, as the real run's changes
        do), a chosen workload itself, and for a chosen node every pod on it (what a
        drain or a node fault reaches)."""
        found = []
        for ref in refs:
            if ref.workload is not None:
                found.append(ref)
            elif ref.kind == "Pod" and ref.namespace:
                found.append(self._pod_with_workload(ref, None, cache))
            elif ref.kind in WORKLOAD_KINDS and ref.namespace:
                found.append(ref.model_copy(update={"workload": WorkloadRef(
                    kind=ref.kind, namespace=ref.namespace, name=ref.name)}))
            elif ref.kind == "Node":
                try:
                    pods = self.cluster.list_all_pods(f"spec.nodeName={ref.name}")
                except Exception:
                    continue
                for pod in pods:
                    meta = pod.get("metadata") or {}
                    found.append(self._pod_with_workload(
                        TargetRef(kind="Pod", namespace=meta.get("namespace"),
                                  name=meta.get("name", ""), node=ref.name), pod, cache))
        return found

    def _pod_with_workload(self, ref: TargetRef, pod: dict[str, Any] | None,
                           cache: dict[tuple[str, str, str], Workload | None]) -> TargetRef:
        try:
            if pod is None:
                pod = self.cluster.get_pod(ref.namespace or "", ref.name)
            workload = resolve_workload(self.cluster, pod, cache)
        except Exception:  # gone since, or unreadable: counted under no workload
            return ref
        return ref if workload is None else ref.model_copy(update={"workload": workload.ref})

    def _desired(self, key: tuple[str, str, str]) -> int:
        kind, namespace, name = key
        try:
            workload = self.cluster.get_workload(kind, namespace, name)
        except Exception:
            return 0
        if kind == "DaemonSet":
            return int((workload.get("status") or {}).get("desiredNumberScheduled", 0))
        return int((workload.get("spec") or {}).get("replicas", 1))

    def _wait_for_jobs(self, job_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.store.get(job_id, with_timeline=False).status.terminal
                   for job_id in job_ids):
                return
            time.sleep(POLL_SECONDS)
        raise RehearsalFailed(f"the dry runs did not end within {timeout:g}s")

    def targeted_delays(self, predicted: list[PredictedStep]) -> list[float]:
        """Start + ready seconds of every workload a step would hit."""
        delays = []
        seen: set[tuple[str, str, str]] = set()
        for step in predicted:
            for item in step.workloads:
                key = (item.workload.kind, item.workload.namespace, item.workload.name)
                if key in seen:
                    continue
                seen.add(key)
                try:
                    workload = self.cluster.get_workload(*key)
                except Exception:
                    continue
                delays.append(template_delay_seconds(workload))
        return delays

    # -- the run -------------------------------------------------------------------------

    def run(self, spec: ExperimentSpec, timeout: float) -> ExperimentRun:
        """Start the experiment and drive it to its end: advances as the engine asks for
        them, the sweep for its timers."""
        try:
            run = self.experiments.start(spec, Source.API, IDENTITY)
        except (JobInvalid, AccessDenied, PolicyRefused, ChaosHalted) as error:
            # What the real run would meet too (the policy is the real one): say so.
            raise RehearsalFailed(f"the experiment was refused: {error}") from error
        deadline = time.monotonic() + timeout
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while True:
            try:
                run_id = self.advances.pending.get(timeout=POLL_SECONDS)
            except queue.Empty:
                run_id = None
            if run_id is not None:
                self.experiments.advance(run_id)
            if time.monotonic() >= next_sweep:
                self.experiments.sweep()
                next_sweep = time.monotonic() + SWEEP_SECONDS
            current = self.experiments.run(run.id)
            if current.status.terminal and self.advances.pending.empty():
                return current
            if time.monotonic() > deadline:
                with contextlib.suppress(Exception):
                    self.experiments.cancel(run.id, IDENTITY, "the rehearsal ran past its "
                                                              "time limit")
                raise RehearsalFailed(f"the experiment did not end on the copy within "
                                      f"{timeout:.0f}s")

    def step_records(self, run: ExperimentRun) -> list[tuple[str, JobRecord]]:
        found = []
        for step in [*run.steps, *run.rollbacks]:
            if step.job_id:
                with contextlib.suppress(Exception):
                    found.append((step.path, self.store.get(step.job_id)))
        return found


def _workload_of_targets(predicted: list[PredictedStep]) -> list[Any]:
    return [item.workload for step in predicted for item in step.workloads]


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="pystol-rehearsal-") as tmp:
        yield Path(tmp)


def rehearse(spec: ExperimentSpec, snapshot: Path, *, speed: float | None = None,
             settings: Settings | None = None, policy: Policy | None = None,
             workdir: Path | None = None,
             progress: Callable[[str], None] | None = None) -> RehearsalReport:
    """Rehearse `spec` on a private copy loaded from `snapshot`; see the module docstring.
    `speed` None: `auto`. Raises RehearsalFailed (or PrivateSimError) when the rehearsal
    itself cannot run; an experiment that fails on the copy is a report with its verdict."""
    say = progress or (lambda text: None)
    base = settings if settings is not None else Settings()
    real_policy = policy if policy is not None else load_policy(base.policy_file)
    report = RehearsalReport(experiment=spec.name, snapshot=str(snapshot), speed=1.0,
                             started_at=utcnow())
    adapted, report.not_rehearsed = for_the_copy(spec)
    with _workdir(workdir) as where:
        say(f"loading {snapshot} into a private simulated cluster")
        with private_sim(snapshot, where / "sim") as sim:
            copy_policy, policy_notes = rehearsal_policy(real_policy)
            stack = RehearsalStack(rehearsal_settings(base, sim.kubeconfig), copy_policy)
            try:
                _rehearse(stack, sim, adapted, speed, report, say)
                report.notes = policy_notes + report.notes
            finally:
                stack.jobs.join(10.0)
    report.ended_at = utcnow()
    return report


def _rehearse(stack: RehearsalStack, sim: PrivateSim, spec: ExperimentSpec,
              speed: float | None, report: RehearsalReport, say: Callable[[str], None]) -> None:
    say("predicting each step's targets (dry runs)")
    report.predicted = stack.predict(spec)
    chosen_speed = speed if speed is not None else auto_speed(
        stack.targeted_delays(report.predicted))
    report.speed = sim.set_speed(chosen_speed)
    scaled, report.notes = scale_experiment(spec, report.speed,
                                            stack.settings.recovery_timeout_seconds)
    # The experiment's namespaces, and those of what a node-level step reaches.
    namespaces = set(scaled.namespaces()) | {item.workload.namespace
                                             for step in report.predicted
                                             for item in step.workloads}
    observer = ClusterObserver(stack.cluster, sorted(namespaces))
    observer.start()
    try:
        say(f"running {spec.name} on the copy at {report.speed:g}x")
        bound = scaled.bound_seconds(stack.settings.recovery_timeout_seconds / report.speed)
        run = stack.run(scaled, bound + RUN_MARGIN_SECONDS)
    finally:
        observer.stop()
    records = stack.step_records(run)
    report.run_id = run.id
    report.verdict, report.score, report.reason = run.verdict, run.score, run.reason
    report.recovery = recovery_report(records, report.speed)
    report.blast_radius = blast_radius(observer.workload_states(),
                                       _workload_of_targets(report.predicted))
    report.budgets = budget_report(observer.budget_states(),
                                   blocked_pods(record for _, record in records))
    report.notes += observer.errors
    aborted = [f"{path}: {record.reason}" for path, record in records
               if record.status == JobStatus.ABORTED and record.reason]
    report.notes += aborted[:10]

